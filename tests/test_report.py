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
from vptft.tasks import TASKS as TASK_REGISTRY
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


FID = {"source": 1.0, "newshapes_src": 2.0, "newshapes_sketch": 9.0, "count_src": 3.0, "count_sketch": 8.0}


def test_claims_where_ft_wins_everywhere_by_far_more_than_seed_noise():
    values = {}
    for t in TASKS:
        values[(t, "full")] = [80.0, 81.0, 79.5]
        values[(t, "vpt_deep")] = [60.0, 61.0, 59.0]
        values[(t, "mixed")] = [50.0, 51.0, 49.0]
        values[(t, "ft_then_pt")] = [55.0, 56.0, 54.0]
    result = claims.evaluate({"vtab1k": _runs(values)}, _fid(FID))
    c1 = result[result.claim == "C1"]
    assert (c1[c1.expected == "VPT > FT"].status == claims.CONTRADICTED).all()  # FT ahead, significantly
    assert (c1[c1.expected == "FT > VPT"].status == claims.SUPPORTED).all()
    assert (c1.seeds == 3).all() and (c1.test == "Welch over seeds, tasks as strata").all()
    c3 = result[result.claim == "C3"]
    # Mixed below VPT on all 5 tasks: the signed-rank test cannot reach 0.05 with 5 tasks, and says so
    assert (c3.status == claims.HOLDS).all() and c3.would_change.str.contains("smallest p").all()
    assert result[result.claim.isin(["C2", "C4"])].status.str.startswith(claims.NO_DATA).all()
    md = claims.markdown(result, "mini", "mini_vit", 0.05)
    assert "contradicted" in md and "no data" in md and "tasks x 3 seeds" in md


def test_one_seed_leaves_the_seed_tests_untested_and_no_spread():
    values = {(t, s): [70.0 if s == "vpt_deep" else 60.0] for t in TASKS for s in ("full", "vpt_deep")}
    result = claims.evaluate({"vtab1k": _runs(values)}, _fid(FID))
    c1 = result[result.claim == "C1"]
    assert (c1.status == claims.UNTESTED_ONE_SEED).all() and c1.p_value.isna().all()
    assert c1.seed_std.isna().all()  # no spread is measured from one seed (not 0.0)
    assert c1.would_change.str.contains(">= 2 seeds").all()


def test_a_direction_needs_the_mean_and_the_task_count_to_agree():
    # VPT wins 2 of 3 source-like tasks by a hair but loses the third by more: mean VPT - FT < 0
    values = {
        ("source", "vpt_deep"): [50.1, 50.2, 50.0],
        ("source", "full"): [50.0, 50.1, 49.9],
        ("newshapes_src", "vpt_deep"): [40.1, 40.2, 40.0],
        ("newshapes_src", "full"): [40.0, 40.1, 39.9],
        ("newshapes_sketch", "vpt_deep"): [29.0, 29.1, 28.9],
        ("newshapes_sketch", "full"): [30.5, 30.6, 30.4],
    }
    fid = _fid({"source": 1.0, "newshapes_src": 2.0, "newshapes_sketch": 3.0})
    fid["fid_mean"] = 1.0  # one quadrant: all three tasks low FID
    row = claims.evaluate({"vtab1k": _runs(values)}, fid).query("claim == 'C1'").iloc[0]
    assert row.observed.startswith("VPT wins 2/3 tasks") and row.mean_diff < 0
    assert row.status == claims.SPLIT and row.p_value < 0.05  # significant, yet no direction to support
    assert claims.direction(0.0, 1, 2) == 0 and claims.status(0, 0.9, 0.05) == claims.SPLIT  # a tie


