"""Which of the study's claims this run supports, with the numbers and a test for each.

C1  VPT vs FT at the vtab1k regime, by quadrant (task disparity x distribution disparity): the paper finds VPT
    ahead where task disparity is high or the data resemble the pre-training data, FT ahead for similar tasks on
    dissimilar data. Distribution disparity is the task's FID above / below the median of the configured tasks.
C2  Data scaling: FT - VPT grows with the train size (FT catches up and overtakes as data grows).
C3  Neither Mixed nor FT-then-PT beats VPT on average over tasks (the paper: Mixed below FT and VPT, FT-then-PT
    between them).
C4  One / few-shot: VPT ahead of FT on average over tasks.
C5  Spearman(FID, FT - VPT) > 0 over the tasks of low task disparity: the further the data from pre-training,
    the better FT does relative to VPT.
A direction that cannot be judged (a correlation over constant values) is "undefined".
Tests: Wilcoxon signed-rank across tasks (paired task means), Welch's t-test per task over seeds (counted
significant where p < alpha), Spearman for C2 / C5 (scipy). A claim is "supported" when the direction holds
(majority of tasks / mean difference / correlation sign); the p-value says how firmly, separately.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from vptft import provenance
from vptft.io import atomic_path

SUPPORTED, NOT_SUPPORTED, NO_DATA, UNDEFINED = "supported", "not supported", "no data", "undefined"


def _paired(runs: pd.DataFrame, a: str, b: str, keys=("task",)) -> pd.DataFrame:
    """Per task (and setting): seed means of strategies a and b and the per-task Welch p over seeds."""
    rows = []
    for key, sub in runs.groupby(list(keys)):
        xa = sub[sub.strategy == a].test_top1.to_numpy()
        xb = sub[sub.strategy == b].test_top1.to_numpy()
        if not len(xa) or not len(xb):
            continue
        welch = stats.ttest_ind(xa, xb, equal_var=False).pvalue if min(len(xa), len(xb)) > 1 else np.nan
        rows.append(
            {
                **dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                a: xa.mean(),
                b: xb.mean(),
                "diff": xa.mean() - xb.mean(),
                "welch_p": welch,
                "seeds": min(len(xa), len(xb)),
                "seed_std": float(np.mean([xa.std(), xb.std()])),
            }
        )
    return pd.DataFrame(rows)


def _spearman(x, y) -> tuple[float, float]:
    """Spearman's rho and p; NaN where either side is constant (the correlation is undefined there)."""
    if pd.Series(x).nunique() < 2 or pd.Series(y).nunique() < 2:
        return float("nan"), float("nan")
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def _wilcoxon(diff: np.ndarray) -> float:
    diff = diff[~np.isnan(diff)]
    if len(diff) < 2 or np.allclose(diff, 0):
        return float("nan")
    return float(stats.wilcoxon(diff).pvalue)


def _row(
    claim,
    scope,
    expected,
    pairs: pd.DataFrame,
    holds: bool | None,
    alpha: float,
    statistic=np.nan,
    p_value=None,
    observed: str = "",
) -> dict:
    if pairs is None or pairs.empty:
        return {
            "claim": claim,
            "scope": scope,
            "expected": expected,
            "observed": "no runs",
            "status": NO_DATA,
            "n_tasks": 0,
            "mean_diff": np.nan,
            "statistic": np.nan,
            "p_value": np.nan,
            "significant_tasks": 0,
            "seeds": 0,
            "seed_std": np.nan,
        }
    p = _wilcoxon(pairs["diff"].to_numpy()) if p_value is None else p_value
    return {
        "claim": claim,
        "scope": scope,
        "expected": expected,
        "observed": observed,
        "status": UNDEFINED if holds is None else SUPPORTED if holds else NOT_SUPPORTED,
        "n_tasks": int(pairs.task.nunique()),
        "mean_diff": float(pairs["diff"].mean()),
        "statistic": statistic,
        "p_value": p,
        "significant_tasks": int((pairs.welch_p < alpha).sum()),
        "seeds": int(pairs.seeds.min()),
        "seed_std": float(pairs.seed_std.mean()),
    }


