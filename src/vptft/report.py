"""Aggregate final runs into the paper's table layout (Tables 1-2 of Han et al.): rows = strategies, columns =
tasks grouped as in VTAB, group means, number of wins vs full finetuning, tuned / total parameters (%).
Every number comes from a metrics.json; the per-run listing that a table aggregates is written beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vptft import tasks as task_registry
from vptft.io import atomic_path
from vptft.strategies import STUDY_STRATEGIES


def ordered_strategies(strategies: list[str]) -> list[str]:
    """The study's own rows first (FT, VPT, Mixed, FT-then-PT), then the other strategies in config order."""
    return [s for s in STUDY_STRATEGIES if s in strategies] + [s for s in strategies if s not in STUDY_STRATEGIES]


def collect_runs(metrics_paths) -> pd.DataFrame:
    """One row per final run (task, strategy, seed, test top-1, tuned %, provenance) from metrics.json files."""
    rows = []
    for path in metrics_paths:
        m = json.loads(Path(path).read_text())
        rows.append({"task": m["task"], "group": task_registry.get_task(m["task"]).group, "strategy": m["strategy"],
                     "seed": m["seed"], "test_top1": m["test_top1"], "tuned_pct": m["tuned_pct"],
                     "hparams": json.dumps(m["hparams"], sort_keys=True), "epochs": m["epochs"],
                     "batch_size": m.get("batch_size"), "task_params": m.get("task_params"),
                     "backbone_params": m.get("backbone_params"), "summary": json.dumps(m.get("summary") or {}),
                     "config_hash": m["provenance"]["config_hash"], "metrics": str(path)})
    if not rows:
        raise ValueError("no runs to aggregate")
    return pd.DataFrame(rows)


def vtab_table(runs: pd.DataFrame, groups: list[str], tasks: list[str], strategies: list[str]) -> pd.DataFrame:
    """Mean test top-1 over seeds per (strategy, task), group means, wins vs `full`, mean tuned %, seeds."""
    by_group = {g: [t for t in tasks if task_registry.get_task(t).group == g] for g in groups}
    by_group = {g: ts for g, ts in by_group.items() if ts}
    ordered = [t for ts in by_group.values() for t in ts]
    runs = runs[runs.task.isin(ordered)]
    means = runs.pivot_table(index="strategy", columns="task", values="test_top1", aggfunc="mean")
    table = means.reindex(index=[s for s in ordered_strategies(strategies) if s in means.index], columns=ordered)
    for group, group_tasks in by_group.items():
        table[f"mean_{group}"] = table[group_tasks].mean(axis=1)
        if "full" in table.index:
            wins = (table[group_tasks] > table.loc["full", group_tasks]).sum(axis=1).astype("Int64")
            wins["full"] = pd.NA
            table[f"wins_{group}"] = wins
    table["tuned_pct"] = runs.groupby("strategy").tuned_pct.mean()
    table["seeds"] = runs.groupby(["strategy", "task"]).seed.nunique().groupby("strategy").min()
    table.index.name = "strategy"
    return table


def vpt_table1(runs: pd.DataFrame, groups: list[str], tasks: list[str], strategies: list[str]) -> pd.DataFrame:
    """The VPT paper's Table 1 layout: per strategy the group means of test top-1, the number of tasks won against
    full finetuning per group, and the parameters all configured tasks need together, as multiples of one
    backbone (a strategy that keeps its own backbone copy per task pays one per task, the others share one)."""
    table = vtab_table(runs, groups, tasks, strategies)
    columns = [c for g in groups for c in (f"mean_{g}", f"wins_{g}") if c in table.columns]
    per_task = runs[runs.task.isin(tasks)].groupby(["strategy", "task"])[["task_params", "backbone_params"]].first()
    backbone = per_task.backbone_params.groupby("strategy").first()
    own_copy = (per_task.task_params >= per_task.backbone_params).groupby("strategy").all()
    stored = per_task.task_params.groupby("strategy").sum() + backbone.where(~own_copy, 0)
    table = table[columns].copy()
    table["total_params_x"] = (stored / backbone).reindex(table.index)
    table["tasks"] = per_task.reset_index().groupby("strategy").task.nunique().reindex(table.index)
    return table


def std_table(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Population std over seeds of test top-1 per (strategy, task), aligned to `table`'s task columns."""
    stds = runs.pivot_table(index="strategy", columns="task", values="test_top1", aggfunc=lambda x: x.std(ddof=0))
    return stds.reindex(index=table.index, columns=[c for c in table.columns if c in stds.columns])


def write_table(table: pd.DataFrame, runs: pd.DataFrame, out_csv) -> None:
    """table{N}.csv (rounded to 2 decimals) and table{N}_runs.csv (every run it aggregates), atomically."""
    out_csv = Path(out_csv)
    with atomic_path(out_csv) as tmp:
        table.round(2).to_csv(tmp)
    with atomic_path(out_csv.with_name(out_csv.stem + "_runs.csv")) as tmp:
        runs.sort_values(["strategy", "task", "seed"]).to_csv(tmp, index=False)
