"""What the workflow's jobs will cost before they run: optimiser steps, images through the model and seconds per
job, from the config and per-image step times. Torch-free: the Snakefile sizes each job's requested runtime with
it, and `vptft cost` adds it up over a dry run's job list.

Step times come from `vptft bench --steps-out` (measured on the user's machine) or, for ViT-B/16, from the VPT
paper's A100 figures. Those are labelled ms per image, but at face value (358.7 ms per image for `full`) an A100
would run ViT-B/16 at ~0.15 TFLOP/s; read per batch of 64 (5.6 ms per image, ~9.5 TFLOP/s) they are plausible,
so that is how they are used here.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

from vptft import study
from vptft import tasks as task_registry
from vptft.backbones import get_backbone
from vptft.schedule import epochs_for, eval_epochs
from vptft.selection import chunk_indices, grid_points
from vptft.splits import capped_sizes, fgvc_parts, pool_size, regime_spec
from vptft.strategies import STRATEGIES, get_strategy
from vptft.tasks.vtab import TEST_SIZES, catalog_split_sizes

PAPER_BATCH = 64  # the batch the VPT paper's latency figures were taken at
# VPT paper, ViT-B/16 on an A100 (ms per batch of 64 -> ms per image); prompt rows at p = 1 and p = 200
PAPER_A100_MS = {
    ("train", "full", 0): 358.7,
    ("train", "linear", 0): 148.9,
    ("train", "vpt_deep", 1): 213.6,
    ("train", "vpt_deep", 200): 360.1,
    ("eval", "full", 0): 69.7,
    ("eval", "vpt_deep", 200): 140.8,
}
PAPER_SOURCE = "VPT paper, ViT-B/16 on an A100 (its ms/img figures read per batch of 64)"
MINI_TEST_SIZE = 1000  # a rendered mini task's test split (digits: 797 real images)


@dataclass
class StepTimes:
    """ms per image of one training step (forward + backward + update) and of one evaluation forward pass, per
    (strategy, prompt length); strategies without their own row use `full`'s, prompt methods the token ratio."""

    train: dict
    eval: dict
    source: str
    patch_tokens: int

    def ratio(self, prompt_length: int) -> float:
        """Tokens through the blocks with p prompts over tokens without: (1 + p + N) / (1 + N)."""
        return (1 + prompt_length + self.patch_tokens) / (1 + self.patch_tokens)

    def ms(self, kind: str, strategy: str, prompt_length: int = 0) -> float:
        table = self.train if kind == "train" else self.eval
        if (strategy, prompt_length) in table:
            return table[(strategy, prompt_length)]
        own = sorted((p, ms) for (s, p), ms in table.items() if s == strategy)
        if len(own) >= 2:  # linear in the prompt length through the measured lengths
            (p0, m0), (p1, m1) = own[0], own[-1]
            return max(min(m0, m1), m0 + (m1 - m0) * (prompt_length - p0) / max(1, p1 - p0))
        if own:
            return own[0][1] * self.ratio(prompt_length) / self.ratio(own[0][0])
        if strategy == "mixed":  # every weight trains, on the longer token sequence
            return self.ms(kind, "full") * self.ratio(prompt_length)
        prompt = strategy in STRATEGIES and STRATEGIES[strategy].prompt
        if prompt and strategy != "vpt_deep":
            return self.ms(kind, "vpt_deep", prompt_length)
        full = table.get(("full", 0)) or next(iter(table.values()))
        return full * (self.ratio(prompt_length) if prompt else 1.0)


def paper_step_times(backbone: str) -> StepTimes | None:
    if backbone != "vit_b16_in21k":
        return None
    per_image = {key: ms / PAPER_BATCH for key, ms in PAPER_A100_MS.items()}
    pick = lambda kind: {(s, p): v for (k, s, p), v in per_image.items() if k == kind}
    evals = pick("eval")
    evals[("vpt_deep", 1)] = evals[("full", 0)]  # one prompt token costs nothing measurable
    return StepTimes(pick("train"), evals, PAPER_SOURCE, get_backbone(backbone).tokens)


def read_step_times(path, backbone: str) -> StepTimes | None:
    """The rows of a `vptft bench --steps-out` file for this backbone (None if it has none)."""
    train, evals, devices = {}, {}, set()
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["backbone"] != backbone:
                continue
            key = (row["strategy"], int(float(row["prompt_length"] or 0)))
            train[key], evals[key] = float(row["ms_per_image_train"]), float(row["ms_per_image_eval"])
            copies = int(row.get("concurrent") or 1)  # files of older benches have no such column
            devices.add(row["device"] + (f", {copies} bench copies side by side" if copies > 1 else ""))
    if not train:
        return None
    return StepTimes(
        train,
        evals,
        f"measured by vptft bench ({path}; {', '.join(sorted(devices))})",
        get_backbone(backbone).tokens,
    )


