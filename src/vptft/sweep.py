"""Hyper-parameter search and final runs.

A grid (lr x wd x the strategy's extras) is trained on train -> val and the point with the best last-epoch
val top-1 selected (vptft.selection); final runs train on train+val (trainval; FGVC: train) with each seed and report
last-epoch test top-1. A job loads its data and backbone once and trains several grid points or seeds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from vptft import engine, head_grid, reproducibility
from vptft.backbones import get_backbone
from vptft.backbones.factory import create_backbone, input_config
from vptft.data import load_split
from vptft.io import atomic_path, content_hash, read_json, write_json
from vptft.selection import chunk_indices, grid_points, selected_point, write_csv
from vptft.splits import read_manifest
from vptft.strategies import get_strategy
from vptft.strategies.base import parameter_counts, tuned_state_dict
from vptft.tasks import class_names, get_task


class Job:
    """What one job loads once: its manifest, backbone and input config, device, and decoded splits.

    `start_from`: for a strategy that continues another's runs (FT-then-PT), the weights file its backbone
    starts from, or {seed: file} for final runs (each seed continues the run of the same seed).
    """

    def __init__(self, spec: dict, manifest_path, backbone_path, start_from=None):
        self.spec = spec
        self.manifest_path = Path(manifest_path)
        self.manifest = read_manifest(manifest_path)
        self.device = engine.pick_device(spec["train"]["device"])
        if (
            self.device.type == "cpu"
        ):  # CPU runs are bit-reproducible, so a resumed run ends where a straight one does
            torch.use_deterministic_algorithms(True)
        self.strategy = get_strategy(spec["strategy"])
        dropout = spec["train"]["backbone_dropout"] if self.strategy.trains_backbone else 0.0
        self.backbone = create_backbone(spec["backbone"], backbone_path, dropout=dropout)
        self.backbone_path = backbone_path
        self.start_from = start_from
        self.input_cfg = input_config(self.backbone, spec["train"]["normalization"])
        self.feature_cache: dict = {}
        self._splits: dict = {}
        self._prototypes: dict = {}

    def split(self, name: str):
        if name not in self._splits:
            self._splits[name] = load_split(
                self.manifest, name, self.spec["data_dir"], self.input_cfg["size"]
            )
        return self._splits[name]

    @property
    def final_split(self) -> str:
        """What final runs train on: train + val (VTAB), or train only (the fgvc regimes, as the public code)."""
        return self.manifest["spec"].get("final_split", "trainval")

    def values(self, point: dict) -> dict:
        """A grid point with the strategy's fixed options: every hyper-parameter of one run."""
        return {**self.spec.get("options", {}), **point}

    def fit_config(self, point: dict, seed: int, n_train: int, curve_points) -> engine.FitConfig:
        t = self.spec["train"]
        values = self.strategy.run_values(self.values(point), self.manifest["num_classes"])
        batch = self.strategy.batch_size(values, self.spec, t["batch_size"])
        epochs = engine.epochs_for(n_train, batch, t["epochs"], t["min_steps"])
        cfg = engine.FitConfig(
            optimizer=self.strategy.optimizer,
            lr=float(point["lr"]),
            weight_decay=float(point["wd"]),
            epochs=epochs,
            warmup_epochs=max(1, round(t["warmup_fraction"] * epochs)) if t["warmup_fraction"] else 0,
            batch_size=batch,
            seed=seed,
            lr_scale_batch=t["lr_scale_batch"],
            eval_epochs=engine.eval_epochs(epochs, curve_points),
            optimizer_behavior=t["optimizer_behavior"],
            precision=t["precision"],
            compile=t["compile"],
            checkpoint_interval_s=60.0 * t.get("checkpoint_minutes", 0),
        )
        steps = epochs * math.ceil(n_train / batch)
        backbone = get_backbone(self.spec["backbone"])
        text_depth = backbone.clip.text_layers if backbone.clip else 0
        problem = self.strategy.schedule_problem(
            self.values(point), epochs, steps, backbone.depth, text_depth
        )
        if problem is not None:
            raise ValueError(f"strategy {self.strategy.name!r} at {point}: {problem}")
        return cfg

    def start_file(self, seed: int):
        return self.start_from.get(seed) if isinstance(self.start_from, dict) else self.start_from

    def build(self, point: dict, seed: int, share_backbone: bool = False, train: str = "train"):
        """The model of one grid point, to be trained on split `train`. share_backbone: use the job's backbone
        itself (only for strategies that freeze it), not a copy."""
        backbone = self.backbone if share_backbone else copy.deepcopy(self.backbone)
        if self.strategy.continues:
            load_backbone_of_run(backbone, self.start_file(seed))
        prototypes = None
        if self.strategy.uses_class_prototypes(self.values(point)):
            prototypes = self.class_prototypes(backbone, train, seed)
        torch.manual_seed(seed)
        return self.strategy.build(
            backbone,
            self.manifest["num_classes"],
            head_init=self.spec["train"]["head_init"],
            class_texts=self.class_texts(point),
            class_prototypes=prototypes,
            **self.values(point),
        )

    def class_prototypes(self, backbone, train: str, seed: int) -> torch.Tensor:
        """Per class, the mean last-block CLS output of the run's backbone over split `train` (computed once per
        split and starting backbone): the start of class-prototype prompts."""
        key = (train, str(self.start_file(seed)) if self.strategy.continues else None)
        if key not in self._prototypes:
            from vptft.data import Normalize
            from vptft.strategies.prompts import class_prototypes

            data = self.split(train)
            normalize = Normalize(self.input_cfg["mean"], self.input_cfg["std"], self.input_cfg.get("size"))
            self._prototypes[key] = class_prototypes(
                backbone.to(self.device),
                data.images,
                data.labels,
                self.manifest["num_classes"],
                normalize.to(self.device),
                self.device,
            )
        return self._prototypes[key]

    def class_texts(self, point: dict) -> list | None:
        """(class names, caption template) of the task, for a strategy read by CLIP's image-text head."""
        if not self.strategy.uses_text_head(self.values(point)):
            return None
        task = get_task(self.spec["task"])
        names = class_names(task, self.spec["data_dir"])
        if not names:
            raise ValueError(
                f"task {task.name!r}: its data set names no classes, and CLIP's image-text head "
                f"({self.strategy.name!r}) reads the class names"
            )
        return [names, task.prompt_template]

    def fit(self, model, train: str, evals: list[str], cfg: engine.FitConfig, checkpoint=None, desc=""):
        return engine.fit(
            model,
            self.split(train),
            {name: self.split(name) for name in evals},
            cfg,
            self.input_cfg,
            self.device,
            cache_features=self.strategy.cache_features,
            feature_cache=self.feature_cache if self.strategy.cache_features else None,
            checkpoint=checkpoint,
            desc=desc,
        )

    def fit_points(self, points: list[dict], seed: int, curve_points=1, desc: str = ""):
        """Train every grid point on train -> val, yielding (point, model, cfg, result). Heads on cached features
        train in lockstep (`head_grid`); anything else one point after another."""
        n_train = len(self.split("train"))
        cfgs = [self.fit_config(point, seed, n_train, curve_points) for point in points]
        if self.strategy.cache_features:  # a frozen backbone: the heads can share one copy of it
            models = [self.build(point, seed, share_backbone=True) for point in points]
            if head_grid.can_stack([m.head for m in models], cfgs):
                splits = {"train": self.split("train"), "val": self.split("val")}
                cached = engine.cached_features(
                    models[0].to(self.device),
                    splits,
                    self.feature_cache,
                    self.input_cfg,
                    self.device,
                    cfgs[0].precision,
                )
                results = head_grid.fit_heads(
                    models, cfgs, cached["train"], {"val": cached["val"]}, self.device
                )
                yield from zip(points, models, cfgs, results)
                return
        for point, cfg in zip(points, cfgs):  # lazily: one model in memory at a time
            model = self.build(point, seed)
            yield point, model, cfg, self.fit(model, "train", ["val"], cfg, desc=f"{desc} {point}")