def test_a_planted_vpt_win_and_the_scaling_crossover_are_supported():
    vtab = _runs(
        {
            (t, s): ([70.0, 71.0] if s == "vpt_deep" else [60.0, 61.0])
            for t in TASKS
            for s in ("full", "vpt_deep")
        }
    )

    def sized(size, ft, vpt):
        values = {(t, s): (vpt if s == "vpt_deep" else ft) for t in TASKS for s in ("full", "vpt_deep")}
        return _runs(values, "scaling", f"scale{size}")

    two_sizes = pd.concat([sized(40, [40.0, 41.0], [50.0, 51.0]), sized(800, [70.0, 71.0], [60.0, 61.0])])
    result = claims.evaluate({"vtab1k": vtab, "scaling": two_sizes}, _fid(FID))
    c2 = result[result.claim == "C2"].iloc[0]
    assert c2.status == claims.SUPPORTED and c2.mean_diff == pytest.approx(20.0)  # +10 - (-10) on every task
    assert "2 sizes: no rank trend" in c2.observed  # a Spearman over two sizes says nothing
    three = pd.concat([two_sizes, sized(160, [55.0, 56.0], [55.0, 56.0])])
    c2 = claims.evaluate({"vtab1k": vtab, "scaling": three}, _fid(FID)).query("claim == 'C2'").iloc[0]
    assert "Spearman(size, FT - VPT) = 1.00 over 15 task-sizes" in c2.observed
    c1 = result[result.claim == "C1"]
    assert (c1[c1.expected == "VPT > FT"].status == claims.SUPPORTED).all()
    assert (c1[c1.expected == "FT > VPT"].status == claims.CONTRADICTED).all()


def test_c5_says_how_many_tasks_it_needs():
    values = {(t, s): [60.0 + (FID[t] if s == "full" else 0.0)] for t in TASKS for s in ("full", "vpt_deep")}
    one_task = {k: v for k, v in values.items() if k[0] in ("source", "count_src")}
    c5 = claims.evaluate({"vtab1k": _runs(one_task)}, _fid(FID)).query("claim == 'C5'").iloc[0]
    assert c5.status == "untested (1 task(s): a rank correlation needs at least 3)" and c5.n_tasks == 1
    c5 = claims.evaluate({"vtab1k": _runs(values)}, _fid(FID)).query("claim == 'C5'").iloc[0]
    # 3 low-disparity tasks, FT - VPT ordered exactly as FID: rho = 1, exact p = 2/3! > alpha
    assert c5.statistic == pytest.approx(1.0) and c5.p_value == pytest.approx(2 / 6)
    assert c5.status == claims.HOLDS and "smallest p this test can reach is 0.333" in c5.would_change


def test_the_tests_against_scipy_and_exhaustive_counts():
    from scipy import stats

    a, b = np.array([70.0, 71.5, 69.0]), np.array([60.0, 62.0, 61.0, 59.5])
    t, p = claims.stratified_welch([[(1.0, a), (-1.0, b)]])  # one stratum: Welch's t-test itself
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert np.isnan(claims.stratified_welch([[(1.0, a), (-1.0, b[:1])]])[1])  # one seed: no test
    rho, p = claims.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert rho == pytest.approx(0.8) and p == pytest.approx(0.1333, abs=1e-3)  # exact: 16 of 120 orderings
    assert claims.wilcoxon_floor(5) == pytest.approx(0.0625) and claims.wilcoxon_floor(6) < 0.05
    assert claims.wilcoxon(np.zeros(4)) == 1.0


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
    # our natural mean rests on cifar100 alone: compared with the paper's cifar100, not its 7-task mean (79.53)
    assert vs.loc[("vpt_deep", "mean_natural"), "published"] == vs.loc[("vpt_deep", "cifar100"), "published"]
    assert vs.loc[("vpt_deep", "mean_natural"), "compared"].startswith("partial: mean of 1 of 7 natural")
    assert not any(t.startswith(("wins", "tuned")) for _, t in vs.index)
    table5 = pd.DataFrame(
        {"cifar100": [40.0, 70.0]},
        index=pd.MultiIndex.from_tuples([(400, "full"), (400, "vpt_deep")], names=["size", "strategy"]),
    )
    vs5 = published.vs_paper("table5", table5, "vit_b16_in21k").set_index(["size", "strategy"])
    assert vs5.loc[(400, "full"), "published"] == 51.1 and vs5.loc[(400, "vpt_deep"), "published"] == 70.6
    vpt = published.vs_paper("vpt_table1", table1, "vit_b16_in21k").set_index(["strategy", "task"])
    assert vpt.loc[("full", "mean_natural"), "published"] == 68.9  # Jia et al. Table 13's cifar100 alone
    natural = [
        t
        for t in TASK_REGISTRY
        if TASK_REGISTRY[t].benchmark == "vtab" and TASK_REGISTRY[t].group == "natural"
    ]
    whole = published.vs_paper("vpt_table1", table1, "vit_b16_in21k", tasks=natural).set_index(
        ["strategy", "task"]
    )
    assert whole.loc[("full", "mean_natural"), "published"] == 75.88  # all 7 tasks: Jia et al. Table 1


