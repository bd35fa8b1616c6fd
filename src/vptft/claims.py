"""Which of the study's claims this run supports, how sure it is, and what it rests on.

C1  VPT vs FT at the vtab1k regime, by quadrant (task disparity x distribution disparity): the paper finds VPT
    ahead where task disparity is high or the data resemble the pre-training data, FT ahead for similar tasks on
    dissimilar data. Distribution disparity is the task's FID above / below the median of the configured tasks.
C2  Data scaling: FT - VPT grows with the train size (from the smallest to the largest size, per task).
C3  Neither Mixed nor FT-then-PT beats VPT (the paper: Mixed below FT and VPT, FT-then-PT between them): each
    is expected below VPT.
C4  One / few-shot: VPT ahead of FT.
C5  Spearman(FID, FT - VPT) > 0 over the tasks of low task disparity: the further the data from pre-training,
    the better FT does relative to VPT.

A direction holds when the mean difference and the count of tasks agree on it (a majority of tasks on its side).
Tests, one per claim:
- C1, C2, C4: Welch's t-test over seeds with the tasks as strata: is the mean difference over these tasks beyond
  the seed-to-seed spread? It needs >= 2 seeds of each strategy on each task (else `untested (one seed)`) and
  says nothing about tasks that were not run.
- C3: Wilcoxon signed-rank across tasks (paired task means): needs no seeds, but tasks (with 5 or fewer the
  smallest p it can reach is above 0.05).
- C5: Spearman's rank correlation over tasks, exact permutation p up to 9 tasks.
Status: `supported` (direction holds and p < alpha), `direction holds (not significant)`, `direction does not
hold (not significant)`, `contradicted` (the opposite direction holds and p < alpha), `untested (<why>)`,
`no data (<why>)`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from vptft import provenance
from vptft.io import atomic_path

SUPPORTED = "supported"
HOLDS = "direction holds (not significant)"
DOES_NOT_HOLD = "direction does not hold (not significant)"
SPLIT = "direction does not hold (the mean and the task count disagree)"
CONTRADICTED = "contradicted"
UNTESTED_ONE_SEED = "untested (one seed)"
NO_DATA = "no data"
STATUSES = (SUPPORTED, HOLDS, DOES_NOT_HOLD, SPLIT, CONTRADICTED)  # + "untested (...)", "no data (...)"
EXACT_SPEARMAN_MAX = 9  # tasks up to which Spearman's p is exact (9! orderings)


# ---- per-task pairs -------------------------------------------------------------------------------------------


def _paired(runs: pd.DataFrame, a: str, b: str, keys=("task",), sample_keys=("seed",)) -> pd.DataFrame:
    """Per task (and setting): the runs of strategies a and b, their means, a - b, and their seed spread."""
    rows = []
    for key, sub in runs.groupby(list(keys)):
        xa = sub[sub.strategy == a].sort_values(list(sample_keys)).test_top1.to_numpy(float)
        xb = sub[sub.strategy == b].sort_values(list(sample_keys)).test_top1.to_numpy(float)
        if not len(xa) or not len(xb):
            continue
        rows.append(
            {
                **dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                "diff": xa.mean() - xb.mean(),
                "strata": [(1.0, xa), (-1.0, xb)],
                "seeds": min(len(xa), len(xb)),
                "seed_std": float(np.mean([xa.std(), xb.std()])) if min(len(xa), len(xb)) > 1 else np.nan,
            }
        )
    return pd.DataFrame(rows)


# ---- tests ----------------------------------------------------------------------------------------------------


def stratified_welch(strata: list[list[tuple[float, np.ndarray]]]) -> tuple[float, float]:
    """(t, two-sided p) of the mean over strata of a contrast sum(coef x mean(samples)) per stratum, each
    sample's variance its own (Welch-Satterthwaite degrees of freedom). A stratum is [(coef, samples), ...]: VPT
    vs FT on a task is [(+1, vpt), (-1, ft)]. NaN where a sample has fewer than 2 values."""
    if not strata or any(len(x) < 2 for stratum in strata for _, x in stratum):
        return float("nan"), float("nan")
    k = len(strata)
    estimate = np.mean([sum(c * np.mean(x) for c, x in stratum) for stratum in strata])
    parts = [(c**2 * np.var(x, ddof=1) / len(x), len(x) - 1) for stratum in strata for c, x in stratum]
    variance = sum(v for v, _ in parts) / k**2
    if variance == 0:
        return (math.copysign(math.inf, estimate), 0.0) if estimate else (0.0, 1.0)
    df = sum(v for v, _ in parts) ** 2 / sum(v**2 / d for v, d in parts if v > 0)
    t = estimate / math.sqrt(variance)
    return float(t), float(2 * stats.t.sf(abs(t), df))


def wilcoxon(diff: np.ndarray) -> float:
    """Two-sided signed-rank p across tasks; 1 where every difference is zero."""
    diff = np.asarray(diff, float)
    diff = diff[~np.isnan(diff)]
    if len(diff) == 0:
        return float("nan")
    if np.allclose(diff, 0):
        return 1.0
    return float(stats.wilcoxon(diff).pvalue)


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p a signed-rank test of n nonzero differences can reach."""
    return min(1.0, 2 / 2**n)