def step_times(config: dict, path=None) -> StepTimes | None:
    """Measured times (a bench file: `path`, else config `cost.step_times`) before the paper's figures."""
    path = path or (config.get("cost") or {}).get("step_times")
    if path and Path(path).is_file():
        measured = read_step_times(path, config["backbone"])
        if measured:
            return measured
    return paper_step_times(config["backbone"])


def test_size(task: str) -> int:
    if task == "digits":
        return 797
    if task in TEST_SIZES:
        return TEST_SIZES[task]
    if task_registry.TASKS[task].benchmark == "fgvc":
        return fgvc_split_sizes(task_registry.TASKS[task])["test"]
    if task_registry.TASKS[task].benchmark == "coop":
        from vptft.tasks.coop import TEST_SIZES as COOP_TEST_SIZES

        return COOP_TEST_SIZES[task]
    return MINI_TEST_SIZE if task_registry.TASKS[task].benchmark == "mini" else 10000


def fgvc_split_sizes(task) -> dict:
    """A fine-grained task's split sizes before its data exists: the catalog's (FGVC) or the renderer's (mini)."""
    if task.benchmark == "fgvc":
        from vptft.tasks.fgvc import SPLIT_SIZES

        return SPLIT_SIZES[task.name]
    from vptft.tasks.mini import SPLIT_SIZES

    return dict(SPLIT_SIZES)


def regime_sizes(config: dict, task: str, regime: str) -> tuple[int, int]:
    """Train and val records of a regime: a scaling size a VTAB task cannot fill as the splits will cap it (from
    the TFDS catalog's split sizes); other tasks' sizes as configured."""
    spec = regime_spec(regime, config["regimes"])
    declared = task_registry.TASKS[task]
    if spec["kind"] == "fewshot":
        n = spec["per_class"] * declared.num_classes
        return n, spec.get("val_per_class", spec["per_class"]) * declared.num_classes
    if spec["kind"] in ("fgvc", "fraction"):
        sizes = fgvc_split_sizes(declared)
        train, val = fgvc_parts(declared, sizes, spec["val_fraction"], spec["seed"])
        n_train = round(spec["percent"] / 100 * len(train)) if spec["kind"] == "fraction" else len(train)
        return max(1, n_train), len(val)
    n_train, n_val = spec["n_train"], spec["n_val"]
    if spec["kind"] == "scaling" and declared.benchmark == "vtab":
        available = pool_size(declared, catalog_split_sizes(declared))
        return capped_sizes(n_train, n_val, available, spec["ratio"]) or (n_train, n_val)
    return n_train, n_val


@dataclass
class Estimate:
    seconds: float = 0.0
    steps: int = 0
    images: int = 0
    eval_seconds: float = 0.0  # of `seconds`: evaluation passes during and after training

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(
            self.seconds + other.seconds,
            self.steps + other.steps,
            self.images + other.images,
            self.eval_seconds + other.eval_seconds,
        )


def run_estimate(
    config: dict,
    times: StepTimes,
    task: str,
    regime: str,
    strategy: str,
    point: dict,
    n_train: int,
    evals: int,
    n_eval: int,
) -> Estimate:
    """One training run: epochs as the engine computes them and `evals` passes over `n_eval` images (a strategy
    on cached features: its head's steps only, see `feature_pass`)."""
    entry, train = config["strategies"][strategy], study.regime_train(config, regime)
    declared = get_strategy(strategy)  # a variant is timed as its base strategy, with its fixed values
    values = declared.run_values({**entry.get("options", {}), **point}, task_registry.TASKS[task].num_classes)
    batch = declared.batch_size(values, entry, train["batch_size"])
    epochs = epochs_for(n_train, batch, train["epochs"], train["min_steps"])
    steps = epochs * math.ceil(n_train / batch)
    options = declared.resolve({k: v for k, v in values.items() if k not in ("lr", "wd")})
    p = int(options.get("prompt_length", 0)) if declared.prompt else 0
    eval_ms = times.ms("eval", declared.base, p)
    if declared.cache_features:  # the head's steps on cached features: ~1% of a forward pass each
        return Estimate(0.01 * epochs * n_train * eval_ms / 1000, steps, 0)
    images = epochs * n_train
    n_evals = epochs if evals is None else evals
    eval_s = n_evals * n_eval * eval_ms / 1000
    return Estimate(
        images * times.ms("train", declared.base, p) / 1000 + eval_s, steps, images + n_evals * n_eval, eval_s
    )