def test_vpt_table13_is_compared_per_task_with_variants_matched_to_the_papers_rows():
    """vpt_table13_vs_paper.csv: each task cell against the VPT paper's Table 13, Mlp-k / Adapter-r rows found by
    the variant's k / reduction; a variant the paper never ran gets no row; Adapt's tables have no ViT numbers."""
    from vptft import published

    table13 = pd.DataFrame(
        {"cifar100": [60.0, 50.0, 70.0, 65.0], "dtd": [55.0, 56.0, 57.0, 58.0], "mean_natural": [1.0] * 4},
        index=pd.Index(
            ["mlp[k=2]", "adapter[reduction=8]", "vpt_deep", "vpt_deep[location=add]"], name="strategy"
        ),
    )
    vs = published.vs_paper("vpt_table13", table13, "vit_b16_in21k").set_index(["strategy", "task"])
    assert vs.loc[("mlp[k=2]", "cifar100"), "published"] == 63.2
    assert vs.loc[("adapter[reduction=8]", "dtd"), "published"] == 62.7
    assert vs.loc[("vpt_deep", "cifar100"), "delta"] == pytest.approx(70.0 - 78.8)
    assert "vpt_deep[location=add]" not in vs.index.get_level_values("strategy")
    assert (vs.xs("cifar100", level="task").compared == "task").all()
    assert published.vs_paper("adapt_table2", table13, "vit_b16_in21k").empty


