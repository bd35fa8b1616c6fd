"""The numbers behind the tables, figures and the claims report, on small runs tables with known answers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from vptft import claims, figures, report
from vptft.splits import _scaling, prototype_order
from vptft.tasks import get_task

TASKS = {
    "source": "natural",
    "newshapes_src": "natural",
    "newshapes_sketch": "specialized",
    "count_src": "structured",
    "count_sketch": "structured",
}


def _runs(values: dict, family="vtab1k", regime="vtab1k", **extra) -> pd.DataFrame:
    """A runs table from {(task, strategy): [top-1 per seed]}."""
    rows = []
    for (task, strategy), tops in values.items():
        for seed, top1 in enumerate(tops):
            rows.append(
                {
                    "family": family,
                    "task": task,
                    "group": TASKS[task],
                    "domain": get_task(task).domain,
                    "task_disparity": get_task(task).task_disparity,
                    "regime": regime,
                    **report.regime_setting(regime, 160),
                    "strategy": strategy,
                    "seed": seed,
                    "test_top1": top1,
                    "tuned_pct": 100.0 if strategy == "full" else 0.3,
                    "task_params": 10,
                    "backbone_params": 10,
                    "prompt_length": 5 if strategy == "vpt_deep" else None,
                    "capped": False,
                    "capped_to": None,
                    **extra,
                }
            )
    return pd.DataFrame(rows)


def test_table_means_spread_and_wins_from_the_runs_table():
    runs = _runs(
        {
            ("source", "full"): [40, 50],
            ("source", "vpt_deep"): [60, 62],
            ("newshapes_src", "full"): [70, 70],
            ("newshapes_src", "vpt_deep"): [65, 67],
        }
    )
    table, spread = report.study_table(
        runs, "vtab1k", ["natural"], ["source", "newshapes_src"], ["vpt_deep", "full"]
    )
    assert list(table.index) == ["full", "vpt_deep"]  # the study's order, whatever the config order
    assert table.loc["full", "source"] == 45 and table.loc["vpt_deep", "newshapes_src"] == 66
    assert spread.loc["full", "source"] == 5  # population std over seeds
    assert table.loc["vpt_deep", "mean_natural"] == pytest.approx((61 + 66) / 2)
    assert table.loc["vpt_deep", "wins_natural"] == 1 and pd.isna(table.loc["full", "wins_natural"])
    assert table.loc["full", "tuned_pct"] == 100 and (table.seeds == 2).all()


def test_one_seed_has_no_spread():
    runs = _runs({("source", "full"): [40], ("source", "vpt_deep"): [60]})
    _, spread = report.study_table(runs, "vtab1k", ["natural"], ["source"], ["full", "vpt_deep"])
    assert spread["source"].isna().all()  # an empty cell, not a spread of 0.0


def test_scaling_table_has_a_row_per_size_and_lists_capped_tasks():
    small = _runs({("count_src", "full"): [20], ("count_src", "vpt_deep"): [30]}, "scaling", "scale40")
    large = _runs({("count_src", "full"): [60], ("count_src", "vpt_deep"): [50]}, "scaling", "scale800")
    large["capped"], large["capped_to"] = True, 640
    table, _ = report.study_table(
        pd.concat([small, large]), "scaling", ["structured"], ["count_src"], ["full", "vpt_deep"]
    )
    assert list(table.index) == [(40, "full"), (40, "vpt_deep"), (800, "full"), (800, "vpt_deep")]
    assert (
        table.loc[(40, "vpt_deep"), "wins_structured"] == 1
        and table.loc[(800, "vpt_deep"), "wins_structured"] == 0
    )
    assert table.loc[(800, "full"), "capped"] == "count_src:640" and table.loc[(40, "full"), "capped"] == ""


def test_fewshot_random_draws_are_averaged_and_their_spread_is_across_draws():
    draws = [_runs({("source", "full"): [10, 10]}, "fewshot", f"fewshot5_draw{d}") for d in range(2)]
    draws[1]["test_top1"] = 30
    proto = _runs({("source", "full"): [50, 52]}, "fewshot", "fewshot5_prototype")
    table, spread = report.study_table(
        pd.concat([*draws, proto]), "fewshot", ["natural"], ["source"], ["full"]
    )
    assert (
        table.loc[(5, "random", "full"), "source"] == 20 and spread.loc[(5, "random", "full"), "source"] == 10
    )
    assert (
        table.loc[(5, "prototype", "full"), "source"] == 51
        and spread.loc[(5, "prototype", "full"), "source"] == 1
    )
    assert table.loc[(5, "random", "full"), "draws"] == 2


def test_prompt_length_table_reads_the_selected_length():
    runs = _runs({("source", "vpt_deep"): [1, 2]})
    table, _ = report.study_table(
        runs, "vtab1k", ["natural"], ["source"], ["vpt_deep"], metric="prompt_length"
    )
    assert table.loc["vpt_deep", "source"] == 5 and "wins_natural" not in table.columns


def test_scaling_sizes_a_task_lacks_are_capped_at_the_ratio_and_marked():
    task = get_task("source")
    split = _scaling(task, {"train": 1000, "test": 1000}, 1600, 400, 4, 0)
    assert split["capped"] == {"requested": [1600, 400], "available": 1000, "used": [800, 200]}
    assert sum(map(len, split["train"].values())) == 800 and sum(map(len, split["val"].values())) == 200
    assert _scaling(task, {"train": 1000, "test": 1000}, 400, 100, 4, 0)["capped"] is None


def test_prototype_selection_picks_the_planted_central_image():
    """Per class, four records at symmetric offsets around a planted record: the class mean is the planted one."""
    rng = np.random.default_rng(0)
    pool, labels, features = [], [], []
    for label, centre, planted_at in ((0, 0.0, 3), (1, 100.0, 1)):
        a, b = rng.normal(size=4) * 5, rng.normal(size=4) * 5
        offsets = [a, -a, b, -b]
        offsets.insert(planted_at, np.zeros(4))
        for offset in offsets:
            pool.append(("train", len(pool)))
            labels.append(label)
            features.append(centre + offset)
    order = prototype_order(pool, {"train": np.array(labels)}, np.array(features), 2)
    first = {label: next(r for r in order if labels[r[1]] == label) for label in (0, 1)}
    assert first == {0: ("train", 3), 1: ("train", 6)}


def test_winner_colouring_of_figure3():
    table = pd.DataFrame(
        {"winner": ["FT", "VPT", "VPT"], "task_disparity": ["low", "high", "low"]}, index=["a", "b", "c"]
    )
    assert figures.bar_styles(table) == [
        (figures.color("full"), None),
        (figures.color("vpt_deep"), "//"),
        (figures.color("vpt_deep"), None),
    ]
    runs = _runs(
        {
            ("source", "full"): [50],
            ("source", "vpt_deep"): [40],
            ("count_src", "full"): [20],
            ("count_src", "vpt_deep"): [30],
        }
    )
    assert figures.winners(runs).winner.to_dict() == {"count_src": "VPT", "source": "FT"}


def _fid(values: dict) -> pd.DataFrame:
    return pd.DataFrame(
        {"fid_mean": values, "task_disparity": {t: get_task(t).task_disparity for t in values}}
    )


def test_claims_report_says_not_supported_where_ft_wins_everywhere():
    values = {}
    for t in TASKS:
        values[(t, "full")] = [80.0, 81.0, 79.5]
        values[(t, "vpt_deep")] = [60.0, 61.0, 59.0]
        values[(t, "mixed")] = [50.0, 51.0, 49.0]
        values[(t, "ft_then_pt")] = [55.0, 56.0, 54.0]
    vtab = _runs(values)
    fid = _fid(
        {"source": 1.0, "newshapes_src": 2.0, "newshapes_sketch": 9.0, "count_src": 3.0, "count_sketch": 8.0}
    )
    result = claims.evaluate({"vtab1k": vtab}, fid)
    c1 = result[result.claim == "C1"]
    vpt_expected = c1[c1.expected == "VPT > FT"]
    assert len(vpt_expected) and (vpt_expected.status == claims.NOT_SUPPORTED).all()
    assert (c1[c1.expected == "FT > VPT"].status == claims.SUPPORTED).all()  # FT does win there
    assert (c1.significant_tasks > 0).all()  # Welch over 3 seeds sees a 20-point gap
    assert (result[result.claim == "C3"].status == claims.SUPPORTED).all()  # neither beats VPT
    assert result[result.claim.isin(["C2", "C4"])].status.eq(claims.NO_DATA).all()
    md = claims.markdown(result, "mini", "mini_vit", 0.05)
    assert "not supported" in md and "no data" in md


def test_claims_report_supports_a_planted_vpt_win_and_the_scaling_crossover():
    vtab = _runs(
        {
            (t, s): ([70.0, 71.0] if s == "vpt_deep" else [60.0, 61.0])
            for t in TASKS
            for s in ("full", "vpt_deep")
        }
    )
    fid = _fid(
        {"source": 1.0, "newshapes_src": 2.0, "newshapes_sketch": 9.0, "count_src": 3.0, "count_sketch": 8.0}
    )
    small = _runs(
        {(t, s): ([50.0] if s == "vpt_deep" else [40.0]) for t in TASKS for s in ("full", "vpt_deep")},
        "scaling",
        "scale40",
    )
    large = _runs(
        {(t, s): ([60.0] if s == "vpt_deep" else [70.0]) for t in TASKS for s in ("full", "vpt_deep")},
        "scaling",
        "scale800",
    )
    result = claims.evaluate({"vtab1k": vtab, "scaling": pd.concat([small, large])}, fid)
    c2 = result[result.claim == "C2"].iloc[0]
    assert c2.status == claims.SUPPORTED and c2.statistic > 0.8
    c1 = result[result.claim == "C1"]
    assert (c1[c1.expected == "VPT > FT"].status == claims.SUPPORTED).all()


def _metrics_file(directory, task, strategy, seed, top1) -> str:
    path = directory / f"{'x' * 60}_{task}_{strategy}_{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "task": task,
                "regime": "vtab1k",
                "strategy": strategy,
                "seed": seed,
                "hparams": {"lr": 0.1, "wd": 0.0},
                "test_top1": top1,
                "test_loss": 1.0,
                "train_loss": 0.5,
                "tuned_pct": 1.0,
                "task_params": 5,
                "backbone_params": 100,
                "epochs": 3,
                "batch_size": 8,
                "n_train": 10,
                "provenance": {"config_hash": "h"},
            }
        )
    )
    return str(path)


def test_a_table_over_more_runs_than_one_argument_can_hold(tmp_path):
    """~1400 runs whose paths together exceed Linux's 128 KiB per argument: collected by the CLI (one argument
    per path) and tabulated from the runs table (the table's spec stays small)."""
    paths = [
        _metrics_file(tmp_path, "source", strategy, seed, 50.0 + (strategy == "vpt_deep"))
        for strategy in ("full", "vpt_deep")
        for seed in range(700)
    ]
    assert len(json.dumps(paths)) > 128 * 1024
    out = tmp_path / "collected.csv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vptft",
            "collect",
            "--spec",
            json.dumps({"family": "vtab1k"}),
            "--metrics",
            *paths,
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    spec = {
        "table": "table1",
        "family": "vtab1k",
        "groups": ["natural"],
        "tasks": ["source"],
        "strategies": ["full", "vpt_deep"],
        "metric": "top1",
        "runs": [str(out)],
        "out_csv": str(tmp_path / "table1.csv"),
    }
    assert len(json.dumps(spec)) < 1024
    table, _, runs = report.make_table(spec)
    assert len(runs) == 1400 and table.loc["vpt_deep", "source"] == 51 and table.loc["full", "seeds"] == 700


def test_paper_vs_reproduced_matches_cells_by_strategy_task_and_size():
    from vptft import published

    table1 = pd.DataFrame(
        {
            "cifar100": [60.0, 80.0],
            "mean_natural": [70.0, 75.0],
            "wins_natural": [pd.NA, 1],
            "tuned_pct": [100.0, 0.5],
        },
        index=pd.Index(["full", "vpt_deep"], name="strategy"),
    )
    vs = published.vs_paper("table1", table1, "vit_b16_in21k").set_index(["strategy", "task"])
    assert vs.loc[("full", "cifar100"), "published"] == 64.5  # Han et al. Table 1
    assert vs.loc[("full", "cifar100"), "delta"] == pytest.approx(60.0 - 64.5)
    assert vs.loc[("vpt_deep", "mean_natural"), "published"] == pytest.approx(79.53)
    assert not any(t.startswith(("wins", "tuned")) for _, t in vs.index)
    table5 = pd.DataFrame(
        {"cifar100": [40.0, 70.0]},
        index=pd.MultiIndex.from_tuples([(400, "full"), (400, "vpt_deep")], names=["size", "strategy"]),
    )
    vs5 = published.vs_paper("table5", table5, "vit_b16_in21k").set_index(["size", "strategy"])
    assert vs5.loc[(400, "full"), "published"] == 51.1 and vs5.loc[(400, "vpt_deep"), "published"] == 70.6
    vpt = published.vs_paper("vpt_table1", table1, "vit_b16_in21k").set_index(["strategy", "task"])
    assert vpt.loc[("full", "mean_natural"), "published"] == 75.88  # Jia et al. Table 1, VTAB natural
