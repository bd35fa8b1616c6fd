"""The published numbers (Han et al. 2024 Tables 1-20; Jia et al. 2022 Tables 1, 2, 4, 13), for paper-vs-reproduced
tables.

Transcribed from the papers into src/vptft/reference/ (long format; README there). A cell of ours is matched on
(strategy, task or group mean, data size where the table has sizes); the published value, ours and the
difference go side by side. Cells the paper does not print are left out, not filled.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).with_name("reference")
JIA_GROUPS = {
    "natural": "vtab_natural",
    "specialized": "vtab_specialized",
    "structured": "vtab_structured",
    "fgvc": "fgvc",
}
# this project's strategies -> their rows in the VPT paper's tables (its Partial-1 and Mlp-3)
JIA_NAMES = {"partial": "partial_1", "mlp": "mlp_3"}


def han2024() -> pd.DataFrame:
    return pd.read_csv(REFERENCE_DIR / "han2024_tables.csv")


def jia2022_table1() -> pd.DataFrame:
    return pd.read_csv(REFERENCE_DIR / "jia2022_vpt_table1.csv")


def jia2022_group_means() -> pd.DataFrame:
    """The VPT paper's group means on every backbone it reports: Table 1 (ViT-B/16), Tables 2 and 4 (Swin-B, MAE,
    MoCo v3: Full and VPT-deep)."""
    return pd.concat(
        [jia2022_table1(), pd.read_csv(REFERENCE_DIR / "jia2022_vpt_tables2_4.csv")], ignore_index=True
    )


def _long(table: pd.DataFrame, value_columns: list[str]) -> pd.DataFrame:
    """Our wide table -> one row per (setting..., strategy, column)."""
    frame = table[value_columns].reset_index()
    keys = [c for c in frame.columns if c not in value_columns]
    return frame.melt(id_vars=keys, var_name="task", value_name="ours")


def _group_of(column: str) -> str | None:
    return column.removeprefix("mean_") if column.startswith("mean_") else None


def _like_with_like(ours: pd.DataFrame, per_task: pd.DataFrame, keys: list[str], table_tasks: list[str]):
    """Our group means over fewer tasks than the paper's: compared with the paper's own per-task values averaged
    over the same tasks (`compared` says which); a mean the paper has no per-task values for is left out."""
    from vptft import tasks as task_registry

    vtab = task_registry.tasks_of("vtab") + task_registry.tasks_of("fgvc")  # the papers' tasks
    rows = []
    for row in ours.itertuples(index=False):
        row = row._asdict()
        group = _group_of(row["task"])
        if group is None:
            rows.append({**row, "compared": "task"})
            continue
        ours_tasks = [t for t in table_tasks if task_registry.get_task(t).group == group]
        all_tasks = [t for t in vtab if task_registry.get_task(t).group == group]
        if set(ours_tasks) >= set(all_tasks):
            rows.append({**row, "compared": f"mean of all {len(all_tasks)} {group} tasks"})
            continue
        match = per_task[per_task.task.isin(ours_tasks)]
        for key in keys:
            if key != "task":
                match = match[match[key] == row[key]]
        if match.task.nunique() < len(ours_tasks):
            continue
        rows.append(
            {
                **row,
                "published": float(match.published.mean()),
                "compared": f"partial: mean of {len(ours_tasks)} of {len(all_tasks)} {group} tasks "
                "(the paper's values of the same tasks)",
            }
        )
    return pd.DataFrame(rows, columns=[*ours.columns, "compared"])


def vs_paper(
    name: str, table: pd.DataFrame, backbone: str, metric: str = "top1", tasks: list[str] | None = None
) -> pd.DataFrame:
    """Published vs reproduced for table `name` (tableN of Han et al., vpt_table1 = Jia et al. Table 1); a group
    mean over a subset of the group's tasks is compared with the paper's values of that subset, never with the
    paper's whole-group mean."""
    table_tasks = list(tasks) if tasks is not None else [c for c in table.columns if c in _task_names()]
    if "model" in (table.index.names or []):  # one block of rows per backbone (report.make_table's level)
        blocks = [
            vs_paper(name, table.xs(key, level="model"), key, metric, table_tasks).assign(model=key)
            for key in table.index.get_level_values("model").dropna().unique()
        ]
        return pd.concat(blocks, ignore_index=True)
    if name == "adapt_table1":
        return _vs_adapt(table, backbone, table_tasks)
    if name.startswith("adapt_"):  # Adapt's published numbers are CLIP few-shot ones: no ViT counterpart
        return pd.DataFrame(columns=["strategy", "task", "ours", "published", "delta", "compared"])
    if name.startswith("vpt_"):
        return _vs_jia(table, backbone, table_tasks)
    number = int(re.fullmatch(r"table(\d+)", name).group(1))
    ref = han2024()
    ref = ref[(ref.table == number) & (ref.backbone == backbone) & (ref.metric == metric)]
    columns = [
        c for c in table.columns if not c.startswith(("wins_", "tuned_pct", "seeds", "capped", "draws"))
    ]
    ours = _long(table, columns)
    ref = ref.rename(columns={"value": "published"})
    keys = ["strategy", "task"]
    if "size" in ours.columns:
        ref = ref.assign(size=pd.to_numeric(ref.n_train, errors="coerce"))
        keys.append("size")
    merged = ours.merge(ref[[*keys, "published"]], on=keys, how="left")
    merged = _like_with_like(merged, ref[[*keys, "published"]], keys, table_tasks).dropna(
        subset=["published"]
    )
    merged["delta"] = merged.ours - merged.published
    return merged.reset_index(drop=True)