def spearman(x, y) -> tuple[float, float]:
    """Spearman's rho and its two-sided p (exact over every ordering up to 9 points, else scipy's t
    approximation); NaN where either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or len(np.unique(x)) < 2 or len(np.unique(y)) < 2:
        return float("nan"), float("nan")
    rho = float(stats.spearmanr(x, y).statistic)
    if len(x) > EXACT_SPEARMAN_MAX:
        return rho, float(stats.spearmanr(x, y).pvalue)
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    orderings = np.array(list(itertools.permutations(ry)))
    rx_c = rx - rx.mean()
    ry_c = orderings - orderings.mean(axis=1, keepdims=True)
    rhos = ry_c @ rx_c / (np.sqrt((rx_c**2).sum()) * np.sqrt((ry_c**2).sum(axis=1)))
    return rho, float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))


def spearman_floor(n: int) -> float:
    """The smallest two-sided p an exact Spearman test over n distinct points can reach."""
    return min(1.0, 2 / math.factorial(n)) if n <= EXACT_SPEARMAN_MAX else 0.0


# ---- status ---------------------------------------------------------------------------------------------------


def direction(mean_diff: float, wins: int, n: int) -> int:
    """+1 where the mean and the majority of tasks are on the expected side, -1 where both are on the other,
    0 where they disagree or tie."""
    if mean_diff > 0 and wins * 2 > n:
        return 1
    if mean_diff < 0 and (n - wins) * 2 > n:
        return -1
    return 0


def status(sign: int, p: float, alpha: float) -> str:
    """The status word of a tested claim: its direction (`direction`) and whether p < alpha."""
    significant = not math.isnan(p) and p < alpha
    if sign > 0:
        return SUPPORTED if significant else HOLDS
    if sign < 0:
        return CONTRADICTED if significant else DOES_NOT_HOLD
    return SPLIT  # the mean and the task count disagree (or tie): no direction, whatever p says


def _would_change(state: str, p: float, alpha: float, wins: int, n: int, floor: float | None = None) -> str:
    if state.startswith("untested (one seed)"):
        return "runs with >= 2 seeds of each strategy (analyses.claims.seeds) would test it"
    if state.startswith(("untested", "no data")):
        return ""
    if floor is not None and floor >= alpha:
        return (
            f"with {n} tasks the smallest p this test can reach is {floor:.3g} >= alpha: it needs more tasks"
        )
    majority = wins - n // 2 if state in (SUPPORTED, HOLDS) else None
    text = f"p = {p:.3g} {'<' if p < alpha else '>='} alpha {alpha}"
    if state == SUPPORTED:
        text += "; a smaller gap or more seed spread would make it not significant"
    elif state == HOLDS:
        text += ": a steadier or larger gap (more seeds or tasks) could make it significant"
    elif state == CONTRADICTED:
        text += " in the opposite direction"
    if majority is not None:
        text += f"; {majority} task(s) flipping would undo the direction"
    return text


def _correlation_change(state: str, p: float, alpha: float, n: int) -> str:
    if state.startswith("untested"):
        return ""
    floor = spearman_floor(n)
    if floor >= alpha:
        return (
            f"with {n} tasks the smallest p this test can reach is {floor:.3g} >= alpha: it needs more tasks"
        )
    return f"p = {p:.3g} {'<' if p < alpha else '>='} alpha {alpha}"


def _row(claim, scope, expected, observed="", **values) -> dict:
    row = {
        "claim": claim,
        "scope": scope,
        "expected": expected,
        "observed": observed,
        "status": NO_DATA,
        "test": "",
        "n_tasks": 0,
        "seeds": 0,
        "mean_diff": np.nan,
        "statistic": np.nan,
        "p_value": np.nan,
        "seed_std": np.nan,
        "would_change": "",
    }
    return {**row, **values}


def _no_data(claim, scope, expected, why: str) -> dict:
    return _row(claim, scope, expected, observed=why, status=f"{NO_DATA} ({why})")


def _seed_tested(claim, scope, expected, pairs: pd.DataFrame, alpha: float, observed: str) -> dict:
    """A claim on the mean a - b over tasks (expected > 0), tested by the stratified Welch test over seeds."""
    n, wins = len(pairs), int((pairs["diff"] > 0).sum())
    sign = direction(pairs["diff"].mean(), wins, n)
    t, p = stratified_welch(list(pairs.strata))
    state = UNTESTED_ONE_SEED if math.isnan(p) else status(sign, p, alpha)
    return _row(
        claim,
        scope,
        expected,
        observed,
        status=state,
        test="Welch over seeds, tasks as strata",
        n_tasks=n,
        seeds=int(pairs.seeds.min()),
        mean_diff=float(pairs["diff"].mean()),
        statistic=t,
        p_value=p,
        seed_std=float(pairs.seed_std.mean()),
        would_change=_would_change(state, p, alpha, wins, n),
    )


# ---- the claims -----------------------------------------------------------------------------------------------


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
        return [_no_data("C1", "all tasks", "VPT > FT by quadrant", "no FT and VPT runs on vtab1k")]
    pairs["quadrant"] = pairs.task.map(quadrants(fid))
    rows = []
    for name, sub in pairs.groupby("quadrant"):
        ft_expected = name.startswith("low task disparity, high FID")
        if ft_expected:
            sub = sub.assign(diff=-sub["diff"], strata=[[(-c, x) for c, x in st] for st in sub.strata])
        wins = int((sub["diff"] > 0).sum())
        label, other = ("FT", "VPT") if ft_expected else ("VPT", "FT")
        rows.append(
            _seed_tested(
                "C1",
                f"{name}: {', '.join(sub.task)}",
                f"{label} > {other}",
                sub,
                alpha,
                f"{label} wins {wins}/{len(sub)} tasks, mean {label} - {other} {sub['diff'].mean():+.2f}",
            )
        )
    return rows


def c2(scaling: pd.DataFrame | None, alpha: float) -> list[dict]:
    expected = "FT - VPT grows with train size"
    if scaling is None or scaling.empty:
        return [_no_data("C2", "scaling", expected, "no scaling runs")]
    pairs = _paired(scaling, "full", "vpt_deep", keys=("task", "size"))
    if pairs.empty or pairs["size"].nunique() < 2:
        return [_no_data("C2", "scaling", expected, "FT and VPT at fewer than two sizes")]
    growth = []
    for task, sub in pairs.groupby("task"):
        if sub["size"].nunique() < 2:
            continue
        small, large = sub.loc[sub["size"].idxmin()], sub.loc[sub["size"].idxmax()]
        # (FT - VPT at the largest size) - (FT - VPT at the smallest): four independent seed samples
        growth.append(
            {
                "task": task,
                "diff": large["diff"] - small["diff"],
                "strata": large.strata + [(-c, x) for c, x in small.strata],
                "seeds": min(large.seeds, small.seeds),
                "seed_std": np.nanmean([large.seed_std, small.seed_std]),
                "small": int(small["size"]),
                "large": int(large["size"]),
            }
        )
    growth = pd.DataFrame(growth)
    sizes = sorted(pairs["size"].unique())
    rho = spearman(pairs["size"], pairs["diff"])[0] if len(sizes) >= 3 else np.nan
    trend = (
        f"; Spearman(size, FT - VPT) = {rho:.2f} over {len(pairs)} task-sizes"
        if not math.isnan(rho)
        else f"; {len(sizes)} sizes: no rank trend reported"
    )
    observed = (
        f"FT - VPT {pairs[pairs['size'] == sizes[0]]['diff'].mean():+.2f} at n={int(sizes[0])}, "
        f"{pairs[pairs['size'] == sizes[-1]]['diff'].mean():+.2f} at n={int(sizes[-1])}; grows on "
        f"{int((growth['diff'] > 0).sum())}/{len(growth)} tasks" + trend
    )
    scope = f"{len(growth)} tasks, sizes {', '.join(str(int(s)) for s in sizes)}"
    return [_seed_tested("C2", scope, expected, growth, alpha, observed)]


def c3(vtab: pd.DataFrame, alpha: float) -> list[dict]:
    rows = []
    for strategy, name in (("mixed", "Mixed"), ("ft_then_pt", "FT-then-PT")):
        expected = f"{name} < VPT"
        pairs = _paired(vtab, "vpt_deep", strategy)  # expected > 0: VPT above
        if pairs.empty:
            rows.append(_no_data("C3", f"{name} vs VPT", expected, f"no {name} and VPT runs on vtab1k"))
            continue
        n, wins = len(pairs), int((pairs["diff"] > 0).sum())
        sign = direction(pairs["diff"].mean(), wins, n)
        p = wilcoxon(pairs["diff"])
        state = status(sign, p, alpha)
        rows.append(
            _row(
                "C3",
                f"{name} vs VPT",
                expected,
                f"{name} below VPT on {wins}/{n} tasks, mean VPT - {name} {pairs['diff'].mean():+.2f}",
                status=state,
                test="Wilcoxon signed-rank across tasks",
                n_tasks=n,
                seeds=int(pairs.seeds.min()),
                mean_diff=float(pairs["diff"].mean()),
                p_value=p,
                seed_std=float(pairs.seed_std.mean()),
                would_change=_would_change(state, p, alpha, wins, n, floor=wilcoxon_floor(n)),
            )
        )
    return rows


def c4(fewshot: pd.DataFrame | None, alpha: float) -> list[dict]:
    if fewshot is None or fewshot.empty:
        return [_no_data("C4", "few-shot", "VPT > FT", "no few-shot runs")]
    rows = []
    for (shots, selection), sub in fewshot.groupby(["shots", "selection"]):
        # random selection: every draw x seed is a sample of the task
        pairs = _paired(sub, "vpt_deep", "full", sample_keys=("draw", "seed"))
        if pairs.empty:
            continue
        wins = int((pairs["diff"] > 0).sum())
        rows.append(
            _seed_tested(
                "C4",
                f"{int(shots)}-shot, {selection} selection",
                "VPT > FT",
                pairs,
                alpha,
                f"VPT wins {wins}/{len(pairs)} tasks, mean VPT - FT {pairs['diff'].mean():+.2f}",
            )
        )
    return rows or [_no_data("C4", "few-shot", "VPT > FT", "no FT and VPT few-shot runs")]


def c5(vtab: pd.DataFrame, fid: pd.DataFrame, alpha: float) -> list[dict]:
    expected = "Spearman(FID, FT - VPT) > 0"
    pairs = _paired(vtab, "full", "vpt_deep")
    if pairs.empty:
        return [_no_data("C5", "low task disparity", expected, "no FT and VPT runs on vtab1k")]
    pairs = pairs[pairs.task.isin(fid.index)]
    low = pairs[pairs.task.map(fid.task_disparity) == "low"]
    scope = f"low task disparity: {len(low)} tasks with FID"
    if len(low) < 3:
        return [
            _row(
                "C5",
                scope,
                expected,
                f"{len(low)} low-disparity task(s) with FT, VPT and FID",
                status=f"untested ({len(low)} task(s): a rank correlation needs at least 3)",
                n_tasks=len(low),
                seeds=int(low.seeds.min()) if len(low) else 0,
            )
        ]
    rho, p = spearman(low.task.map(fid.fid_mean), low["diff"])
    rho_all, p_all = spearman(pairs.task.map(fid.fid_mean), pairs["diff"])
    sign = 0 if math.isnan(rho) else int(np.sign(rho))
    state = status(sign, p, alpha) if not math.isnan(rho) else "untested (constant FID or FT - VPT)"
    return [
        _row(
            "C5",
            scope,
            expected,
            f"rho = {rho:.2f} over {len(low)} tasks (all {len(pairs)} tasks: rho = {rho_all:.2f}, "
            f"p = {p_all:.3f})",
            status=state,
            test="Spearman over tasks (exact p up to 9)",
            n_tasks=len(low),
            seeds=int(low.seeds.min()),
            mean_diff=float(low["diff"].mean()),
            statistic=rho,
            p_value=p,
            seed_std=float(low.seed_std.mean()),
            would_change=_correlation_change(state, p, alpha, len(low)),
        )
    ]


def evaluate(runs: dict[str, pd.DataFrame], fid: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Every claim's rows from the collected runs tables ({family: runs}) and fid.csv (indexed by task)."""
    vtab = runs["vtab1k"]
    vtab = vtab[vtab.regime == "vtab1k"]
    rows = (
        c1(vtab, fid, alpha)
        + c2(runs.get("scaling"), alpha)
        + c3(vtab, alpha)
        + c4(runs.get("fewshot"), alpha)
        + c5(vtab, fid, alpha)
    )
    return pd.DataFrame(rows)