def quadrants(fid: pd.DataFrame) -> pd.Series:
    """task -> 'low/high task disparity, low/high FID' (FID split at the median of the configured tasks)."""
    threshold = fid.fid_mean.median()
    return pd.Series(
        {
            task: f"{row.task_disparity} task disparity, {'high' if row.fid_mean > threshold else 'low'} FID"
            for task, row in fid.iterrows()
        }
    )


def c1(vtab: pd.DataFrame, fid: pd.DataFrame, alpha: float) -> list[dict]:
    pairs = _paired(vtab, "vpt_deep", "full")
    if pairs.empty:
        return [_row("C1", "all tasks", "VPT > FT by quadrant", pairs, None, alpha)]
    quadrant = quadrants(fid)
    pairs["quadrant"] = pairs.task.map(quadrant)
    rows = []
    for name, sub in pairs.groupby("quadrant"):
        vpt_expected = not name.startswith("low task disparity, high FID")
        wins = int((sub["diff"] > 0).sum())
        holds = wins * 2 > len(sub) if vpt_expected else wins * 2 < len(sub)
        rows.append(
            _row(
                "C1",
                name,
                "VPT > FT" if vpt_expected else "FT > VPT",
                sub,
                holds,
                alpha,
                observed=f"VPT wins {wins}/{len(sub)} tasks, mean VPT - FT {sub['diff'].mean():+.2f}",
            )
        )
    return rows


def c2(scaling: pd.DataFrame | None, alpha: float) -> list[dict]:
    if scaling is None or scaling.empty:
        return [_row("C2", "scaling", "FT - VPT grows with train size", None, None, alpha)]
    pairs = _paired(scaling, "full", "vpt_deep", keys=("task", "size"))
    if pairs.empty:
        return [_row("C2", "scaling", "FT - VPT grows with train size", None, None, alpha)]
    rho, p = _spearman(pairs["size"], pairs["diff"])
    smallest, largest = pairs["size"].min(), pairs["size"].max()
    gap_small = pairs[pairs["size"] == smallest]["diff"].mean()
    gap_large = pairs[pairs["size"] == largest]["diff"].mean()
    holds = None if np.isnan(rho) else bool(gap_large > gap_small and rho > 0)
    return [
        _row(
            "C2",
            f"{pairs.task.nunique()} tasks, sizes {int(smallest)}..{int(largest)}",
            "FT - VPT grows with train size",
            pairs,
            holds,
            alpha,
            statistic=rho,
            p_value=p,
            observed=f"FT - VPT {gap_small:+.2f} at n={int(smallest)}, {gap_large:+.2f} at n={int(largest)}; "
            f"Spearman(size, FT - VPT) = {rho:.2f}",
        )
    ]


def c3(vtab: pd.DataFrame, alpha: float) -> list[dict]:
    rows = []
    for strategy in ("mixed", "ft_then_pt"):
        pairs = _paired(vtab, strategy, "vpt_deep")
        name = {"mixed": "Mixed", "ft_then_pt": "FT-then-PT"}[strategy]
        if pairs.empty:
            rows.append(_row("C3", f"{name} vs VPT", f"{name} does not beat VPT", None, None, alpha))
            continue
        wins = int((pairs["diff"] > 0).sum())
        rows.append(
            _row(
                "C3",
                f"{name} vs VPT",
                f"{name} does not beat VPT",
                pairs,
                bool(pairs["diff"].mean() <= 0),
                alpha,
                observed=f"{name} wins {wins}/{len(pairs)} tasks, mean {name} - VPT "
                f"{pairs['diff'].mean():+.2f}",
            )
        )
    return rows


