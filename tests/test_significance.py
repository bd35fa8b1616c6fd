"""VPT-deep against every other strategy (the VPT paper's Table 10 and Figure 16): Welch per task over seeds,
Wilcoxon across tasks, and cells a test cannot fill said so."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from vptft import significance
from vptft.figures import vpt_figure16


def _runs():
    rows = []
    for task, vpt, full, linear in (
        ("a", [60, 62, 61], [50, 52, 51], [40]),
        ("b", [70, 71, 72], [71, 70, 73], [65]),
        ("c", [30, 33, 31], [20, 21, 19], [25]),
    ):
        for strategy, values in (("vpt_deep", vpt), ("full", full), ("linear", linear)):
            rows += [
                {"task": task, "strategy": strategy, "seed": i, "test_top1": v} for i, v in enumerate(values)
            ]
    return pd.DataFrame(rows)


def test_per_task_welch_and_wilcoxon_across_tasks():
    tests = significance.against(_runs(), "vpt_deep", ["full", "vpt_deep", "linear"], ["a", "b", "c"])
    full = tests[tests.strategy == "full"].set_index("task")
    welch = stats.ttest_ind([60, 62, 61], [50, 52, 51], equal_var=False).pvalue
    assert full.loc["a", "p"] == pytest.approx(welch) and full.loc["a", "diff"] == pytest.approx(10.0)
    assert full.loc["b", "diff"] == pytest.approx(71 - 214 / 3) and full.loc["a", "n"] == 3
    diffs = [10.0, 71 - 214 / 3, 94 / 3 - 20]
    assert full.loc["all", "p"] == pytest.approx(stats.wilcoxon(diffs).pvalue)
    assert full.loc["all", "wins"] == 2 and full.loc["all", "p_floor"] == pytest.approx(0.25)
    linear = tests[tests.strategy == "linear"].set_index("task")
    assert (
        linear.loc[["a", "b", "c"], "p"].isna().all()
        and (linear.loc[["a", "b", "c"], "why"] == "one seed").all()
    )
    assert linear.loc["all", "p"] == pytest.approx(stats.wilcoxon([21.0, 6.0, 94 / 3 - 25]).pvalue)
    matrix = significance.matrix(tests)
    assert list(matrix.index) == ["full", "linear"] and list(matrix.columns) == ["a", "b", "c", "all"]


def test_one_task_has_no_wilcoxon_and_no_runs_is_refused():
    one = significance.against(_runs(), "vpt_deep", ["vpt_deep", "full"], ["a"])
    row = one[one.task == "all"].iloc[0]
    assert np.isnan(row.p) and row.why == "fewer than two tasks"
    with pytest.raises(ValueError, match="no task has runs of 'vpt_deep'"):
        significance.against(_runs(), "vpt_deep", ["vpt_deep", "mixed"], ["a"])


def test_figure16_draws_the_matrix(tmp_path):
    tests = significance.against(_runs(), "vpt_deep", ["full", "vpt_deep", "linear"], ["a", "b", "c"])
    vpt_figure16(tests, "VPT", 0.05, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_a_table_may_not_take_the_significance_tables_name():
    import yaml

    from conftest import ROOT
    from vptft.config import ConfigError, validate_config

    with open(f"{ROOT}/config/config.yaml") as f:
        config = yaml.safe_load(f)
    config["tables"]["vpt_table10"] = {"regime": "vtab1k", "groups": ["natural"]}
    with pytest.raises(
        ConfigError, match=r"\$\.tables\.vpt_table10: 'vpt_table10' is a table the workflow makes itself"
    ):
        validate_config(config)