def _vs_adapt(table: pd.DataFrame, backbone: str, table_tasks: list[str]) -> pd.DataFrame:
    """Adapt's Table 1: its averages over CoOp's 11 data sets at 16 shots (random draws), where our table's
    `mean_coop` covers all 11; rows are looked up by their name in config/paper-clip.yaml."""
    from vptft import tasks as task_registry

    columns = ["shots", "selection", "strategy", "task", "ours", "published", "delta", "compared"]
    coop = task_registry.tasks_of("coop")
    if "mean_coop" not in table.columns or not set(table_tasks) >= set(coop):
        return pd.DataFrame(columns=columns)
    ref = pd.read_csv(REFERENCE_DIR / "adapt_table1.csv")
    ref = ref[(ref.backbone == backbone) & (ref.metric == "top1")].rename(columns={"value": "published"})
    ours = _long(table, ["mean_coop"])
    ours = ours[ours.selection == "random"]
    merged = ours.merge(ref[["shots", "strategy", "task", "published"]], on=["shots", "strategy", "task"])
    merged["delta"] = merged.ours - merged.published
    merged["compared"] = f"mean of all {len(coop)} coop tasks, 16 shots (Adapt's Table 1)"
    others = ref[~ref.strategy.isin(merged.strategy)].assign(
        selection="random", compared="published only: a row this table does not run"
    )  # the paper's other rows, for reference
    return pd.concat([merged, others], ignore_index=True)[columns]


def _task_names() -> set[str]:
    from vptft import tasks as task_registry

    return set(task_registry.TASKS)


def _vs_jia(table: pd.DataFrame, backbone: str, table_tasks: list[str]) -> pd.DataFrame:
    """Group means against the VPT paper's (Tables 1, 2, 4; like with like where ours cover fewer tasks) and task
    columns against its Table 13; each row of ours is looked up under its paper name (`jia_table13_name`)."""
    ref = jia2022_group_means()
    ref = ref[(ref.backbone == backbone) & (ref.metric == "top1")]
    per_task = pd.read_csv(REFERENCE_DIR / "jia2022_vpt_table13.csv")
    per_task = per_task[(per_task.backbone == backbone) & (per_task.metric == "top1")]
    per_task = per_task.rename(columns={"value": "published"})
    paper_name = {strategy: jia_table13_name(strategy) for strategy in table.index}
    rows = []
    for strategy in table.index:
        for group, ref_group in JIA_GROUPS.items():
            if f"mean_{group}" in table.columns:
                published = ref[(ref.strategy == paper_name[strategy]) & (ref.group == ref_group)].value
                rows.append((strategy, f"mean_{group}", table.loc[strategy, f"mean_{group}"], published))
        for task in [t for t in table.columns if t in set(per_task.task) and not t.startswith("mean_")]:
            published = per_task[
                (per_task.strategy == paper_name[strategy]) & (per_task.task == task)
            ].published
            rows.append((strategy, task, table.loc[strategy, task], published))
    ours = pd.DataFrame(
        [(paper_name[s], t, v, float(p.iloc[0]) if len(p) else float("nan")) for s, t, v, p in rows],
        columns=["strategy", "task", "ours", "published"],
    ).assign(row=[s for s, *_ in rows])
    merged = _like_with_like(ours, per_task, ["strategy", "task"], table_tasks)
    merged = merged.assign(strategy=merged.pop("row")).dropna(subset=["published"])
    merged = merged[["strategy", *merged.columns.drop("strategy")]]
    merged["delta"] = merged.ours - merged.published
    return merged.reset_index(drop=True)


def jia_table13_name(strategy: str) -> str | None:
    """The VPT paper's Table 13 row of one of our strategies or variants: `mlp[k=2]` -> mlp_2,
    `adapter[reduction=8]` -> adapter_8, `partial` -> partial_1 (its k); None where the paper has no such row."""
    from vptft.strategies import VARIANT

    match = VARIANT.fullmatch(strategy)
    if not match:
        return JIA_NAMES.get(strategy, strategy)
    base, body = match.groups()
    items = dict(item.split("=", 1) for item in body.split(","))
    numbered = {"mlp": "k", "partial": "k", "adapter": "reduction"}
    if base in numbered and set(items) == {numbered[base]}:
        return f"{base}_{items[numbered[base]]}"
    return None
