"""`vptft bench`: how fast the project's own training paths are, each measured against a reference in the same
process, so that the ratio holds on any machine even where the absolute times do not.

Every timed step goes through the code the workflow runs: backbones from vptft.backbones, models from the
strategy registry, optimiser steps from vptft.engine.fit, the linear grid through vptft.sweep.Job. Times are
medians over repeats after one warm-up. Rows and their targets are described in benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
import yaml

from vptft import engine, sweep
from vptft.backbones import BACKBONES, BenchProfile
from vptft.backbones.factory import create_backbone, input_config
from vptft.config import load_config
from vptft.data import Normalize, SplitData
from vptft.io import atomic_path
from vptft.selection import grid_points
from vptft.strategies import get_strategy

ROW_COLUMNS = (
    "backbone",
    "measure",
    "value",
    "unit",
    "reference",
    "ratio",
    "target",
    "met",
    "note",
    "device",
    "torch",
    "threads",
)
STEP_COLUMNS = (
    "backbone",
    "strategy",
    "prompt_length",
    "batch_size",
    "device",
    "ms_per_image_train",
    "ms_per_image_eval",
    "concurrent",
)
PROMPT_LENGTHS = (1, 50, 200)
NUM_CLASSES = 10  # the head's size barely matters to the step time
TIMING_POINT = {"lr": 1e-3, "wd": 1e-4}  # wd > 0: AdamW stays AdamW under the VPT code's rules
FULL_TARGET, VPT_TARGET, LINEAR_TARGET = 1.05, 1.0, 1.5  # ratio bounds
DAG_SECONDS, DAG_JOBS = 10.0, 3000
DAG_CONFIGFILES = ("config/paper.yaml", "config/vpt-baselines.yaml")  # every strategy the paper setup runs
# Dense bf16 tensor-core peak (FLOP/s) by a substring of torch.cuda.get_device_name, most specific first.
GPU_PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)
GPU_BATCH, GPU_STEPS, GPU_REPEATS = 128, 10, 3  # the paper's full-finetuning batch
GPU_BACKBONE = "vit_b16_in21k"


PROFILES = {key: spec.bench for key, spec in BACKBONES.items() if spec.bench is not None}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run, device: torch.device) -> float:
    """`run()`'s own seconds, or its wall time when it returns None."""
    _sync(device)
    t0 = time.perf_counter()
    own = run()
    _sync(device)
    return own if own is not None else time.perf_counter() - t0


def interleaved_medians(runs: dict, repeats: int, device: torch.device) -> dict:
    """Median seconds of each run after one warm-up each, the repeats taken in turn (A B C A B C ...), so that
    a change of load on a shared machine hits every run and its reference alike."""
    for run in runs.values():
        run()
    times = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            times[key].append(_timed(run, device))
    return {key: statistics.median(values) for key, values in times.items()}