def load_backbone_of_run(backbone, path) -> None:
    """Load the backbone weights a finished run saved (its `backbone.*` tensors) into `backbone`, exactly."""
    from safetensors.torch import load_file

    if path is None or not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: the run this strategy continues from has no weights file; run it first"
        )
    state = {
        k.removeprefix("backbone."): v for k, v in load_file(str(path)).items() if k.startswith("backbone.")
    }
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"{path}: not a whole backbone of this architecture (missing {missing[:3]}..., "
            f"unexpected {unexpected[:3]}...); it must come from a run that tunes every weight"
        )


def save_tuned(model, path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tuned_state_dict(model).items()}, str(tmp))


def run_sweep_chunk(
    spec: dict, manifest_path, backbone_path, out_csv, chunk: int = 0, start_from=None
) -> list[dict]:
    """Train the grid points of one chunk on train -> val and write one CSV row per point."""
    job = Job(spec, manifest_path, backbone_path, start_from)
    points = grid_points(spec["grid"])
    rows = []
    indices = list(chunk_indices(len(points), chunk, spec["train"]["sweep_chunk_size"]))
    trained = job.fit_points(
        [points[i] for i in indices], spec["train"]["sweep_seed"], desc=f"{spec['task']}/{spec['strategy']}"
    )
    for index, (point, model, cfg, result) in zip(indices, trained):
        rows.append(
            {
                "grid_index": index,
                **point,
                "batch_size": cfg.batch_size,
                "lr_scaled": cfg.scaled_lr,
                "epochs": cfg.epochs,
                "val_top1": result["final"]["val"]["top1"],
                "val_loss": result["final"]["val"]["loss"],
                "train_loss": result["train"]["loss"],
                "seconds": round(result["seconds"], 3),
                **parameter_counts(model),
            }
        )
        print(
            f"[sweep] {spec['task']} {spec['strategy']} {point}: val top-1 {rows[-1]['val_top1']:.2f} "
            f"({cfg.epochs} epochs, {result['seconds']:.1f}s)",
            flush=True,
        )
    write_csv(out_csv, rows)
    return rows


