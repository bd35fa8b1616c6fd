"""Outputs over several backbones: a table with one block of rows per backbone (the VPT paper's Table 4, MAE and
MoCo v3), its comparison with the published group means, and the model-scale figure (the VPT paper's Figure 4);
which runs each backbone then trains."""

import pandas as pd
import pytest

from vptft import figures, provenance, published, report, study
from vptft.tasks import get_task


def _runs(backbones, strategies, tasks, top1):
    """A runs table: top1(backbone, strategy, task) + seed for seeds 0 and 1."""
    return pd.DataFrame(
        [
            {
                "backbone": backbone,
                "task": task,
                "group": get_task(task).group,
                "regime": "vtab1k",
                "strategy": strategy,
                "seed": seed,
                "test_top1": top1(backbone, strategy, task) + seed,
                "tuned_pct": 100.0 if strategy == "full" else 0.5,
                "task_params": 100 if strategy == "full" else 1,
                "backbone_params": 100,
                "prompt_length": None,
                "capped": False,
                "capped_to": None,
                **report.regime_setting("vtab1k", 800),
            }
            for backbone in backbones
            for strategy in strategies
            for task in tasks
            for seed in (0, 1)
        ]
    )


CONFIG = {
    "backbone": "vit_b16_in21k",
    "backbones": {"vit_b16_mae": {}, "vit_b16_mocov3": {}, "vit_l16_in21k": {}},
    "tasks": ["cifar100", "eurosat", "clevr_count"],
    "strategies": {"full": {}, "linear": {}, "vpt_deep": {}},
    "regimes": {"vtab1k": {}},
    "train": {"seeds": [0]},
    "tables": {
        "vpt_table4": {
            "regime": "vtab1k",
            "groups": ["natural", "specialized", "structured"],
            "backbone": ["vit_b16_mae", "vit_b16_mocov3"],
            "strategies": ["full", "vpt_deep"],
        }
    },
    "analyses": {"model_scale": {"backbones": ["vit_b16_in21k", "vit_l16_in21k"], "strategies": ["linear"]}},
}


def test_each_backbone_of_a_table_or_the_scale_figure_trains_what_they_show():
    assert study.table_backbones(CONFIG, "vpt_table4") == ["vit_b16_mae", "vit_b16_mocov3"]
    assert study.table_backbone(CONFIG, "vpt_table4") == "vit_b16_mae+vit_b16_mocov3"  # the provenance stamp
    for backbone in ("vit_b16_mae", "vit_b16_mocov3"):
        runs = study.family_runs(CONFIG, "vtab1k", backbone)
        assert runs == {t: ["full", "vpt_deep"] for t in CONFIG["tasks"]}
    assert study.family_runs(CONFIG, "vtab1k", "vit_l16_in21k") == {t: ["linear"] for t in CONFIG["tasks"]}
    assert study.run_outputs(CONFIG) == ["vpt_table4", "vpt_figure4"]
    assert study.problems(CONFIG) == []
    bad = {**CONFIG, "backbones": {"vit_b16_mae": {}}}
    problems = study.problems(bad)
    assert any(p.startswith("$.tables.vpt_table4.backbone: 'vit_b16_mocov3' is neither") for p in problems)
    assert any(p.startswith("$.analyses.model_scale.backbones[1]: 'vit_l16_in21k'") for p in problems)
    one = {**CONFIG, "analyses": {"model_scale": {"backbones": ["vit_b16_in21k"]}}}
    assert "several sizes" in study.output_problem(one, "vpt_figure4")