@contextlib.contextmanager
def workflow_determinism(device: torch.device):
    """What a sweep job sets on the CPU (bit-reproducible runs), restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(before or device.type == "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


class Bench:
    """One backbone's models and random data, timed through the engine."""

    def __init__(
        self,
        key: str,
        profile: BenchProfile,
        device: torch.device,
        batch: int | None = None,
        repeats: int | None = None,
    ):
        self.key, self.profile, self.device = key, profile, device
        self.batch, self.repeats, self.steps = (
            batch or profile.batch,
            repeats or profile.repeats,
            profile.steps,
        )
        self.config = load_config(profile.config)
        self.train = self.config["train"]
        self._backbones: dict[float, torch.nn.Module] = {}
        self.input_cfg = input_config(self.backbone(0.0), self.train["normalization"])
        size = self.input_cfg["size"]
        n = self.batch * self.steps
        g = torch.Generator().manual_seed(0)
        self.images = SplitData(
            torch.randint(0, 256, (n, 3, *size), generator=g, dtype=torch.uint8),
            torch.randint(0, NUM_CLASSES, (n,), generator=g),
        )
        self.normalize = Normalize(
            self.input_cfg["mean"], self.input_cfg["std"], self.input_cfg.get("size")
        ).to(device)

    def backbone(self, dropout: float):
        """A random-init backbone (one per dropout rate, copied for every model, as a sweep job does)."""
        if dropout not in self._backbones:
            torch.manual_seed(0)
            self._backbones[dropout] = create_backbone(self.key, pretrained=False, dropout=dropout)
        return self._backbones[dropout]

    @property
    def num_patches(self) -> int:
        return BACKBONES[self.key].tokens

    def build(self, name: str, values: dict):
        strategy = get_strategy(name)
        dropout = self.train["backbone_dropout"] if strategy.trains_backbone else 0.0
        entry = self.config["strategies"].get(name, {})
        torch.manual_seed(0)
        return strategy.build(
            copy.deepcopy(self.backbone(dropout)),
            NUM_CLASSES,
            head_init=self.train["head_init"],
            **{**entry.get("options", {}), **values},
        ).to(self.device)

    def fit_config(self, name: str) -> engine.FitConfig:
        """One epoch of `steps` optimiser steps at the bench batch, no eval pass."""
        return engine.FitConfig(
            optimizer=get_strategy(name).optimizer,
            lr=TIMING_POINT["lr"],
            weight_decay=TIMING_POINT["wd"],
            epochs=1,
            warmup_epochs=0,
            batch_size=self.batch,
            seed=0,
            lr_scale_batch=self.train["lr_scale_batch"],
            eval_epochs=set(),
            optimizer_behavior=self.train["optimizer_behavior"],
            precision=self.train["precision"],
        )

    def _fit(self, name: str, model, cfg: engine.FitConfig, checkpoint: Path | None = None) -> dict:
        """One engine.fit of the bench's images; a cached-feature strategy's head trains on random features."""
        cache = None
        if get_strategy(name).cache_features:
            features = torch.randn(len(self.images), model.backbone.num_features)
            cache = {"train": SplitData(features, self.images.labels).to(self.device)}
        return engine.fit(
            model,
            self.images,
            {},
            cfg,
            self.input_cfg,
            self.device,
            cache_features=cache is not None,
            feature_cache=cache,
            checkpoint=checkpoint,
        )

    def train_run(self, name: str, model, precision: str | None = None, compile: bool = False):
        """A run of `steps` engine optimiser steps (forward, backward, hook, step) at the bench batch, returning
        the engine's own seconds per step."""
        cfg = self.fit_config(name)
        cfg.precision = precision or cfg.precision
        cfg.compile = compile
        return lambda: self._fit(name, model, cfg)["seconds"] / self.steps

    def checkpoint_bytes(self, name: str, model) -> int:
        """Bytes of one resume checkpoint as a final run writes it (tuned weights, optimiser state, position):
        a one-epoch fit through the engine, which checkpoints a run at its end."""
        with tempfile.TemporaryDirectory() as scratch:
            result = self._fit(name, model, self.fit_config(name), Path(scratch, "checkpoint.pt"))
        return result["checkpoint_bytes"]

    def eval_run(self, name: str, model, data: SplitData | None = None):
        """A forward pass over one batch (or `data`): the engine's evaluation, or for a cached-feature strategy
        its feature extraction (its evaluation then reads the cached features)."""
        if data is None:
            data = SplitData(self.images.images[: self.batch], self.images.labels[: self.batch])
        precision = self.train["precision"]
        cached = get_strategy(name).cache_features

        def run():
            model.eval()
            if cached:
                engine.extract_features(model, data, self.normalize, self.device, precision)
            else:
                engine.evaluate(model, data, self.normalize, self.device, precision)

        return run

    def plain_timm_run(self):
        """`steps` optimiser steps of a plain timm loop on the same architecture and batch, inputs already
        normalised on the device: model(x) -> cross-entropy -> backward -> AdamW; returns seconds per step."""
        torch.manual_seed(0)
        model = create_backbone(self.key, pretrained=False, dropout=self.train["backbone_dropout"])
        model.reset_classifier(NUM_CLASSES)
        model.to(self.device).train()
        x = self.normalize(self.images.images.to(self.device))
        y = self.images.labels.to(self.device)

        def run():
            optimizer = torch.optim.AdamW(
                model.parameters(), lr=TIMING_POINT["lr"], weight_decay=TIMING_POINT["wd"]
            )
            _sync(self.device)
            t0 = time.perf_counter()
            for start in range(0, len(y), self.batch):
                loss = F.cross_entropy(model(x[start : start + self.batch]), y[start : start + self.batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            _sync(self.device)
            return (time.perf_counter() - t0) / self.steps

        return run

    def linear_grid(self) -> dict:
        """The config's whole linear grid as its sweep trains it (build, fit on cached train / val features),
        against one feature pass over the same train + val images (timed on a sample, scaled), timed before
        and after the grid."""
        entry = self.config["strategies"]["linear"]
        sizes = self.config["regimes"]["vtab1k"]
        n_train, n_val = sizes["n_train"], sizes["n_val"]
        spec = {"strategy": "linear", "backbone": self.key, "train": self.train, **entry}
        backbone = self.backbone(0.0)
        job = _SyntheticJob(spec, backbone, self.input_cfg, self.device)
        dim = backbone.num_features
        job.feature_cache.update(
            {
                name: SplitData(torch.randn(n, dim), torch.arange(n) % NUM_CLASSES).to(self.device)
                for name, n in (("train", n_train), ("val", n_val))
            }
        )
        job.set_split_sizes(n_train, n_val)
        points = grid_points(entry["grid"])
        seed = self.train["sweep_seed"]
        configs = [job.fit_config(point, seed, n_train, curve_points=1) for point in points]

        def grid():
            for _ in job.fit_points(points, seed):  # what run_sweep_chunk trains
                pass

        n_images = n_train + n_val
        sample = min(n_images, self.profile.feature_images or n_images)
        images = SplitData(
            torch.randint(0, 256, (sample, 3, *self.input_cfg["size"]), dtype=torch.uint8),
            torch.zeros(sample, dtype=torch.int64),
        )
        one_pass = self.eval_run("linear", self.build("linear", {}), images)
        one_pass()  # warm-up
        passes = [_timed(one_pass, self.device)]
        grid_seconds = _timed(grid, self.device)
        passes += [_timed(one_pass, self.device) for _ in range(max(1, self.repeats - 1))]
        return {
            "grid": grid_seconds,
            "feature_pass": statistics.median(passes) * n_images / sample,
            "points": len(points),
            "epochs": configs[-1].epochs,
            "batch": configs[-1].batch_size,
            "n_train": n_train,
            "n_val": n_val,
            "sample": sample,
        }


class _SyntheticJob(sweep.Job):
    """A sweep job without a manifest or data on disk: the sweep's own build / fit_config / fit, on features
    the caller puts in `feature_cache` (placeholder image splits, never read once features are cached)."""

    def __init__(self, spec: dict, backbone, input_cfg: dict, device: torch.device):
        self.spec, self.backbone, self.input_cfg, self.device = spec, backbone, input_cfg, device
        self.strategy = get_strategy(spec["strategy"])
        self.manifest = {"num_classes": NUM_CLASSES}
        self.manifest_path = self.backbone_path = self.start_from = None
        self.feature_cache = {}
        self.set_split_sizes(0, 0)

    def set_split_sizes(self, n_train: int, n_val: int) -> None:
        """Placeholder image splits of these sizes (their pixels are never read once features are cached)."""
        self._splits = {
            name: SplitData(torch.zeros((n, 3, 1, 1), dtype=torch.uint8), torch.zeros(n, dtype=torch.int64))
            for name, n in (("train", n_train), ("val", n_val))
        }


def _row(
    backbone: str,
    measure: str,
    value: float,
    unit: str,
    reference: float | None = None,
    target: float | None = None,
    note: str = "",
) -> dict:
    """One result; `target` bounds value / reference from above (None: reported, no target)."""
    ratio = value / reference if reference else math.nan
    return {
        "backbone": backbone,
        "measure": measure,
        "value": value,
        "unit": unit,
        "reference": math.nan if reference is None else reference,
        "ratio": ratio,
        "target": "" if target is None else f"ratio <= {target:g}",
        "met": None if target is None else bool(ratio <= target),
        "note": note,
    }


def bench_backbone(bench: Bench, strategies: list[str]) -> tuple[list[dict], list[dict]]:
    """(result rows, step-time rows) of one backbone."""
    key, ms = bench.key, 1e3
    models = {}
    for name in strategies:
        prompted = "prompt_length" in get_strategy(name).options
        for p in PROMPT_LENGTHS if prompted else (None,):
            models[name, p] = bench.build(name, {"prompt_length": p} if prompted else {})
    train_runs = {label: bench.train_run(label[0], model) for label, model in models.items()}
    if ("full", None) in models:
        train_runs["plain timm", None] = bench.plain_timm_run()
    train = interleaved_medians(train_runs, bench.repeats, bench.device)
    evals = interleaved_medians(
        {label: bench.eval_run(label[0], model) for label, model in models.items()},
        bench.repeats,
        bench.device,
    )
    step_rows = []
    for (name, p), seconds in evals.items():
        step_rows.append(
            {
                "backbone": key,
                "strategy": name,
                "prompt_length": p,
                "batch_size": bench.batch,
                "device": str(bench.device),
                "ms_per_image_train": train[name, p] * ms / bench.batch,
                "ms_per_image_eval": seconds * ms / bench.batch,
                "concurrent": 1,
            }
        )
        print(
            f"[bench] {key} {name}{'' if p is None else f' p={p}'}: train {train[name, p] * ms:.1f} ms/step, "
            f"eval {seconds * ms:.1f} ms/batch of {bench.batch}",
            file=sys.stderr,
            flush=True,
        )
    rows = []
    if ("full", None) in train:
        full_ms = train["full", None] * ms
        rows.append(
            _row(
                key,
                "full_step_vs_plain_timm",
                full_ms,
                "ms/step",
                train["plain timm", None] * ms,
                FULL_TARGET,
                f"engine full step vs plain timm fwd+bwd+AdamW, batch {bench.batch}",
            )
        )
        n = bench.num_patches
        for p in PROMPT_LENGTHS:
            if ("vpt_deep", p) in train:
                tokens = (1 + p + n) / (1 + n)
                rows.append(
                    _row(
                        key,
                        f"vpt_deep_p{p}_vs_token_ratio",
                        train["vpt_deep", p] * ms,
                        "ms/step",
                        full_ms * tokens,
                        VPT_TARGET,
                        f"full step x (1 + {p} + {n}) / (1 + {n}) = x{tokens:.3f}",
                    )
                )
    minutes = bench.train.get("checkpoint_minutes")
    for (name, p), model in models.items():
        if p in (None, PROMPT_LENGTHS[0]):  # prompts add kilobytes: one length per strategy
            rows.append(
                _row(
                    key,
                    f"checkpoint_mb_{name}",
                    bench.checkpoint_bytes(name, model) / 1e6,
                    "MB",
                    note=f"one resume checkpoint (tuned weights + optimiser state); a final run writes one at "
                    f"its end, one every train.checkpoint_minutes ({minutes} in {bench.profile.config}) "
                    "and one on SIGTERM",
                )
            )
    if "linear" in bench.config["strategies"]:
        lin = bench.linear_grid()
        scaled = (
            f", timed on {lin['sample']} and scaled" if lin["sample"] < lin["n_train"] + lin["n_val"] else ""
        )
        rows.append(
            _row(
                key,
                "linear_grid_vs_feature_pass",
                lin["grid"],
                "s",
                lin["feature_pass"],
                LINEAR_TARGET,
                f"{bench.profile.config}: {lin['points']} points x {lin['epochs']} epochs, batch "
                f"{lin['batch']}, on cached features vs one pass over {lin['n_train']} + {lin['n_val']} "
                f"images{scaled}",
            )
        )
    return rows, step_rows


def forward_flops(model, input_size, device) -> int:
    """FLOPs (2 per multiply-add) of one image's forward pass, attention included (counted on the math path).
    Autograd stays on: the counter's module tracker hooks the gradients of a prompt expanded from a parameter,
    and no backward runs, so only the forward counts."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *input_size, device=device))
    return counter.get_total_flops()


def gpu_peak(name: str) -> float | None:
    return next((peak for part, peak in GPU_PEAK_BF16 if part in name), None)


def bench_gpu() -> list[dict]:
    """ViT-B/16 full finetuning on the GPU through the engine, under each precision switch the config has:
    images/s and model-FLOPs utilisation (3 x forward FLOPs per image) against the GPU's dense bf16 peak."""
    if not torch.cuda.is_available():
        print("[bench] no GPU on this machine: GPU rows skipped", flush=True)
        return [
            {
                **_row(
                    GPU_BACKBONE,
                    "gpu_train_images_per_s",
                    math.nan,
                    "images/s",
                    note="no GPU on this machine",
                ),
                "device": "none",
            }
        ]
    from timm.layers import use_fused_attn

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = gpu_peak(name)
    bench = Bench(
        GPU_BACKBONE, BenchProfile(GPU_BATCH, GPU_REPEATS, GPU_STEPS, PROFILES[GPU_BACKBONE].config), device
    )
    model = bench.build("full", {})
    flops = forward_flops(model, bench.input_cfg["size"], device)
    rows = [
        _row(GPU_BACKBONE, "forward_gflops_per_image", flops / 1e9, "GFLOP", note="2 FLOPs per multiply-add")
    ]
    switches = {  # variant -> (train.precision, train.compile)
        "fp32": ("fp32", False),
        "tf32": ("tf32", False),
        "bf16": ("bf16", False),
        "bf16_compile": ("bf16", True),
    }
    runs = {}
    for variant, (precision, compiled) in switches.items():
        runs[variant] = bench.train_run("full", model, precision, compiled)
        if compiled:
            t0 = time.perf_counter()
            runs[variant]()  # compilation happens on the first steps: outside the timed repeats
            print(f"[bench] {variant}: compiled in {time.perf_counter() - t0:.0f}s", flush=True)
    per_step = interleaved_medians(runs, bench.repeats, device)
    for variant, seconds in per_step.items():
        precision, compiled = switches[variant]
        images_s = bench.batch / seconds
        note = (
            f"{name}, batch {bench.batch}, train.precision {precision}, train.compile {str(compiled).lower()}, "
            f"timm fused attention {'on' if use_fused_attn() else 'off'}"
        )
        rows.append(_row(GPU_BACKBONE, f"gpu_train_images_per_s_{variant}", images_s, "images/s", note=note))
        achieved = images_s * 3 * flops
        rows.append(
            _row(
                GPU_BACKBONE,
                f"gpu_mfu_{variant}",
                achieved / 1e12,
                "TFLOP/s",
                None if peak is None else peak / 1e12,
                note=f"vs {name}'s dense bf16 peak"
                if peak
                else f"peak of {name!r} unknown: add it to GPU_PEAK_BF16",
            )
        )
    rows.append(
        _row(
            GPU_BACKBONE,
            "gpu_channels_last",
            math.nan,
            "",
            note="not applicable: a ViT's only convolution is its patch embedding",
        )
    )
    return [{**row, "device": f"cuda ({name})"} for row in rows]


def job_count(snakemake_output: str) -> int:
    """The total of the "Job stats" table a Snakemake dry run prints."""
    stats = snakemake_output.rpartition("Job stats:")[2]
    match = re.search(r"^total\s+(\d+)\s*$", stats, re.MULTILINE)
    if not match:
        raise ValueError("no 'Job stats' total in the Snakemake output")
    return int(match.group(1))


def bench_dag(configfiles=DAG_CONFIGFILES, target: str = "all") -> list[dict]:
    """Seconds and jobs of `snakemake -n` over every output of the paper setup. A dry run reads no image, so
    the FID reference folder (required by the paper config, null there) points at an empty folder."""
    with tempfile.TemporaryDirectory() as scratch:
        overlay = Path(scratch, "fid_reference.yaml")
        overlay.write_text(yaml.safe_dump({"analyses": {"fid": {"reference_dir": scratch}}}))
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            target,
            "-n",
            "-c1",
            "--configfile",
            *configfiles,
            str(overlay),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    jobs = job_count(proc.stdout + proc.stderr)
    what = f"snakemake {target} -n --configfile {' '.join(configfiles)} (+ an empty FID reference folder)"
    return [
        _row("", "dag_dry_run_seconds", seconds, "s", DAG_SECONDS, 1.0, what),
        _row("", "dag_jobs", jobs, "jobs", DAG_JOBS, 1.0, what),
    ]


def median_step_times(step_files) -> pd.DataFrame:
    """One row per (backbone, strategy, prompt length) of step-time files written side by side: the median over
    the files, `concurrent` = how many there were."""
    keys = ["backbone", "strategy", "prompt_length", "batch_size", "device"]
    steps = pd.concat(pd.read_csv(path) for path in step_files)
    steps = steps.groupby(keys, dropna=False, sort=False, as_index=False)[
        ["ms_per_image_train", "ms_per_image_eval"]
    ].median()
    return steps.assign(concurrent=len(step_files))[list(STEP_COLUMNS)]


def run_side_by_side(copies: int, bench_args: list[str], out, steps_out) -> pd.DataFrame:
    """`copies` bench processes at once, as `snakemake -c<copies>` runs one-thread jobs side by side: the step
    times a local run meets (two jobs sharing two cores step slower than one job on an idle machine). The step
    file gets each row's median over the copies; the result rows are every copy's, the note saying which."""
    with tempfile.TemporaryDirectory() as scratch:
        outs = [(Path(scratch, f"bench{i}.csv"), Path(scratch, f"steps{i}.csv")) for i in range(copies)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "vptft", "bench", *bench_args, "--out", str(o), "--steps-out", str(s)]
            )
            for o, s in outs
        ]
        failed = [i for i, proc in enumerate(procs) if proc.wait()]
        if failed:
            raise RuntimeError(f"bench copies {failed} of {copies} failed (their output is above)")
        steps = median_step_times([s for _, s in outs])
        rows = pd.concat(
            pd.read_csv(o).assign(
                note=lambda t, i=i: t.note.fillna("") + f" [copy {i + 1} of {copies} side by side]"
            )
            for i, (o, _) in enumerate(outs)
        )
    _write_csv(out, rows.to_dict("records"), ROW_COLUMNS)
    _write_csv(steps_out, steps.to_dict("records"), STEP_COLUMNS)
    print(steps.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"{copies} copies side by side; results -> {out}, median step times -> {steps_out}")
    return steps


