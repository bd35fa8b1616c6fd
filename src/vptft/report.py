"""The paper's tables from collected runs.

`collect` turns the final runs of one task and regime family into one runs table (a row per run: task,
regime, size, strategy, seed, hyper-parameters, test top-1, tuned %, curves and provenance); every table,
figure and the claims report reads those tables, never a list of metrics files on a command line.

Table layout (Tables 1-6 of Han et al.): rows = strategies (per data size or few-shot selection where the family
has several), columns = tasks grouped as in VTAB, group means, number of wins vs full finetuning, tuned / total
parameters (%). Few-shot random draws are averaged (their spread is the std table); a scaling size a task could
not supply is listed in `capped`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vptft import provenance
from vptft import tasks as task_registry
from vptft.io import atomic_path
from vptft.splits import COOP_RE, FEWSHOT_RE, FRACTION_RE, SCALE_RE
from vptft.strategies import STUDY_STRATEGIES

SETTING_COLUMNS = {
    "vtab1k": [],
    "scaling": ["size"],
    "fewshot": ["shots", "selection"],
    "fgvc": [],
    "fraction": ["fraction"],
    "coop": ["shots", "selection"],
}


def ordered_strategies(strategies: list[str]) -> list[str]:
    """The study's own rows first (FT, VPT, Mixed, FT-then-PT), then the other strategies in config order."""
    return [s for s in STUDY_STRATEGIES if s in strategies] + [
        s for s in strategies if s not in STUDY_STRATEGIES
    ]


def regime_setting(regime: str, vtab1k_n_train: int | None = None) -> dict:
    """What a regime name says about its data: train size, shots per class, selection rule and draw."""
    none = {"size": None, "shots": None, "selection": None, "draw": None, "fraction": None}
    if regime == "vtab1k":
        return none | {"size": vtab1k_n_train}
    if regime == "fgvc":
        return none
    if match := FRACTION_RE.match(regime):
        return none | {"fraction": int(match.group(1))}
    if match := SCALE_RE.match(regime):
        return none | {"size": int(match.group(1))}
    if match := COOP_RE.match(regime):
        return none | {"shots": int(match.group(1)), "selection": "random", "draw": int(match.group(2))}
    if match := FEWSHOT_RE.match(regime):
        k, draw, prototype = match.groups()
        return none | {
            "shots": int(k),
            "selection": "prototype" if prototype else "random",
            "draw": None if prototype else int(draw),
        }
    raise ValueError(f"unknown regime {regime!r}")


def run_row(metrics_path, family: str, vtab1k_n_train: int | None = None) -> dict:
    """One row of a runs table from a final run's metrics.json (its curves and weights beside it)."""
    path = Path(metrics_path)
    m = json.loads(path.read_text())
    task = task_registry.get_task(m["task"])
    data = m.get("data") or {}
    capped = data.get("capped")
    return {
        "family": family,
        "backbone": m.get("backbone"),
        "task": m["task"],
        "group": task.group,
        "domain": task.domain,
        "task_disparity": task.task_disparity,
        "regime": m["regime"],
        **regime_setting(m["regime"], vtab1k_n_train),
        "strategy": m["strategy"],
        "base_strategy": m.get("base_strategy", m["strategy"]),
        "variant": json.dumps(m.get("variant") or {}, sort_keys=True),
        "seed": m["seed"],
        "test_top1": m["test_top1"],
        "test_loss": m.get("test_loss"),
        "train_loss": m.get("train_loss"),
        "tuned_pct": m["tuned_pct"],
        "task_params": m.get("task_params"),
        "backbone_params": m.get("backbone_params"),
        "epochs": m["epochs"],
        "batch_size": m.get("batch_size"),
        "prompt_length": m["hparams"].get("prompt_length", (m.get("variant") or {}).get("prompt_length")),
        "lr": m["hparams"].get("lr"),
        "wd": m["hparams"].get("wd"),
        "hparams": json.dumps(m["hparams"], sort_keys=True),
        "n_final": m.get("n_train"),  # what the final run trained on: train + val, or (FGVC) train
        "final_split": m.get("final_split", "trainval"),
        "capped": bool(capped),
        "capped_to": capped["used"][0] if capped else None,
        "summary": json.dumps(m.get("summary") or {}, sort_keys=True),
        "config_hash": m["provenance"]["config_hash"],
        "curves": str(path.with_name("curves.csv")),
        "tuned": str(path.with_name("tuned.safetensors")),
        "metrics": str(path),
    }