def test_a_table_of_two_backbones_has_a_block_of_rows_each(tmp_path):
    def top1(backbone, strategy, task):
        return {"vit_b16_mae": 40.0, "vit_b16_mocov3": 70.0}[backbone] + (5.0 if strategy == "full" else 0.0)

    runs = _runs(["vit_b16_mae", "vit_b16_mocov3"], ["full", "vpt_deep"], CONFIG["tasks"], top1)
    runs.to_csv(tmp_path / "runs.csv", index=False)
    spec = {
        "table": "vpt_table4",
        "family": "vtab1k",
        "groups": ["natural", "specialized", "structured"],
        "tasks": CONFIG["tasks"],
        "strategies": ["full", "vpt_deep"],
        "backbones": ["vit_b16_mae", "vit_b16_mocov3"],
        "runs": [str(tmp_path / "runs.csv")],
        "out_csv": str(tmp_path / "vpt_table4.csv"),
    }
    table, spread, _ = report.make_table(spec)
    assert spread is None and list(table.index.names) == ["model", "strategy"]
    assert table.loc[("vit_b16_mae", "full"), "mean_natural"] == 45.5  # mean of seeds 45, 46
    assert table.loc[("vit_b16_mocov3", "vpt_deep"), "mean_structured"] == 70.5
    assert table.loc[("vit_b16_mocov3", "vpt_deep"), "wins_natural"] == 0
    written = pd.read_csv(tmp_path / "vpt_table4.csv")
    assert list(written.model[:2]) == ["vit_b16_mae", "vit_b16_mae"] and len(written) == 4
    stamp = {"benchmark": "vtab", "backbone": "vit_b16_mae+vit_b16_mocov3", "config_hash": "0" * 64}
    report.make_table({**spec, "out_csv": str(tmp_path / "stamped.csv"), "provenance": stamp})
    stamped = pd.read_csv(tmp_path / "stamped.csv")  # one `backbone` column: the stamp's
    assert provenance.read(tmp_path / "stamped.csv") == stamp and "backbone.1" not in stamped
    vs = published.vs_paper("vpt_table4", table, "vit_b16_mae+vit_b16_mocov3", tasks=CONFIG["tasks"])
    assert vs.empty  # group means over 1 of 7 tasks: no per-task values of MAE / MoCo to compare with
    table = pd.DataFrame(
        {"mean_natural": [45.5, 40.5, 70.0]},
        index=pd.MultiIndex.from_tuples(
            [("vit_b16_mae", "full"), ("vit_b16_mae", "vpt_deep"), ("vit_b16_mocov3", "vpt_deep")],
            names=["model", "strategy"],
        ),
    )
    natural = ["cifar100", "caltech101", "dtd", "oxford_flowers102", "oxford_iiit_pet", "svhn", "sun397"]
    vs = published.vs_paper("vpt_table4", table, "vit_b16_mae+vit_b16_mocov3", tasks=natural)
    report.write_csv(vs, tmp_path / "vs.csv", index=False, stamp=stamp)  # as the notebook writes it
    vs = vs.set_index(["model", "strategy", "task"])
    assert vs.loc[("vit_b16_mae", "full", "mean_natural"), "published"] == 59.31  # = Han et al. Table 10's
    assert vs.loc[("vit_b16_mae", "vpt_deep", "mean_natural"), "published"] == 36.02
    assert vs.loc[("vit_b16_mae", "vpt_deep", "mean_natural"), "delta"] == pytest.approx(40.5 - 36.02)
    assert vs.loc[("vit_b16_mocov3", "vpt_deep", "mean_natural"), "published"] == 70.27


def test_the_model_scale_figure_draws_group_means_per_backbone(tmp_path):
    def top1(backbone, strategy, task):
        return {"vit_b16_in21k": 60.0, "vit_l16_in21k": 70.0}[backbone] + (
            10.0 if task == "cifar100" else 0.0
        )

    runs = _runs(["vit_b16_in21k", "vit_l16_in21k"], ["full", "vpt_deep"], CONFIG["tasks"], top1)
    groups = ["natural", "structured"]
    means = figures.vpt_figure4(
        runs, ["vit_b16_in21k", "vit_l16_in21k"], ["full", "vpt_deep"], groups, tmp_path / "f4.png"
    )
    at = means.set_index(["model", "strategy", "group"])
    assert at.loc[("vit_l16_in21k", "full", "natural"), "top1"] == 80.5
    stamp = {"benchmark": "vtab", "backbone": "vit_b16_in21k+vit_l16_in21k", "config_hash": "0" * 64}
    report.write_csv(means, tmp_path / "f4.csv", index=False, stamp=stamp)  # as its notebook writes it
    assert provenance.read(tmp_path / "f4.csv") == stamp
    assert set(pd.read_csv(tmp_path / "f4.csv").model) == {"vit_b16_in21k", "vit_l16_in21k"}
    assert at.loc[("vit_b16_in21k", "vpt_deep", "structured"), "top1"] == 60.5
    assert set(means.group) == set(groups)  # specialized not asked for
    assert (tmp_path / "f4.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no runs on backbones"):
        figures.vpt_figure4(runs, ["vit_b16_in21k", "vit_h14_in21k"], ["full"], groups, tmp_path / "x.png")