def final_evals(config: dict, curves: bool, epochs: int) -> int:
    points = config["train"]["curve_points"] if curves else 1
    chosen = eval_epochs(epochs, points)
    return epochs if chosen is None else len(chosen)


def feature_pass(config: dict, times: StepTimes, strategy: str, images: int) -> Estimate:
    """A job of a strategy on cached features computes them once, whatever the number of runs."""
    declared = get_strategy(strategy)
    if not declared.cache_features:
        return Estimate()
    return Estimate(images * times.ms("eval", declared.base) / 1000, 0, images)


def worst_point(config: dict, strategy: str) -> dict:
    """The grid point with the longest prompt and smallest batch: what a final run may select, at worst."""
    points = grid_points(config["strategies"][strategy]["grid"])
    return max(points, key=lambda p: (int(p.get("prompt_length", 0)), -float(p["lr"])))


def final_estimate(config, times, task, regime, strategy, seeds: int, curves: bool) -> Estimate:
    n_train, n_val = regime_sizes(config, task, regime)
    spec = regime_spec(regime, config["regimes"])
    n_final = n_train if spec.get("final_split") == "train" else n_train + n_val  # FGVC: train only
    entry, train = config["strategies"][strategy], study.regime_train(config, regime)
    point = worst_point(config, strategy)
    declared = get_strategy(strategy)
    values = declared.run_values({**entry.get("options", {}), **point}, task_registry.TASKS[task].num_classes)
    batch = declared.batch_size(values, entry, train["batch_size"])
    epochs = epochs_for(n_final, batch, train["epochs"], train["min_steps"])
    evals = final_evals(config, curves, epochs)
    total = feature_pass(config, times, strategy, n_final + test_size(task))
    for _ in range(seeds):
        total += run_estimate(config, times, task, regime, strategy, point, n_final, evals, test_size(task))
    return total


class Planner:
    """Job sizes and requested runtimes of one config's training jobs, from the estimate (cached: the Snakefile
    asks for every job of the DAG). Minutes requested = estimate x cost.safety + cost.overhead_minutes, which
    must fit `limit` (the cluster's maximum runtime for training jobs)."""

    def __init__(self, config: dict, times: StepTimes | None, limit: int):
        self.config, self.times, self.limit = config, times, limit
        self.safety = config["cost"]["safety"]
        self.overhead = config["cost"]["overhead_minutes"]
        self._cache: dict = {}

    def _cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def padded(self, minutes: float) -> int:
        return math.ceil(minutes * self.safety + self.overhead)

    def points(self, strategy: str) -> list[dict]:
        return self._cached(
            ("points", strategy), lambda: grid_points(self.config["strategies"][strategy]["grid"])
        )

    def point_estimates(self, task: str, regime: str, strategy: str) -> list[Estimate]:
        """Each grid point's sweep run on train -> val (one val pass at its end)."""

        def compute():
            n_train, n_val = regime_sizes(self.config, task, regime)
            by_shape = {}  # lr and wd change no run's cost: points differing only there share an estimate
            for point in self.points(strategy):
                shape = tuple(sorted((k, v) for k, v in point.items() if k not in ("lr", "wd")))
                if shape not in by_shape:
                    by_shape[shape] = run_estimate(
                        self.config, self.times, task, regime, strategy, point, n_train, 1, n_val
                    )
                yield by_shape[shape]

        return self._cached(("point_estimates", task, regime, strategy), lambda: list(compute()))

    def chunk_size(self, task: str, regime: str, strategy: str) -> int | None:
        """Grid points per sweep job: the config's number, or with "auto" as many as fit the limit."""
        size = self.config["train"]["sweep_chunk_size"]
        if size != "auto":
            return size
        if self.times is None:
            return None

        def largest_fitting():
            n_train, n_val = regime_sizes(self.config, task, regime)
            features = feature_pass(self.config, self.times, strategy, n_train + n_val).seconds
            prefix = list(
                itertools.accumulate(
                    (e.seconds for e in self.point_estimates(task, regime, strategy)), initial=0.0
                )
            )
            n = len(prefix) - 1
            for k in range(n, 0, -1):
                longest = max(prefix[min(n, i + k)] - prefix[i] for i in range(0, n, k))
                if self.padded((features + longest) / 60) <= self.limit:
                    return k
            return 1

        return self._cached(("chunk", task, regime, strategy), largest_fitting)

    def n_chunks(self, task: str, regime: str, strategy: str) -> int:
        size = self.chunk_size(task, regime, strategy)
        points = len(self.points(strategy))
        return math.ceil(points / size) if size else 1

    def _sweep(self, task, regime, strategy, indices) -> Estimate:
        n_train, n_val = regime_sizes(self.config, task, regime)
        total = feature_pass(self.config, self.times, strategy, n_train + n_val)
        runs = self.point_estimates(task, regime, strategy)
        for i in indices:
            total += runs[i]
        return total

    def sweep(self, task, regime, strategy, chunk: int) -> Estimate:
        """A sweep job: the grid points of its chunk."""

        def compute():
            indices = chunk_indices(
                len(self.points(strategy)), chunk, self.chunk_size(task, regime, strategy)
            )
            return self._sweep(task, regime, strategy, indices)

        return self._cached(("sweep", task, regime, strategy, chunk), compute)

    def final(self, task, regime, strategy, seeds: int, curves: bool) -> Estimate:
        return self._cached(
            ("final", task, regime, strategy, seeds, curves),
            lambda: final_estimate(self.config, self.times, task, regime, strategy, seeds, curves),
        )

    def runtime(self, estimate: Estimate | None, what: str) -> int:
        """Minutes a job requests; an estimate beyond the limit is refused, naming the job."""
        if estimate is None:
            return self.limit
        wanted = self.padded(estimate.seconds / 60)
        if wanted > self.limit:
            raise ValueError(
                f"{what} is estimated at {estimate.seconds / 60:.0f} min (x {self.safety} + "
                f"{self.overhead} = {wanted} min), over the configured maximum runtime of {self.limit} "
                "min (resources.train.runtime): raise it, or make the job smaller (fewer epochs, "
                "train.sweep_chunk_size)"
            )
        return wanted

    def fits(self, estimate: Estimate) -> bool:
        return self.padded(estimate.seconds / 60) <= self.limit