OVERFIT_RISE = 0.10  # the test loss ends this much (relative) above its lowest evaluation


def overfits(curve: pd.DataFrame, rise: float = OVERFIT_RISE) -> bool:
    """Han et al. section 5.1's overfitting, as a rule: the test loss at the last evaluation is more than `rise`
    (relative) above its lowest evaluation, while the train loss at the last epoch is below the train loss at the
    epoch of that lowest test loss (the run kept fitting its train set as its test loss rose)."""
    curve = curve.sort_values("epoch")
    tested = curve.dropna(subset=["test_loss"])
    if len(tested) < 2:
        return False
    best = tested.loc[tested.test_loss.idxmin()]
    rose = tested.test_loss.iloc[-1] > (1 + rise) * best.test_loss
    return bool(rose and curve.train_loss.iloc[-1] < best.train_loss)


def overfitting_count(vtab: pd.DataFrame, curves: pd.DataFrame, rise: float = OVERFIT_RISE) -> pd.DataFrame:
    """Per strategy: the final vtab1k runs, how many overfit by `overfits`, their share (%), and the tasks where
    at least one seed does. `curves`: every run's curves tagged with task, strategy and seed."""
    flags = {
        key: overfits(curve, rise) for key, curve in curves.groupby(["task", "strategy", "seed"], sort=False)
    }
    rows = []
    for strategy, runs in vtab.groupby("strategy", sort=False):
        hits = [(r.task, r.seed) for r in runs.itertuples() if flags.get((r.task, strategy, r.seed), False)]
        rows.append(
            {
                "strategy": strategy,
                "runs": len(runs),
                "overfit": len(hits),
                "share_pct": 100.0 * len(hits) / len(runs) if len(runs) else float("nan"),
                "tasks": ", ".join(sorted({task for task, _ in hits})),
            }
        )
    return pd.DataFrame(rows, columns=["strategy", "runs", "overfit", "share_pct", "tasks"])