def training_facts(job: Job, cfg: engine.FitConfig) -> dict:
    """How a run trained, as recorded beside its result."""
    return {
        "lr_scaled": cfg.scaled_lr,
        "batch_size": cfg.batch_size,
        "optimizer": job.strategy.optimizer,
        "optimizer_behavior": cfg.optimizer_behavior,
        "precision": cfg.precision,
        "compile": cfg.compile,
        "backbone_dropout": job.spec["train"]["backbone_dropout"] if job.strategy.trains_backbone else 0.0,
    }


def storage_counts(job: Job, model) -> dict:
    """Parameters one task must store (all of them where the strategy needs its own backbone copy)."""
    backbone = sum(p.numel() for p in job.backbone.parameters())
    tuned = model.stored_parameters()
    per_task = tuned + backbone if job.strategy.stores_backbone and tuned < backbone else tuned
    return {"backbone_params": backbone, "task_params": per_task}


def provenance(job: Job, seed: int) -> dict:
    """What a result was made from: config hash, code and package versions, device, seed, input hashes."""

    def git_commit():
        try:
            return subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).parent,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    import timm

    import vptft

    device = str(job.device)
    if job.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(job.device)})"
    return {
        "config_hash": content_hash(job.spec),
        "seed": seed,
        "manifest": str(job.manifest_path),
        "manifest_sha256": job.manifest["sha256"],
        "backbone_checkpoint": str(job.backbone_path),
        "start_from": str(job.start_file(seed)) if job.strategy.continues else None,
        "device": device,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "host": platform.node(),
        "packages": {"vptft": vptft.__version__, "torch": torch.__version__, "timm": timm.__version__},
        "arithmetic": reproducibility.facts(),
    }


def run_key(job: Job, point: dict, seed: int, cfg: engine.FitConfig) -> str:
    """What makes two final runs the same run, whatever their strategy names: the registry strategy, every
    option resolved (a variant's fixed ones and the grid point's), the data, backbone, seed and training loop
    (checkpoint timing aside). `vpt_deep` at prompt_length 5 and `vpt_deep[prompt_length=5]` at the same lr
    share a key."""
    fit = dataclasses.asdict(cfg)
    fit.pop("checkpoint_interval_s")
    fit["eval_epochs"] = sorted(fit["eval_epochs"]) if fit["eval_epochs"] is not None else None
    return content_hash(
        {
            "strategy": job.strategy.base,
            "values": job.strategy.resolve(
                {k: v for k, v in job.values(point).items() if k not in ("lr", "wd")}
            ),
            "point": {k: point[k] for k in ("lr", "wd") if k in point},
            "seed": seed,
            "fit": fit,
            "train": {k: v for k, v in job.spec["train"].items() if k != "checkpoint_minutes"},
            "data": [job.spec["task"], job.spec["regime"], job.manifest["sha256"], job.final_split],
            "backbone": [job.spec["backbone"], str(job.backbone_path), str(job.start_file(seed))],
        }
    )


def _reusable(key: str, out_dir: Path) -> Path | None:
    """A finished final run of another strategy name in the same task and regime with this run key."""
    for metrics_path in sorted(out_dir.parent.parent.glob(f"*/{out_dir.name}/metrics.json")):
        run = metrics_path.parent
        finished = run != out_dir and all((run / f).is_file() for f in ("curves.csv", "tuned.safetensors"))
        if finished and (read_json(metrics_path).get("provenance") or {}).get("run_key") == key:
            return run
    return None


def _reuse(job: Job, point: dict, seed: int, source: Path, out_dir: Path, key: str) -> dict:
    """This run from an equal one (`run_key`): its files copied, its metrics under this strategy's name."""
    for name in ("curves.csv", "tuned.safetensors"):
        with atomic_path(out_dir / name) as tmp:
            shutil.copyfile(source / name, tmp)
    metrics = {
        **read_json(source / "metrics.json"),
        "strategy": job.spec["strategy"],
        "base_strategy": job.strategy.base,
        "variant": dict(job.strategy.variant),
        "hparams": point,
        "options": job.spec.get("options", {}),
        "provenance": {**provenance(job, seed), "run_key": key, "reused_from": str(source)},
    }
    write_json(out_dir / "metrics.json", metrics)
    print(f"[train] {job.spec['strategy']} seed {seed}: the same run as {source}, reused", flush=True)
    return metrics


