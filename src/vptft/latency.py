"""The VPT paper's Table 12 and Figures 18-19, measured on the machine that runs the job: train and test latency
and peak memory of each strategy (and prompt length), and the forward GFLOPs counted by torch's FlopCounterMode.

Each measurement runs in a fresh forked child, so a peak is that configuration's alone: on a GPU the peak of
`torch.cuda.max_memory_allocated` above what the built model holds; on the CPU the peak resident set (Linux'
VmHWM, reset through /proc/self/clear_refs) above the resident set after building the model. Training goes
through vptft.engine.fit (the final runs' loop: a strategy that trains its head on cached features does so
here too, after one feature pass it is not timed for); testing is one no-grad forward per batch. Weights are
random: time and memory do not depend on them."""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

COLUMNS = [
    "strategy",
    "prompt_length",
    "batch_size",
    "train_ms_per_image",
    "test_ms_per_image",
    "train_peak_mb",
    "test_peak_mb",
    "gflops_per_image",
    "tuned_params",
    "cached_features",
    "device",
    "memory_measure",
]
NUM_CLASSES = 10


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakMemory:
    """Peak memory (MB) of what runs inside it, above the level at entry. On the CPU: the kernel's peak RSS
    (VmHWM, reset at entry) and, since some kernels update it only lazily (a freed block's pages can leave it
    unrecorded), the RSS sampled every millisecond by a thread - the larger of the two."""

    def __init__(self, device: torch.device):
        self.device, self.mb = device, float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.start = _rss_kb("VmRSS") * 1024
            self._sampled, self._stop = self.start, threading.Event()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._sampled = max(self._sampled, _rss_kb("VmRSS") * 1024)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._sampler.join()
            peak = max(_rss_kb("VmHWM") * 1024, self._sampled)
        self.mb = max(0, peak - self.start) / 2**20
        return False


def memory_measure(device: torch.device) -> str:
    return "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"


def _build(spec: dict, strategy: str, prompt_length: int | None):
    from vptft.backbones.factory import create_backbone, input_config
    from vptft.strategies import get_strategy

    torch.manual_seed(0)
    spec_ = get_strategy(strategy)
    backbone = create_backbone(spec["backbone"], pretrained=False)
    values = dict(spec.get("options", {}).get(strategy, {}))
    if prompt_length is not None:
        values["prompt_length"] = prompt_length
    model = spec_.build(backbone, NUM_CLASSES, head_init="zero", **values)
    return model, input_config(backbone, spec["normalization"])


def _images(n: int, size):
    from vptft.data import SplitData

    g = torch.Generator().manual_seed(0)
    return SplitData(
        torch.randint(0, 256, (n, 3, *size), generator=g, dtype=torch.uint8),
        torch.randint(0, NUM_CLASSES, (n,), generator=g),
    )


def measure_train(spec: dict, strategy: str, prompt_length: int | None) -> dict:
    """ms per image of `repeats` optimiser steps through engine.fit, and their peak memory."""
    from vptft import engine
    from vptft.strategies import get_strategy

    torch.set_num_threads(spec["threads"])
    device = engine.pick_device(spec["device"])
    model, input_cfg = _build(spec, strategy, prompt_length)
    model.to(device)
    batch, steps = spec["batch_size"], spec["repeats"]
    cached = get_strategy(strategy).cache_features
    data = _images(batch * steps, input_cfg["size"])
    cfg = engine.FitConfig(
        optimizer=get_strategy(strategy).optimizer,
        lr=1e-3,
        weight_decay=1e-4,
        epochs=1,
        warmup_epochs=0,
        batch_size=batch,
        seed=0,
        eval_epochs=set(),
        precision=spec["precision"],
    )
    cache = {}
    if cached:  # the feature pass a cached strategy makes once per run: not part of its step time
        engine.cached_features(model, {"train": data}, cache, input_cfg, device, cfg.precision)
    with PeakMemory(device) as peak:
        result = engine.fit(
            model, data, {}, cfg, input_cfg, device, cache_features=cached, feature_cache=cache
        )
    return {
        "train_ms_per_image": 1e3 * result["seconds"] / (steps * batch),
        "train_peak_mb": peak.mb,
        "cached_features": cached,
    }


def measure_test(spec: dict, strategy: str, prompt_length: int | None) -> dict:
    """ms per image of a no-grad forward (median over `repeats` batches), its peak memory, forward GFLOPs."""
    from vptft import engine
    from vptft.bench import forward_flops
    from vptft.data import Normalize
    from vptft.strategies.base import tuned_parameters

    torch.set_num_threads(spec["threads"])
    device = engine.pick_device(spec["device"])
    model, input_cfg = _build(spec, strategy, prompt_length)
    model.to(device).eval()
    normalize = Normalize(input_cfg["mean"], input_cfg["std"], input_cfg.get("size")).to(device)
    x = _images(spec["batch_size"], input_cfg["size"]).images.to(device)
    times = []
    with PeakMemory(device) as peak, torch.no_grad():
        for _ in range(spec["repeats"] + 1):  # the first is a warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(normalize(x))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return {
        "test_ms_per_image": 1e3 * statistics.median(times[1:]) / len(x),
        "test_peak_mb": peak.mb,
        "gflops_per_image": forward_flops(model, input_cfg["size"], device) / 1e9,
        "tuned_params": sum(p.numel() for p in tuned_parameters(model).values()),
        "device": str(device),
        "memory_measure": memory_measure(device),
    }


def settings(spec: dict) -> list[tuple[str, int | None]]:
    """(strategy, prompt length or None) of every measurement: each prompt method at every length."""
    from vptft.strategies import get_strategy

    out = []
    for strategy in spec["strategies"]:
        prompted = "prompt_length" in get_strategy(strategy).options
        out += [(strategy, p) for p in spec["prompt_lengths"]] if prompted else [(strategy, None)]
    return out


def measure_all(spec: dict) -> list[dict]:
    """A row per setting; every measurement in its own forked child (one at a time)."""
    context = multiprocessing.get_context("fork")
    rows = []
    for strategy, p in settings(spec):
        row = {"strategy": strategy, "prompt_length": p, "batch_size": spec["batch_size"]}
        for measure in (measure_train, measure_test):
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                row.update(pool.submit(measure, spec, strategy, p).result())
        print(f"[cost] {row}", flush=True)
        rows.append(row)
    return rows