def overfitting_markdown(counts: pd.DataFrame, rise: float = OVERFIT_RISE) -> str:
    """The claims report's section on overfitting (Han et al. section 5.1): the rule, then a row per strategy."""
    lines = [
        "",
        "## Overfitting (section 5.1): runs whose test loss rises while their train loss falls",
        "",
        (
            f"A final vtab1k run counts when its test loss at the last evaluation is more than {rise:.0%} above "
            "its lowest evaluation and its train loss at the last epoch is below the train loss at the epoch of "
            "that lowest test loss. A count, not a test: the study reads more overfitting under full finetuning."
        ),
        "",
        "| strategy | runs | overfit | share | tasks |",
        "|---|---|---|---|---|",
    ]
    for r in counts.itertuples():
        lines.append(f"| {r.strategy} | {r.runs} | {r.overfit} | {r.share_pct:.0f} % | {r.tasks or '-'} |")
    return "\n".join(lines) + "\n"


def markdown(claims: pd.DataFrame, benchmark: str, backbone: str, alpha: float) -> str:
    legend = (
        f"A claim is **supported** when its direction holds (the mean difference and a majority of tasks agree) "
        f"and its test is significant at alpha = {alpha}; `direction holds (not significant)` where the test is "
        "not; `contradicted` where the opposite direction holds significantly; no direction where the mean and the "
        "task count disagree; `untested (one seed)` where the "
        "test needs a seed-to-seed spread that one seed does not give. Tests: C1, C2, C4 Welch's t-test over "
        "seeds with tasks as strata (about these tasks only); C3 Wilcoxon signed-rank across tasks; C5 Spearman "
        "over tasks (exact p). `rests on` = tasks x seeds per strategy."
    )
    lines = [
        f"# Claims of the study and what this run says ({benchmark} benchmark, backbone {backbone})",
        "",
        legend,
        "",
        "| claim | scope | expected | observed | status | p | rests on | what would change it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in claims.itertuples():
        p = "n/a" if pd.isna(r.p_value) else f"{r.p_value:.3g}"
        tasks = f"{r.n_tasks} task{'s' if r.n_tasks != 1 else ''}"
        rests = f"{tasks} x {r.seeds} seed{'s' if r.seeds != 1 else ''}" if r.n_tasks else "-"
        lines.append(
            f"| {r.claim} | {r.scope} | {r.expected} | {r.observed} | **{r.status}** | {p} | {rests} "
            f"| {r.would_change} |"
        )
    return "\n".join(lines) + "\n"


def write(claims: pd.DataFrame, md: str, csv_path, md_path, stamp: dict | None = None) -> None:
    """claims.csv and claims.md, both with the provenance stamp (trailing columns, a first-line comment)."""
    with atomic_path(csv_path) as tmp:
        provenance.with_columns(claims.round(4), stamp).to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        tmp.write_text(provenance.markdown_header(stamp) + md)
