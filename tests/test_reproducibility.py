"""The CPU knobs that change a float32 training's low bits, and the pinning that makes a job ignore them.

Each knob is shown to matter on a short pre-training of the mini ViT run without the pinning (the library code
called directly), then the same pre-training through `python -m vptft` gives the same weights byte for byte
whatever the caller's environment sets them to. Both settings of every knob exist on any AVX2 machine.
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from vptft.reproducibility import PINNED_ENV

PRETRAIN = {
    "n_train": 96,
    "n_heldout": 32,
    "epochs": 2,
    "batch_size": 32,
    "lr": 0.002,
    "weight_decay": 0.05,
    "warmup_epochs": 1,
    "seed": 0,
    "curve_points": 1,
    "min_heldout_top1": 0.0,
}
# knob -> two settings (the pinned one second); "OMP_NUM_THREADS" stands for the thread count
KNOBS = {
    "ATEN_CPU_CAPABILITY": ("default", "avx2"),
    "MKL_CBWR": ("COMPATIBLE", "AVX2"),
    "ONEDNN_MAX_CPU_ISA": ("SSE41", "AVX2"),
    "OMP_NUM_THREADS": ("2", "1"),
}
UNPINNED = (
    "import sys, json; from vptft.pretrain import run_pretrain; "
    "run_pretrain(json.loads(sys.argv[1]), 'mini_vit', sys.argv[2], device='cpu')"
)


def _caller_env(**knobs):
    env = {k: v for k, v in os.environ.items() if k not in {*PINNED_ENV, *KNOBS}}
    return {**env, **knobs}


def _weights_hash(out_dir):
    return hashlib.sha256((out_dir / "model.safetensors").read_bytes()).hexdigest()


def _pretrain(tmp_path, name, env, pinned):
    out = tmp_path / name
    spec = json.dumps({"backbone": "mini_vit", "pretrain": PRETRAIN, "device": "cpu"})
    if pinned:
        cmd = [
            sys.executable,
            "-m",
            "vptft",
            "pretrain",
            "--spec",
            spec,
            "--threads",
            "1",
            "--out-dir",
            str(out),
        ]
    else:
        cmd = [sys.executable, "-c", UNPINNED, json.dumps(PRETRAIN), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _weights_hash(out)


@pytest.fixture(scope="module")
def unpinned_reference(tmp_path_factory):
    """Every knob at its pinned setting, without the pinning: the run each knob's other setting differs from."""
    tmp = tmp_path_factory.mktemp("reference")
    return _pretrain(tmp, "reference", _caller_env(**{k: b for k, (_, b) in KNOBS.items()}), pinned=False)


@pytest.mark.parametrize("knob", KNOBS)
def test_each_knob_changes_an_unpinned_training(knob, unpinned_reference, tmp_path):
    settings = {k: b for k, (_, b) in KNOBS.items()}
    settings[knob] = KNOBS[knob][0]
    assert _pretrain(tmp_path, knob, _caller_env(**settings), pinned=False) != unpinned_reference


def test_a_job_ignores_the_callers_knobs(tmp_path):
    callers = {
        "others": {k: a for k, (a, _) in KNOBS.items()} | {"OPENBLAS_CORETYPE": "Prescott"},
        "pinned values": {k: b for k, (_, b) in KNOBS.items()},
        "none set": {},
    }
    hashes = {
        name: _pretrain(tmp_path, name.replace(" ", "_"), _caller_env(**knobs), True)
        for name, knobs in callers.items()
    }
    assert len(set(hashes.values())) == 1, hashes


# what FID computes (vptft.fid.frechet_distance through pytorch-fid): covariances and a matrix square root
FRECHET = (
    "import numpy as np, scipy.linalg; rng = np.random.default_rng(0); "
    "a, b = rng.normal(size=(300, 64)), 1.1 * rng.normal(size=(300, 64)) + 0.1; "
    "print(repr(scipy.linalg.sqrtm(np.cov(a, rowvar=False) @ np.cov(b, rowvar=False)).real.trace()))"
)


def _frechet(coretype, pinned):
    code = ("from vptft import reproducibility; reproducibility.pin(); " if pinned else "") + FRECHET
    env = _caller_env(OPENBLAS_CORETYPE=coretype)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_openblas_kernels_change_fid_unless_pinned():
    """numpy's and scipy's OpenBLAS (FID's covariances and matrix square root) pick kernels by CPU too."""
    assert _frechet("Prescott", pinned=False) != _frechet("Haswell", pinned=False)
    assert _frechet("Prescott", pinned=True) == _frechet("Haswell", pinned=True) == _frechet("SkylakeX", True)


def test_pin_refuses_once_torch_is_loaded():
    code = "import torch; from vptft import reproducibility; reproducibility.pin()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "before torch is imported" in proc.stderr