def _write_csv(path, rows: list[dict], columns) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=list(columns)).to_csv(tmp, index=False)


def run_bench(
    backbones: list[str],
    out,
    steps_out,
    batch: int | None = None,
    repeats: int | None = None,
    strategies=("full", "linear", "vpt_deep"),
    device: str = "cpu",
    dag: bool = False,
) -> pd.DataFrame:
    """Measure, print the table, write the result rows to `out` and the per-strategy step times to `steps_out`."""
    unknown = [key for key in backbones if key not in PROFILES]
    if unknown:
        raise KeyError(
            f"no bench profile for {unknown}; known: {', '.join(PROFILES)} (backbones: "
            f"{', '.join(BACKBONES)})"
        )
    for name in strategies:
        get_strategy(name)
    torch_device = engine.pick_device(device)
    rows, step_rows = [], []
    with workflow_determinism(torch_device):
        for key in backbones:
            bench = Bench(key, PROFILES[key], torch_device, batch, repeats)
            backbone_rows, backbone_steps = bench_backbone(bench, list(strategies))
            rows += [{**row, "device": str(torch_device)} for row in backbone_rows]
            step_rows += backbone_steps
    rows += bench_gpu()
    if dag:
        rows += bench_dag()
    env = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    table = pd.DataFrame([{"device": "", **row, **env} for row in rows], columns=list(ROW_COLUMNS))
    _write_csv(out, table.to_dict("records"), ROW_COLUMNS)
    _write_csv(steps_out, step_rows, STEP_COLUMNS)
    with pd.option_context("display.max_colwidth", 70, "display.width", 200):
        print(
            table.drop(columns=["torch", "threads"]).to_string(index=False, float_format=lambda v: f"{v:.4g}")
        )
    print(f"torch {env['torch']}, {env['threads']} threads; results -> {out}, step times -> {steps_out}")
    return table
