"""The CPU arithmetic every job pins, so that one config gives the same numbers on any x86-64 machine with AVX2.

The low bits of a float32 training step depend on which vector kernels the libraries pick for the CPU they find:
torch's own kernels (ATen), MKL's matrix products, oneDNN's convolutions, and the OpenBLAS under numpy and scipy
(FID's covariances and matrix square root); and, through how work is split, on the thread count. Thousands of
steps amplify them into different accuracies. `pin()` sets each to a level every AVX2 machine has, overriding
whatever the caller's environment says; it runs before torch is imported (`python -m vptft`, the job worker).
What stays different elsewhere (GPUs, ARM, another torch) is measured in the README ("Reproducibility").
"""

from __future__ import annotations

import os
import sys

# Read by each library once, when it loads or first computes: they must be set before torch or numpy loads.
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's vectorised kernels (default on AVX-512 machines: avx512)
    # MKL's code branch (conditional numerical reproducibility); STRICT: also its small matrix products, which
    # otherwise differ between Intel and AMD CPUs (attention's q k^T), at no measured cost
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN, should anything reach it (pin_torch turns it off on the CPU)
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's and scipy's OpenBLAS kernels (the AVX2 ones)
    "OPENBLAS_NUM_THREADS": "1",  # OpenBLAS splits sums by thread count
}


_flushes_denormals: bool | None = None


def pin() -> None:
    """Set the pinned environment of this process (and of what it starts); refuse once torch is loaded,
    since its kernels would already be chosen."""
    if "torch" in sys.modules:
        raise RuntimeError("vptft.reproducibility.pin() must run before torch is imported")
    os.environ.update(PINNED_ENV)


def pin_torch(threads: int | None) -> None:
    """The torch side: oneDNN off on the CPU (its convolution kernels follow the CPU's cache sizes; the patch
    embedding then runs on MKL's GEMM, pinned above, at the same speed for a ViT), denormal floats flushed to
    zero (MKL's reproducible GEMM kernels crawl on them: a finetuned ViT-B's prompt-tuning step took 4x longer)
    and a fixed thread count (the job's configured threads, not the cores Snakemake happened to grant)."""
    import torch

    torch.backends.mkldnn.enabled = False
    global _flushes_denormals
    _flushes_denormals = torch.set_flush_denormal(True)  # False where the CPU cannot (no SSE3)
    if threads:
        torch.set_num_threads(threads)


def facts() -> dict:
    """What a result's numbers depend on, recorded in its provenance."""
    import torch

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "flush_denormal": _flushes_denormals,  # None: pin_torch did not run (an in-process test)
        **{key: os.environ.get(key) for key in PINNED_ENV},
    }