def collect(metrics_paths, family: str, out_csv, vtab1k_n_train: int | None = None) -> pd.DataFrame:
    """Write the runs table of the given final runs (sorted, atomically); refuse an empty one."""
    rows = [run_row(p, family, vtab1k_n_train) for p in metrics_paths]
    if not rows:
        raise ValueError(f"{out_csv}: no runs to collect")
    runs = pd.DataFrame(rows).sort_values(["task", "regime", "strategy", "seed"], kind="stable")
    with atomic_path(out_csv) as tmp:
        runs.to_csv(tmp, index=False)
    return runs


def read_runs(paths) -> pd.DataFrame:
    """Concatenate collected runs tables."""
    frames = [pd.read_csv(p) for p in paths]
    if not frames:
        raise ValueError("no runs tables to read")
    return pd.concat(frames, ignore_index=True)


def _spread(values: pd.Series) -> float:
    """Population std of the values; undefined (NaN, an empty cell) for a single one."""
    return values.std(ddof=0) if len(values) > 1 else float("nan")


def _cell_values(runs: pd.DataFrame, family: str, metric: str) -> pd.DataFrame:
    """One value per (setting, strategy, task): the seed mean (random few-shot draws: the mean over draws of
    their seed means), with its spread (std over seeds, or over draws) and the seeds it rests on."""
    keys = [*SETTING_COLUMNS[family], "strategy", "task"]
    if metric == "prompt_length":
        first = runs.groupby(keys, dropna=False).prompt_length.first().rename("value").reset_index()
        return first.assign(spread=0.0, seeds=runs.groupby(keys, dropna=False).seed.nunique().values)
    per_draw = (
        runs.groupby([*keys, "draw"], dropna=False)
        .agg(
            value=("test_top1", "mean"),
            spread=("test_top1", _spread),
            seeds=("seed", "nunique"),
        )
        .reset_index()
    )
    cells = (
        per_draw.groupby(keys, dropna=False)
        .agg(
            value=("value", "mean"),
            draws=("value", "size"),
            draw_std=("value", _spread),
            seed_std=("spread", "mean"),
            seeds=("seeds", "min"),
        )
        .reset_index()
    )
    cells["spread"] = cells.draw_std.where(cells.draws > 1, cells.seed_std)
    return cells[[*keys, "value", "spread", "seeds", "draws"]]