def test_hparam_sensitivity_draws_every_sweep_point_by_lr(tmp_path):
    """VPT Figure 17: one panel per strategy, a line per combination of the grid values besides lr, the selected
    point kept; the points table holds every sweep row."""
    import pandas as pd

    from vptft.figures import hparam_sensitivity

    vpt = tmp_path / "vpt.csv"
    pd.DataFrame(
        {
            "grid_index": range(4),
            "lr": [0.2, 0.2, 0.8, 0.8],
            "wd": [0.0001] * 4,
            "prompt_length": [1, 5, 1, 5],
            "val_top1": [19.0, 23.0, 15.0, 9.0],
            "selected": [0, 1, 0, 0],
        }
    ).to_csv(vpt, index=False)
    linear = tmp_path / "linear.csv"
    pd.DataFrame(
        {"lr": [0.08, 0.4], "wd": [0.0001] * 2, "val_top1": [30.0, 35.0], "selected": [0, 1]}
    ).to_csv(linear, index=False)
    points = hparam_sensitivity(
        {"vpt_deep": vpt, "linear": linear},
        {"vpt_deep": ["lr", "wd", "prompt_length"], "linear": ["lr", "wd"]},
        "t",
        tmp_path / "f.png",
    )
    assert len(points) == 6 and points.selected.sum() == 2
    assert set(points[points.strategy == "vpt_deep"].setting) == {
        "wd=0.0001, prompt_length=1",
        "wd=0.0001, prompt_length=5",
    }
    assert points[(points.strategy == "linear") & (points.selected == 1)].lr.item() == 0.4
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_figure1c_sets_every_method_against_full_finetuning_task_by_task(tmp_path):
    """The VPT paper's Figure 1(c): per task the seed mean minus full finetuning's; the summary's wins count the
    tasks above it, and a method without runs is an error, not a missing box."""
    from vptft.figures import method_overview, vpt_figure1

    rows = []
    for task, full, vpt in (("newshapes_src", 40.0, 45.0), ("count_src", 60.0, 50.0), ("digits", 70.0, 71.0)):
        for seed, noise in ((0, -1.0), (1, 1.0)):
            rows += [
                {"task": task, "strategy": "full", "seed": seed, "test_top1": full + noise},
                {"task": task, "strategy": "vpt_deep", "seed": seed, "test_top1": vpt + noise},
                {"task": task, "strategy": "linear", "seed": seed, "test_top1": full - 5.0},
            ]
    runs = pd.DataFrame(rows)
    per_task = method_overview(runs, ["full", "vpt_deep", "linear"]).set_index(["task", "strategy"])
    assert per_task.loc[("newshapes_src", "vpt_deep"), "vs_full"] == pytest.approx(5.0)
    assert per_task.loc[("count_src", "vpt_deep"), "group"] == "structured"
    summary = vpt_figure1(runs, ["full", "vpt_deep", "linear"], tmp_path / "f.png").set_index("strategy")
    assert summary.loc["vpt_deep", "mean_vs_full"] == pytest.approx((5.0 - 10.0 + 1.0) / 3)
    assert summary.loc["vpt_deep", "wins_vs_full"] == 2 and summary.loc["linear", "wins_vs_full"] == 0
    assert summary.loc["linear", ["min_vs_full", "max_vs_full"]].tolist() == [-5.0, -5.0]
    assert summary.loc["vpt_deep", "tasks"] == 3 and (tmp_path / "f.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"no runs of \['bias'\]"):
        method_overview(runs, ["full", "bias"])


def test_the_overfitting_count_takes_runs_whose_test_loss_rises_as_their_train_loss_falls():
    """Han et al. section 5.1 as a rule: a run counts when its last test loss is > 10 % above its lowest while
    its train loss kept falling; a test loss that rises with the train loss, or by less, does not."""

    def curve(train, test):
        return pd.DataFrame({"epoch": range(1, len(train) + 1), "train_loss": train, "test_loss": test})

    nan = float("nan")
    overfit = curve([2.0, 1.0, 0.5, 0.2], [2.0, 1.0, nan, 1.3])
    assert claims.overfits(overfit)
    assert not claims.overfits(curve([2.0, 1.0, 0.5, 0.2], [2.0, 1.0, nan, 1.05]))  # a 5 % rise: noise
    assert not claims.overfits(curve([2.0, 1.0, 1.2, 1.4], [2.0, 1.0, nan, 1.5]))  # both rise: it diverged
    assert not claims.overfits(curve([2.0, 1.0], [nan, 1.0]))  # one evaluation: nothing to compare
    healthy = curve([2.0, 1.0, 0.5, 0.2], [2.0, 1.0, nan, 0.9])
    curves = pd.concat(
        [
            overfit.assign(task="a", strategy="full", seed=0),
            healthy.assign(task="a", strategy="full", seed=1),
            healthy.assign(task="a", strategy="vpt_deep", seed=0),
        ]
    )
    vtab = pd.DataFrame(
        {"task": ["a", "a", "a"], "strategy": ["full", "full", "vpt_deep"], "seed": [0, 1, 0]}
    )
    counts = claims.overfitting_count(vtab, curves).set_index("strategy")
    assert counts.loc["full", ["runs", "overfit", "share_pct", "tasks"]].tolist() == [2, 1, 50.0, "a"]
    assert counts.loc["vpt_deep", "overfit"] == 0
    md = claims.overfitting_markdown(counts.reset_index())
    assert "| full | 2 | 1 | 50 % | a |" in md and "more than 10% above its lowest" in md
