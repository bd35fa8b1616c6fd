"""The warm worker: a job run through it behaves as the same `python -m vptft` run by itself - its streams,
working directory, exit status, signals (SIGTERM reaches the job; a killed client takes its job with it) and
the files it writes, byte for byte."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from vptft import worker

PRETRAIN = {
    "n_train": 96,
    "n_heldout": 32,
    "epochs": 2,
    "batch_size": 32,
    "lr": 0.002,
    "min_heldout_top1": 0.0,
}


def _pretrain_args(out, **sizes):
    spec = {
        "backbone": "mini_vit",
        "pretrain": {
            **PRETRAIN,
            "seed": 0,
            "weight_decay": 0.05,
            "warmup_epochs": 1,
            "curve_points": 1,
            **sizes,
        },
        "device": "cpu",
    }
    return ["pretrain", "--spec", json.dumps(spec), "--threads", "1", "--out-dir", str(out)]


@pytest.fixture(scope="module")
def running_worker(tmp_path_factory):
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    saved = os.environ.pop(worker.ENV_VAR, None)
    process = worker.start(str(log))
    name = os.environ.pop(worker.ENV_VAR)
    deadline = time.monotonic() + 120
    while "ready" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    yield name, process, log
    worker.stop(process)
    assert process.wait(timeout=30) == 0
    if saved is not None:
        os.environ[worker.ENV_VAR] = saved


def _vptft(args, cwd, name=None, wait=True):
    env = {k: v for k, v in os.environ.items() if k != worker.ENV_VAR}
    if name:
        env[worker.ENV_VAR] = name
    cmd = [sys.executable, "-m", "vptft", *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def _jobs(log):
    return log.read_text().count("[worker] job ") // 2  # a line when it starts, one when it ends


def test_a_job_in_the_worker_writes_what_a_plain_job_writes(running_worker, tmp_path):
    name, _, log = running_worker
    before = _jobs(log)
    plain = _vptft(_pretrain_args("plain"), tmp_path)
    warm = _vptft(_pretrain_args("warm"), tmp_path, name)
    assert plain.returncode == warm.returncode == 0, plain.stderr[-2000:] + warm.stderr[-2000:]
    assert _jobs(log) == before + 1  # the worker ran the second, in the client's directory
    digest = {
        run: hashlib.sha256((tmp_path / run / "model.safetensors").read_bytes()).hexdigest()
        for run in ("plain", "warm")
    }
    assert digest["plain"] == digest["warm"]
    reports = [json.loads((tmp_path / run / "pretrain.json").read_text()) for run in ("plain", "warm")]
    assert (
        reports[0]["curves"] == reports[1]["curves"] and reports[0]["arithmetic"] == reports[1]["arithmetic"]
    )
    assert (
        "[pretrain] held-out source top-1" in warm.stdout
    )  # the job's own output reached the client's stream


def test_a_failing_job_fails_the_same_way(running_worker, tmp_path):
    name, _, _ = running_worker
    args = ["select", "--spec", "{}", "--chunks", "missing.csv", "--out", "out.csv"]
    plain, warm = _vptft(args, tmp_path), _vptft(args, tmp_path, name)
    assert plain.returncode == warm.returncode == 1
    assert "missing.csv" in warm.stderr and plain.stderr.splitlines()[-1] == warm.stderr.splitlines()[-1]


def test_sigterm_reaches_the_job_and_its_status_comes_back(running_worker, tmp_path):
    name, _, log = running_worker
    before = _jobs(log)
    client = _vptft(_pretrain_args("out", n_train=500, epochs=400), tmp_path, name, wait=False)
    deadline = time.monotonic() + 60
    while log.read_text().count("[worker] job ") <= 2 * before:
        assert client.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(2)
    client.send_signal(signal.SIGTERM)
    client.wait(timeout=60)
    assert client.returncode == 128 + signal.SIGTERM  # the engine's exit after SIGTERM, as a plain job
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_killed_client_takes_its_job_with_it(running_worker, tmp_path):
    name, _, log = running_worker
    client = _vptft(_pretrain_args("out", n_train=500, epochs=400), tmp_path, name, wait=False)
    deadline = time.monotonic() + 60
    while not log.read_text().rstrip().endswith(str(tmp_path)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    job = int(log.read_text().rstrip().splitlines()[-1].split()[2].rstrip(":"))
    client.send_signal(signal.SIGKILL)
    client.wait()
    deadline = time.monotonic() + 30
    while f"job {job} ended" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    assert f"job {job} ended: -{signal.SIGKILL.value}" in log.read_text()


def test_the_worker_refuses_another_interpreter(running_worker, tmp_path):
    name, _, _ = running_worker
    request = {
        "argv": ["--help"],
        "cwd": str(tmp_path),
        "env": {},
        "umask": 0o22,
        "code": {"executable": "x"},
    }
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(worker._address(name))
    worker._send(conn, request, fds=(0, 1, 2))
    assert "refused" in worker._receive(conn)


def test_messages_sent_back_to_back_are_read_one_at_a_time():
    """A job that ends at once (a select job: 0.0 s) has its status sent right behind its pid; the client must
    read both (a fresh-clone run failed with "the worker ended while job ... ran" when one read took both)."""
    client, served = socket.socketpair()
    with client, served:
        worker._send(client, {"argv": ["select"]}, fds=(0, 1, 2))
        worker._send(served, {"pid": 7})
        worker._send(served, {"status": 0})
        served.shutdown(socket.SHUT_WR)
        request, fds = worker._receive(served, with_fds=True)
        assert request == {"argv": ["select"]} and len(fds) == 3
        for fd in fds:
            os.close(fd)
        assert worker._receive(client) == {"pid": 7}
        assert worker._receive(client) == {"status": 0}
        assert worker._receive(client) is None  # and then the peer is gone


def test_without_a_worker_the_job_runs_itself(tmp_path):
    proc = _vptft(
        ["select", "--spec", "{}", "--chunks", "none.csv", "--out", "o.csv"],
        tmp_path,
        "vptft-worker-that-is-not-there",
    )
    assert proc.returncode == 1 and "none.csv" in proc.stderr
