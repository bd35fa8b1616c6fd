"""A training job killed mid-run leaves no declared output; the rerun resumes from its checkpoint."""

import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, reduced_test_config

pytestmark = pytest.mark.workflow


def test_killed_train_job_leaves_no_output_and_resumes(tmp_path):
    config = reduced_test_config(["newshapes_src"], ["vpt_deep"])
    config["train"]["epochs"] = 60  # long enough to be killed mid-run
    config["train"]["checkpoint_minutes"] = (
        0  # a checkpoint every epoch, so one exists when the job is killed
    )
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    runs = work / "results/mini/runs/mini_vit/newshapes_src/vtab1k/vpt_deep"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-c1",
        "-s",
        f"{ROOT}/Snakefile",
        "-d",
        str(work),
        f"--configfile={configfile}",
        str((runs / "seed1/metrics.json").relative_to(work)),
    ]
    snakemake = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not (runs / "seed0/checkpoint.pt").exists():
        if snakemake.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the train job never checkpointed:\n" + snakemake.communicate()[0][-3000:])
        time.sleep(0.1)
    job = subprocess.run(
        ["pgrep", "-f", f"vptft train .*--runs-dir {runs.relative_to(work)}"], capture_output=True, text=True
    ).stdout.split()
    assert job, "train job process not found"
    for pid in job:
        subprocess.run(["kill", f"-{signal.SIGKILL.value}", pid])
    output, _ = snakemake.communicate(timeout=120)
    assert snakemake.returncode != 0
    declared = [
        runs / f"seed{s}" / name
        for s in (0, 1)
        for name in ("metrics.json", "curves.csv", "tuned.safetensors")
    ]
    assert not any(path.exists() for path in declared), output[-2000:]
    assert (runs / "seed0/checkpoint.pt").exists()  # the resume state survives

    rerun = subprocess.run([*cmd, "--rerun-incomplete"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert all(path.exists() for path in declared)
    log = (work / "results/mini/logs/train/mini_vit/newshapes_src/vtab1k/vpt_deep.log").read_text()
    assert "[fit] resumed from" in log
    assert not any(runs.glob("seed*/checkpoint.pt"))
