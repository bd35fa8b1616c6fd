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


def collect_runs(metrics_paths) -> pd.DataFrame:
    """One row per final run (task, strategy, seed, test top-1, tuned %, provenance) from metrics.json files."""
    rows = []
    for path in metrics_paths:
        m = json.loads(Path(path).read_text())
        rows.append({"task": m["task"], "group": task_registry.get_task(m["task"]).group, "strategy": m["strategy"],
                     "seed": m["seed"], "test_top1": m["test_top1"], "tuned_pct": m["tuned_pct"],
                     "hparams": json.dumps(m["hparams"], sort_keys=True), "epochs": m["epochs"],
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
    table = means.reindex(index=[s for s in strategies if s in means.index], columns=ordered)
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