def study_table(
    runs: pd.DataFrame,
    family: str,
    groups: list[str],
    tasks: list[str],
    strategies: list[str],
    metric: str = "top1",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's table layout and its spread table (same rows, task columns)."""
    by_group = {g: [t for t in tasks if task_registry.get_task(t).group == g] for g in groups}
    by_group = {g: ts for g, ts in by_group.items() if ts}
    ordered = [t for ts in by_group.values() for t in ts]
    runs = runs[runs.task.isin(ordered) & runs.strategy.isin(strategies)]
    if runs.empty:
        raise ValueError(f"no runs of tasks {ordered} and strategies {strategies}")
    cells = _cell_values(runs, family, metric)
    index = [*SETTING_COLUMNS[family], "strategy"]
    table = cells.pivot_table(index=index, columns="task", values="value", dropna=False).reindex(
        columns=ordered
    )
    spread = cells.pivot_table(index=index, columns="task", values="spread", dropna=False).reindex(
        columns=ordered
    )
    rank = {s: i for i, s in enumerate(ordered_strategies(strategies))}
    order = sorted(
        table.index,
        key=lambda key: (
            *(key[:-1] if isinstance(key, tuple) else ()),
            rank[key[-1] if isinstance(key, tuple) else key],
        ),
    )
    table, spread = table.reindex(order), spread.reindex(order)
    for group, group_tasks in by_group.items():
        table[f"mean_{group}"] = table[group_tasks].mean(axis=1)
        if metric == "top1" and "full" in strategies:
            table[f"wins_{group}"] = _wins(table, group_tasks)
    if metric == "top1":
        table["tuned_pct"] = runs.groupby(index, dropna=False).tuned_pct.mean().reindex(table.index)
    table["seeds"] = cells.groupby(index, dropna=False).seeds.min().reindex(table.index)
    if family == "scaling":
        capped = {
            key: " ".join(sorted({f"{t}:{int(n)}" for t, n in zip(g.task, g.capped_to)}))
            for key, g in runs[runs.capped.astype(bool)].groupby(index, dropna=False)
        }
        table["capped"] = [capped.get(key, "") for key in table.index]
    if family in ("fewshot", "coop"):
        table["draws"] = cells.groupby(index, dropna=False).draws.max().reindex(table.index)
    return table, spread


def _wins(table: pd.DataFrame, tasks: list[str]) -> pd.Series:
    """Tasks where a row beats the `full` row of the same setting (NA for full itself)."""
    wins = pd.Series(pd.NA, index=table.index, dtype="Int64")
    for key in table.index:
        setting = key[:-1] if isinstance(key, tuple) else ()
        strategy = key[-1] if isinstance(key, tuple) else key
        full_key = (*setting, "full") if setting else "full"
        if strategy == "full" or full_key not in table.index or table.loc[key, tasks].isna().all():
            continue  # no wins to count: full itself, no full row, or a row without runs on these tasks
        wins[key] = int((table.loc[key, tasks] > table.loc[full_key, tasks]).sum())
    return wins


def vpt_table1(
    runs: pd.DataFrame, groups: list[str], tasks: list[str], strategies: list[str], family: str = "vtab1k"
) -> pd.DataFrame:
    """The VPT paper's Table 1 layout: per strategy (and per train size or few-shot selection, as the family
    has them) the group means of test top-1, the number of tasks won against full finetuning per group, and the
    parameters all configured tasks need together, as multiples of one backbone (a strategy that keeps its own
    backbone copy per task pays one per task, the others share one)."""
    table, _ = study_table(runs, family, groups, tasks, strategies)
    missing = [g for g in groups if f"mean_{g}" not in table.columns]
    if missing:
        raise ValueError(f"groups {missing} have no task among {tasks}: the table would drop them")
    columns = [c for g in groups for c in (f"mean_{g}", f"wins_{g}") if c in table.columns]
    runs = runs[runs.task.isin(tasks) & runs.strategy.isin(strategies)]
    keys = [*SETTING_COLUMNS[family], "strategy"]
    per_task = runs.groupby([*keys, "task"], dropna=False)[["task_params", "backbone_params"]].first()
    backbone = per_task.backbone_params.groupby(keys, dropna=False).first()
    own_copy = (per_task.task_params >= per_task.backbone_params).groupby(keys, dropna=False).all()
    stored = per_task.task_params.groupby(keys, dropna=False).sum() + backbone.where(~own_copy, 0)
    table = table[columns].copy()
    table["total_params_x"] = (stored / backbone).reindex(table.index)
    table["tasks"] = per_task.reset_index().groupby(keys, dropna=False).task.nunique().reindex(table.index)
    return table


def write_csv(
    frame: pd.DataFrame, path, index: bool = True, stamp: dict | None = None, decimals: dict | None = None
) -> None:
    """Rounded to 2 decimals (`decimals`: other counts for some columns, e.g. p-values), with the provenance
    stamp (benchmark, backbone, config_hash) as trailing columns."""
    rounding = {**{column: 2 for column in frame.columns}, **(decimals or {})}
    with atomic_path(path) as tmp:
        provenance.with_columns(frame.round(rounding), stamp).to_csv(tmp, index=index)


def write_table(
    table: pd.DataFrame,
    runs: pd.DataFrame,
    out_csv,
    spread: pd.DataFrame | None = None,
    stamp: dict | None = None,
) -> None:
    """{table}.csv, {table}_std.csv (both stamped), {table}_runs.csv (every run it aggregates, each with its own
    config hash)."""
    out_csv = Path(out_csv)
    write_csv(table, out_csv, stamp=stamp)
    if spread is not None:
        write_csv(spread, out_csv.with_name(out_csv.stem + "_std.csv"), stamp=stamp)
    with atomic_path(out_csv.with_name(out_csv.stem + "_runs.csv")) as tmp:
        runs.sort_values(["strategy", "task", "regime", "seed"]).to_csv(tmp, index=False)


def make_table(spec: dict) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]:
    """A configured table from collected runs tables (`spec`: table, family, groups, tasks, strategies, metric,
    runs (paths), out_csv, provenance (the stamp)); writes its files and returns (table, spread, runs)."""
    runs = read_runs(spec["runs"])
    runs = runs[runs.task.isin(spec["tasks"]) & runs.strategy.isin(spec["strategies"])]
    backbones = spec.get("backbones") or [None]
    tables, spreads = [], []
    for backbone in backbones:  # one block of rows per backbone (the VPT paper's Table 4)
        shown = runs if len(backbones) == 1 else runs[runs.backbone == backbone]
        if table_layout(spec["table"], spec.get("layout")) == "group_means":
            tables.append(
                vpt_table1(shown, spec["groups"], spec["tasks"], spec["strategies"], spec["family"])
            )
            spreads.append(None)
        else:
            block, spread = study_table(
                shown,
                spec["family"],
                spec["groups"],
                spec["tasks"],
                spec["strategies"],
                spec.get("metric", "top1"),
            )
            tables.append(block)
            spreads.append(spread)
    if len(backbones) == 1:
        table, spread = tables[0], spreads[0]
    else:
        # the level is `model`: the provenance stamp's `backbone` column names them all ("a+b")
        table = pd.concat(tables, keys=backbones, names=["model"])
        spread = None if spreads[0] is None else pd.concat(spreads, keys=backbones, names=["model"])
    if spec.get("fid"):
        table, spread = with_fid_row(table, spread, spec["fid"], spec["groups"])
    write_table(table, runs, spec["out_csv"], spread, spec.get("provenance"))
    return table, spread, runs


