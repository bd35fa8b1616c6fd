"""`snakemake --profile slurm` against a real single-node SLURM (Debian's slurmctld + slurmd + munge, one fake
GPU as GRES), started and stopped by scripts/local_slurm.sh. Skips with its reason where the scheduler cannot be
installed; in CI (CI=true) that is a failure instead.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, reduced_test_config

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]
SCRIPT = f"{ROOT}/scripts/local_slurm.sh"
STATE = "/tmp/vptft-slurm-test"
RUN_LIMIT = 600  # seconds; every wait is bounded (snakemake ignores SIGTERM while jobs run)


def _unavailable_reason():
    if os.geteuid() != 0:
        return "installing and starting SLURM needs root"
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        return "neither SLURM nor apt-get is available"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SLURM test cannot run in CI: {reason}")
        pytest.skip(reason)
    env = {**os.environ, "VPTFT_SLURM_STATE": STATE}
    # "as found" = after Debian's packages are in: their own files (e.g. plugstack.conf) are not the test's
    install = subprocess.run(
        ["timeout", "-s", "KILL", "300", SCRIPT, "install"], env=env, capture_output=True, text=True
    )
    assert install.returncode == 0, install.stdout + install.stderr
    etc_before = _etc_slurm()
    up = subprocess.run(
        ["timeout", "-s", "KILL", "300", SCRIPT, "up"], env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stdout + up.stderr
    yield
    subprocess.run(["timeout", "-s", "KILL", "60", SCRIPT, "down"], env=env, capture_output=True)
    assert _etc_slurm() == etc_before  # the test cluster's config is gone, the host's own untouched


def _etc_slurm():
    """Every file under /etc/slurm with its content hash (the test cluster must not write there)."""
    import hashlib

    root = Path("/etc/slurm")
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def profile_home(tmp_path_factory, cluster):
    """$XDG_CONFIG_HOME with the shipped cluster profile, adapted to this accounting-free test cluster."""
    xdg = tmp_path_factory.mktemp("xdg")
    profile = yaml.safe_load(Path(f"{ROOT}/profiles/slurm/config.yaml").read_text())
    profile.update(
        {
            "jobs": 2,
            "latency-wait": 5,
            "retries": 0,
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": 8,
            "slurm-keep-successful-logs": True,
            "default-resources": {"slurm_partition": "debug", "mem_mb": 1000, "runtime": 10},
        }
    )
    (xdg / "snakemake" / "slurm").mkdir(parents=True)
    (xdg / "snakemake" / "slurm" / "config.yaml").write_text(yaml.safe_dump(profile))
    return xdg


def _config(tmp_path, gpu, epochs=2):
    # the cluster path, not the strategies, is under test here: two strategies keep it short
    config = reduced_test_config(["newshapes_src"], ["linear", "vpt_deep"])
    config["train"].update({"seeds": [0], "epochs": epochs})
    config["resources"] = {"train": {"gpu": gpu, "mem_mb": 1500, "runtime": 10}}
    path = tmp_path / f"config_gpu{gpu}_e{epochs}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _snakemake(args, workdir, xdg=None, wait=True):
    env = {**os.environ}
    if xdg:
        env["XDG_CONFIG_HOME"] = str(xdg)
    cmd = [
        "timeout",
        "-s",
        "KILL",
        str(RUN_LIMIT),
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        f"{ROOT}/Snakefile",
        "-d",
        str(workdir),
        *args,
    ]
    workdir.mkdir(
        parents=True, exist_ok=True
    )  # the plugin writes .snakemake/slurm_logs/ in the current directory
    if not wait:  # output to a file: a full pipe would stall snakemake while the test polls the scheduler
        with open(workdir / "snakemake.out", "w") as log:
            return subprocess.Popen(cmd, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True)


def _scheduler_job_ids():
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def slurm_run(profile_home, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slurm")
    work = tmp / "work"
    proc = _snakemake(
        ["--profile", "slurm", "results/table1.csv", f"--configfile={_config(tmp, gpu=1)}"],
        work,
        profile_home,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work, proc.stdout + proc.stderr


def test_every_job_went_through_sbatch(slurm_run):
    work, log = slurm_run
    assert "Using profiles slurm" in log
    logs = list((work / ".snakemake" / "slurm_logs").rglob("*.log"))
    submitted = {p.stem for p in logs}
    assert submitted and submitted <= _scheduler_job_ids()  # the plugin's job ids are the scheduler's
    kinds = {p.relative_to(work / ".snakemake" / "slurm_logs").parts[0] for p in logs}
    for rule in ("pretrain", "sweep", "select", "train", "table"):
        assert f"rule_{rule}" in kinds, kinds
    assert any(kind.startswith("group_data") for kind in kinds)  # download + splits bundled in one submission
    assert (work / "results" / "table1.csv").exists()


def test_gpu_rule_was_given_a_gpu(slurm_run):
    work, _ = slurm_run
    train_logs = {p.stem: p for p in (work / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log")}
    metrics = json.loads(next((work / "results").rglob("vpt_deep/seed0/metrics.json")).read_text())
    job_id = metrics["provenance"]["slurm_job_id"]
    assert job_id in train_logs and "vpt_deep" in str(train_logs[job_id])  # the train job of this strategy
    job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert re.search(r"gres/gpu[:=]1|gpu:1", job), job
    assert metrics["provenance"]["cuda_visible_devices"] == "0"
    pretrain_logs = list((work / ".snakemake" / "slurm_logs" / "rule_pretrain").rglob("*.log"))
    pretrain_job = subprocess.run(
        ["scontrol", "show", "job", pretrain_logs[0].stem], capture_output=True, text=True
    ).stdout
    assert "gpu" not in pretrain_job.lower()  # rules that need no GPU request none


def test_cluster_results_equal_a_local_run(slurm_run, tmp_path):
    work, _ = slurm_run
    local = tmp_path / "local"
    proc = _snakemake(["-c2", "results/table1.csv", f"--configfile={_config(tmp_path, gpu=0)}"], local)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the same numbers; only the config hash differs (the two configs ask for different resources)
    tables = [pd.read_csv(root / "results/table1.csv") for root in (local, work)]
    assert tables[0].config_hash[0] != tables[1].config_hash[0]
    pd.testing.assert_frame_equal(*(t.drop(columns="config_hash") for t in tables))


def test_scancel_is_reported_failed_and_rerun_completes(profile_home, tmp_path):
    work = tmp_path / "work"
    # one linear final run (400 epochs of a head on cached features: long enough to be cancelled while it runs,
    # short to sweep and re-run), not the whole table
    target = "results/mini/runs/mini_vit/newshapes_src/vtab1k/linear/seed0/metrics.json"
    args = ["--profile", "slurm", target, f"--configfile={_config(tmp_path, gpu=0, epochs=400)}"]
    run = _snakemake(args, work, profile_home, wait=False)
    deadline = time.monotonic() + RUN_LIMIT
    cancelled = None
    while cancelled is None:
        assert run.poll() is None and time.monotonic() < deadline, "no train job to cancel"
        jobs = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True
        ).stdout.splitlines()
        for line in jobs:
            job_id, _, comment = line.partition(" ")
            if comment.startswith("rule_train"):
                subprocess.run(["scancel", job_id], check=True)
                cancelled = job_id
        time.sleep(0.5)
    run.wait(timeout=RUN_LIMIT)
    output = (work / "snakemake.out").read_text()
    assert run.returncode not in (0, -signal.SIGKILL)
    assert cancelled in output and "CANCELLED" in output
    rerun = _snakemake(args, work, profile_home)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert (work / target).exists()