def c4(fewshot: pd.DataFrame | None, alpha: float) -> list[dict]:
    if fewshot is None or fewshot.empty:
        return [_row("C4", "few-shot", "VPT > FT", None, None, alpha)]
    rows = []
    for (shots, selection), sub in fewshot.groupby(["shots", "selection"]):
        pairs = _paired(
            sub, "vpt_deep", "full", keys=("task", "draw") if selection == "random" else ("task",)
        )
        if pairs.empty:
            continue
        per_task = pairs.groupby("task", as_index=False).agg(
            {"diff": "mean", "welch_p": "min", "seeds": "min", "seed_std": "mean"}
        )
        wins = int((per_task["diff"] > 0).sum())
        rows.append(
            _row(
                "C4",
                f"{int(shots)}-shot, {selection} selection",
                "VPT > FT",
                per_task,
                bool(per_task["diff"].mean() > 0),
                alpha,
                observed=f"VPT wins {wins}/{len(per_task)} tasks, mean VPT - FT "
                f"{per_task['diff'].mean():+.2f}",
            )
        )
    return rows or [_row("C4", "few-shot", "VPT > FT", None, None, alpha)]


def c5(vtab: pd.DataFrame, fid: pd.DataFrame, alpha: float) -> list[dict]:
    pairs = _paired(vtab, "full", "vpt_deep")
    low = pairs[pairs.task.map(fid.task_disparity) == "low"] if not pairs.empty else pairs
    if len(low) < 3:
        return [_row("C5", "low task disparity", "Spearman(FID, FT - VPT) > 0", None, None, alpha)]
    rho, p = _spearman(low.task.map(fid.fid_mean), low["diff"])
    rho_all, p_all = _spearman(pairs.task.map(fid.fid_mean), pairs["diff"])
    return [
        _row(
            "C5",
            "low task disparity",
            "Spearman(FID, FT - VPT) > 0",
            low,
            None if np.isnan(rho) else bool(rho > 0),
            alpha,
            statistic=rho,
            p_value=p,
            observed=f"rho = {rho:.2f} over {len(low)} tasks (all {len(pairs)} tasks: rho = {rho_all:.2f}, "
            f"p = {p_all:.3f})",
        )
    ]


def evaluate(runs: dict[str, pd.DataFrame], fid: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Every claim's rows from the collected runs tables ({family: runs}) and fid.csv (indexed by task)."""
    vtab = runs["vtab1k"]
    vtab = vtab[vtab.regime == "vtab1k"]
    return pd.DataFrame(
        c1(vtab, fid, alpha)
        + c2(runs.get("scaling"), alpha)
        + c3(vtab, alpha)
        + c4(runs.get("fewshot"), alpha)
        + c5(vtab, fid, alpha)
    )


def markdown(claims: pd.DataFrame, benchmark: str, backbone: str, alpha: float) -> str:
    legend = (
        "Status = the direction the paper reports holds in this run's numbers; p = Wilcoxon signed-rank "
        "across tasks (C1, C3, C4) or Spearman (C2, C5); significant tasks = Welch's t-test over seeds "
        f"at alpha = {alpha}. A claim without runs says `no data`."
    )
    lines = [
        f"# Claims of the study and what this run says ({benchmark} benchmark, backbone {backbone})",
        "",
        legend,
        "",
    ]
    lines += [
        "| claim | scope | expected | observed | status | p | tasks | significant tasks | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in claims.itertuples():
        p = "n/a" if pd.isna(r.p_value) else f"{r.p_value:.3g}"
        lines.append(
            f"| {r.claim} | {r.scope} | {r.expected} | {r.observed} | **{r.status}** | {p} | {r.n_tasks} "
            f"| {r.significant_tasks} | {r.seeds} |"
        )
    return "\n".join(lines) + "\n"


def write(claims: pd.DataFrame, md: str, csv_path, md_path, stamp: dict | None = None) -> None:
    """claims.csv and claims.md, both with the provenance stamp (trailing columns, a first-line comment)."""
    with atomic_path(csv_path) as tmp:
        provenance.with_columns(claims.round(4), stamp).to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        tmp.write_text(provenance.markdown_header(stamp) + md)
