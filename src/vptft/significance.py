"""VPT-deep against every other strategy, as the VPT paper's Table 10 and Figure 16 test it: per task a Welch
t-test over the seeds of the two strategies, across tasks a Wilcoxon signed-rank test of the per-task
differences of seed means. The tests are the claims report's (vptft.claims); a cell a test cannot fill says why.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vptft import claims


def against(runs: pd.DataFrame, reference: str, strategies: list[str], tasks: list[str]) -> pd.DataFrame:
    """Per (other strategy, task), and a row per strategy over the tasks (task 'all'): the difference of seed
    means reference - other, its p-value (Welch per task; Wilcoxon across tasks), the seeds or tasks it rests
    on, and `why` where no p-value exists (one seed, fewer than two tasks)."""
    runs = runs[runs.task.isin(tasks)]
    rows = []
    for other in [s for s in strategies if s != reference]:
        pairs = claims._paired(runs, reference, other)
        if pairs.empty:
            continue
        pairs = pairs.set_index("task").reindex([t for t in tasks if t in set(pairs.task)])
        for task, pair in pairs.iterrows():
            _, p = claims.stratified_welch([pair.strata])
            rows.append(
                {
                    "strategy": other,
                    "task": task,
                    "diff": pair["diff"],
                    "p": p,
                    "test": "welch",
                    "n": int(pair.seeds),
                    "why": "one seed" if pair.seeds < 2 else "",
                }
            )
        diffs = pairs["diff"].to_numpy(float)
        enough = len(diffs) >= 2
        rows.append(
            {
                "strategy": other,
                "task": "all",
                "diff": float(np.mean(diffs)),
                "p": claims.wilcoxon(diffs) if enough else np.nan,
                "test": "wilcoxon",
                "n": len(diffs),
                "why": "" if enough else "fewer than two tasks",
                "wins": int((diffs > 0).sum()),
                "p_floor": claims.wilcoxon_floor(len(diffs)),
            }
        )
    if not rows:
        raise ValueError(f"significance: no task has runs of {reference!r} and another of {strategies}")
    return pd.DataFrame(rows)


def matrix(tests: pd.DataFrame) -> pd.DataFrame:
    """The p-value matrix: a row per strategy, a column per task and `all` (Wilcoxon across tasks)."""
    order = list(dict.fromkeys(tests.task))
    table = tests.pivot(index="strategy", columns="task", values="p")
    return table.reindex(index=list(dict.fromkeys(tests.strategy)), columns=order)
