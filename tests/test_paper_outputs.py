"""The VPT paper's analyses on the paper config: a dry run of each lists exactly the jobs it needs."""

import subprocess
import sys
from collections import Counter

import pytest

from conftest import ROOT


def dry_run_jobs(workdir, target) -> Counter:
    cmd = [sys.executable, "-m", "snakemake", "-s", f"{ROOT}/Snakefile", "-n", "-c1", "-d", str(workdir)]
    proc = subprocess.run(
        [*cmd, target, "--configfile", f"{ROOT}/config/paper.yaml", "--quiet", "rules"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines()]
    return Counter({row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()})


@pytest.mark.parametrize(
    "target, expected",
    [
        # measured on the machine that runs it: no data, no training
        ("results/vpt_table12.csv", {"latency": 1, "cost_table": 1, "paper_name": 1, "paper_name_note": 1}),
        # the five vtab1k strategies' 5 seeds on each of the 19 tasks, one ensemble job per strategy and task
        ("results/vpt_figure15.png", {"ensemble": 5 * 19, "train": 5 * 19, "figure_ensemble": 1}),
        # three tasks, each strategy's first seed rebuilt for t-SNE
        ("results/vpt_figure9.png", {"tsne": 3, "train": 5 * 3, "figure_tsne_vpt_figure9": 1}),
        # example images: the splits of every task, nothing trained
        ("results/figure19.png", {"examples": 1, "splits": 24, "train": 0}),
    ],
)
def test_each_analysis_of_the_paper_config_asks_for_exactly_its_jobs(tmp_path, target, expected):
    jobs = dry_run_jobs(tmp_path, target)
    for rule, count in expected.items():
        assert jobs[rule] == count, (rule, jobs)