def _final_run(job: Job, point: dict, seed: int, out_dir: Path) -> dict:
    spec = job.spec
    final_split = job.final_split
    cfg = job.fit_config(
        point, seed, len(job.split(final_split)), curve_points=spec["train"].get("curve_points")
    )
    key = run_key(job, point, seed, cfg)
    if (source := _reusable(key, out_dir)) is not None:
        return _reuse(job, point, seed, source, out_dir, key)
    model = job.build(point, seed, train=final_split)
    result = job.fit(
        model,
        final_split,
        ["test"],
        cfg,
        checkpoint=out_dir / "checkpoint.pt",
        desc=f"{spec['task']}/{spec['strategy']} seed {seed}",
    )
    write_csv(out_dir / "curves.csv", result["curves"])
    save_tuned(model, out_dir / "tuned.safetensors")
    metrics = {
        "task": spec["task"],
        "regime": spec["regime"],
        "strategy": spec["strategy"],
        "base_strategy": job.strategy.base,  # a variant's registry strategy and the options its name fixes
        "variant": dict(job.strategy.variant),
        "backbone": spec["backbone"],
        "seed": seed,
        "hparams": point,
        "options": spec.get("options", {}),
        "data": {
            "n_train": sum(job.manifest["class_counts"]["train"]),
            "n_val": sum(job.manifest["class_counts"]["val"]),
            "capped": job.manifest.get("capped"),
        },
        **training_facts(job, cfg),
        "epochs": result["epochs"],  # 0 where nothing trains (zero-shot CLIP)
        "test_top1": result["final"]["test"]["top1"],
        "test_loss": result["final"]["test"]["loss"],
        "train_loss": result["train"]["loss"],
        "train_top1": result["train"]["top1"],
        "n_train": len(job.split(final_split)),
        "final_split": final_split,
        "n_test": len(job.split("test")),
        **parameter_counts(model),
        **storage_counts(job, model),
        "summary": model.summary(),
        "class_texts": job.class_texts(point),  # CLIP's image-text head: the class names and caption template
        "seconds": round(result["seconds"], 3),
        "checkpoints": result["checkpoints"],
        "checkpoint_bytes": result["checkpoint_bytes"],
        "provenance": {**provenance(job, seed), "run_key": key},
    }
    write_json(out_dir / "metrics.json", metrics)
    print(
        json.dumps({k: metrics[k] for k in ("task", "strategy", "seed", "hparams", "test_top1")}), flush=True
    )
    return metrics


def run_final(
    spec: dict,
    manifest_path,
    backbone_path,
    sweep_csv,
    runs_dir,
    seeds: list[int],
    start_from: dict | None = None,
) -> list[dict]:
    """Train the selected point on the manifest's final split (trainval; FGVC: train) once per seed (data and
    backbone loaded once); each seed writes
    seed{s}/metrics.json, curves.csv and tuned.safetensors under runs_dir.

    Every seed keeps its epoch checkpoint until all seeds are done, so a killed job resumes each seed where it
    stopped (a finished seed is re-created from its last checkpoint without training).
    """
    runs_dir = Path(runs_dir)
    job = Job(spec, manifest_path, backbone_path, start_from)
    point = selected_point(sweep_csv, spec["grid"])
    results = [_final_run(job, point, seed, runs_dir / f"seed{seed}") for seed in seeds]
    for seed in seeds:
        (runs_dir / f"seed{seed}" / "checkpoint.pt").unlink(missing_ok=True)
    return results


def run_stage1(spec: dict, manifest_path, backbone_path, sweep_csv, out) -> dict:
    """The selected sweep point of a strategy retrained on the sweep's train split with the sweep seed (what the
    sweep trained and discarded), saved whole: the backbone a continuing strategy (FT-then-PT) sweeps on."""
    job = Job(spec, manifest_path, backbone_path)
    point = selected_point(sweep_csv, spec["grid"])
    seed = spec["train"]["sweep_seed"]
    model = job.build(point, seed)
    cfg = job.fit_config(point, seed, len(job.split("train")), curve_points=1)
    result = job.fit(model, "train", ["val"], cfg, desc=f"{spec['task']}/{spec['strategy']} stage 1 {point}")
    save_tuned(model, out)
    print(
        f"[stage1] {spec['task']} {spec['strategy']} {point}: val top-1 {result['final']['val']['top1']:.2f}",
        flush=True,
    )
    return result
