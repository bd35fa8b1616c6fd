"""A killed training run resumes from its checkpoint and ends with metrics identical to an uninterrupted run."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "toy_fit.py"


def start(checkpoint, out):
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(checkpoint), str(out)], stderr=subprocess.PIPE, text=True
    )


def run(checkpoint, out):
    proc = start(checkpoint, out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(Path(out).read_text())


def wait_for_epoch(checkpoint, epoch, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        try:
            state = torch.load(checkpoint, weights_only=True) if checkpoint.exists() else None
        except (RuntimeError, EOFError, OSError):  # replaced while we read it: try again
            state = None
        if state and state["next_epoch"] >= epoch:
            return
        time.sleep(0.05)
    raise TimeoutError("no checkpoint appeared")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    return run("-", tmp / "out.json")


def test_sigkill_then_rerun_gives_identical_metrics(uninterrupted, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    proc = start(checkpoint, tmp_path / "out.json")
    wait_for_epoch(checkpoint, 2, proc)
    time.sleep(0.3)  # mid-epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "out.json").exists()
    resumed = run(checkpoint, tmp_path / "out.json")
    assert resumed == uninterrupted


def test_sigterm_saves_a_checkpoint_mid_epoch_and_resumes_identically(uninterrupted, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    proc = start(checkpoint, tmp_path / "out.json")
    wait_for_epoch(checkpoint, 1, proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    state = torch.load(checkpoint, weights_only=True)
    assert state["next_batch"] > 0  # saved where it stopped, not at the last epoch end
    resumed = run(checkpoint, tmp_path / "out.json")
    assert resumed == uninterrupted