def table_layout(name: str, layout: str | None = None) -> str:
    """per_task (Han et al.'s tables, the VPT paper's per-task ones) or group_means (the VPT paper's Table 1):
    as configured, else group_means for vpt_table1-like names (vpt_ without a layout) and per_task otherwise."""
    return layout or ("group_means" if name.startswith("vpt_") else "per_task")


def with_fid_row(
    table: pd.DataFrame, spread: pd.DataFrame | None, fid_paths, groups: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The table and its spread table with a row `fid` (Table 19): each task's FID to the pre-training data (mean
    over the reference draws) with group means beside it, and its std over the draws in the spread table."""
    records = [json.loads(Path(path).read_text()) for path in fid_paths]
    mean = {r["task"]: r["fid_mean"] for r in records}
    std = {r["task"]: r["fid_std"] for r in records}

    def appended(frame: pd.DataFrame, values: dict, with_means: bool) -> pd.DataFrame:
        row = pd.Series({task: values[task] for task in frame.columns if task in values}, dtype=float)
        for group in groups if with_means else ():
            tasks = [t for t in row.index if task_registry.get_task(t).group == group]
            if tasks and f"mean_{group}" in frame.columns:
                row[f"mean_{group}"] = row[tasks].mean()
        key = tuple([None] * (frame.index.nlevels - 1) + ["fid"]) if frame.index.nlevels > 1 else "fid"
        return pd.concat([frame, pd.DataFrame([row], index=pd.Index([key], name=frame.index.name))])

    return appended(table, mean, True), None if spread is None else appended(spread, std, False)
