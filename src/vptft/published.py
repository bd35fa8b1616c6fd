"""The published numbers (Han et al. 2024 Tables 1-20; Jia et al. 2022 Table 1), for paper-vs-reproduced tables.

Transcribed from the papers into src/vptft/reference/ (long format; README there). A cell of ours is matched on
(strategy, task or group mean, data size where the table has sizes); the published value, ours and the
difference go side by side. Cells the paper does not print are left out, not filled.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).with_name("reference")
JIA_GROUPS = {"natural": "vtab_natural", "specialized": "vtab_specialized", "structured": "vtab_structured"}
# strategy names of the transcriptions -> this project's strategies + options
JIA_STRATEGIES = {"partial_1": "partial", "mlp_3": "mlp"}


def han2024() -> pd.DataFrame:
    return pd.read_csv(REFERENCE_DIR / "han2024_tables.csv")


def jia2022_table1() -> pd.DataFrame:
    return pd.read_csv(REFERENCE_DIR / "jia2022_vpt_table1.csv")


def _long(table: pd.DataFrame, value_columns: list[str]) -> pd.DataFrame:
    """Our wide table -> one row per (setting..., strategy, column)."""
    frame = table[value_columns].reset_index()
    keys = [c for c in frame.columns if c not in value_columns]
    return frame.melt(id_vars=keys, var_name="task", value_name="ours")


def vs_paper(name: str, table: pd.DataFrame, backbone: str, metric: str = "top1") -> pd.DataFrame:
    """Published vs reproduced for table `name` (tableN of Han et al., vpt_table1 = Jia et al. Table 1)."""
    if name.startswith("vpt_"):
        return _vs_jia(table, backbone)
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
    merged = ours.merge(ref[[*keys, "published"]], on=keys, how="inner")
    merged["delta"] = merged.ours - merged.published
    return merged


def _vs_jia(table: pd.DataFrame, backbone: str) -> pd.DataFrame:
    ref = jia2022_table1()
    ref = ref[(ref.backbone == backbone) & (ref.metric == "top1")]
    ref = ref.assign(strategy=ref.strategy.replace(JIA_STRATEGIES))
    rows = []
    for group, ref_group in JIA_GROUPS.items():
        if f"mean_{group}" not in table.columns:
            continue
        for strategy in table.index:
            published = ref[(ref.strategy == strategy) & (ref.group == ref_group)]
            if published.empty:
                continue
            rows.append(
                {
                    "strategy": strategy,
                    "task": f"mean_{group}",
                    "ours": table.loc[strategy, f"mean_{group}"],
                    "published": float(published.value.iloc[0]),
                }
            )
    merged = pd.DataFrame(rows, columns=["strategy", "task", "ours", "published"])
    merged["delta"] = merged.ours - merged.published
    return merged