# The rules of final runs (train.smk): one job of a strategy's seeds - train.seeds, the claims' seeds (FT and VPT
# on the main backbone), train.seeds on the extra backbones - or one seed of a run too long for one job.
FINAL_RULES = ("train", "train_claims", "train_extra_backbones", "train_seed")


def pretrain_estimate(config: dict, times: StepTimes, backbone: str | None = None) -> Estimate:
    """The workflow's own pre-training (mini benchmark): every epoch over n_train, held-out passes."""
    cfg = study.pretrain_config(config, backbone or config["backbone"])
    images = cfg["epochs"] * cfg["n_train"]
    evals = min(cfg["epochs"], cfg.get("curve_points", 10)) * cfg["n_heldout"]
    seconds = (images * times.ms("train", "full") + evals * times.ms("eval", "full")) / 1000
    return Estimate(seconds, cfg["epochs"] * math.ceil(cfg["n_train"] / cfg["batch_size"]), images + evals)


def job_estimate(planner: Planner, rule: str, wildcards: dict, curves) -> Estimate:
    """One job of a dry run's list (training rules and pre-training; other jobs cost their start-up only)."""
    config = planner.config
    if rule == "pretrain":
        return pretrain_estimate(config, planner.times, wildcards.get("backbone"))
    if rule in ("sweep", "stage1", *FINAL_RULES):
        if rule == "train_seed":
            task, regime, strategy = wildcards["run"].split("/")
        else:
            task, regime, strategy = wildcards["task"], wildcards["regime"], wildcards["strategy"]
        if rule == "sweep":
            return planner.sweep(task, regime, strategy, int(wildcards["chunk"]))
        if rule == "stage1":  # the selected point once: the grid's average point
            runs = planner.point_estimates(task, regime, strategy)
            mean = sum(e.seconds for e in runs) / len(runs)
            return Estimate(
                mean, runs[0].steps, runs[0].images, sum(e.eval_seconds for e in runs) / len(runs)
            )
        seeds = 1 if rule == "train_seed" else len(study.final_seeds(config, strategy))
        return planner.final(task, regime, strategy, seeds, curves(config, task, regime, strategy))
    return Estimate()


def backbone_planners(config: dict, limit: int, times: StepTimes | None = None) -> dict[str, Planner]:
    """A planner per configured backbone, on the config as its jobs see it (study.backbone_view) and its own
    measured step times; `times`, where given, are the main backbone's and stand in for a backbone without
    its own (None there: the planner falls back to the configured runtime)."""
    planners = {}
    for key in study.backbones(config):
        view = study.backbone_view(config, key)
        own = times if key == config["backbone"] and times is not None else step_times(view)
        planners[key] = Planner(view, own or times, limit)
    return planners
