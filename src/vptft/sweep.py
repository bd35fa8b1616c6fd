"""Hyper-parameter search and final runs (REFERENCE.md sections 1-2).

A grid (lr x wd x the strategy's extras) is trained on train -> val and the point with the best last-epoch
val top-1 selected (vptft.selection); final runs train on train+val (trainval) with each seed and report
last-epoch test top-1. A job loads its data and backbone once and trains several grid points or seeds.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from vptft import engine
from vptft.backbones import create_backbone, input_config
from vptft.data import load_split
from vptft.io import atomic_path, content_hash, write_json
from vptft.selection import GRID_KEYS_FIRST, chunk_indices, grid_points, selected_point, write_csv
from vptft.splits import read_manifest
from vptft.strategies import get_strategy
from vptft.strategies.heads import parameter_counts


class Job:
    """What one job loads once: its manifest, backbone and input config, device, and decoded splits."""

    def __init__(self, spec: dict, manifest_path, backbone_path):
        self.spec = spec
        self.manifest_path = Path(manifest_path)
        self.manifest = read_manifest(manifest_path)
        self.device = engine.pick_device(spec["train"].get("device", "auto"))
        if self.device.type == "cpu":  # CPU runs are bit-reproducible, so a resumed run ends where a straight one does
            torch.use_deterministic_algorithms(True)
        self.backbone = create_backbone(spec["backbone"], backbone_path)
        self.backbone_path = backbone_path
        self.input_cfg = input_config(self.backbone, spec["train"]["normalization"])
        self.strategy = get_strategy(spec["strategy"])
        self.feature_cache: dict = {}
        self._splits: dict = {}

    def split(self, name: str):
        if name not in self._splits:
            self._splits[name] = load_split(self.manifest, name, self.spec["data_dir"], self.input_cfg["size"])
        return self._splits[name]

    def fit_config(self, point: dict, seed: int, n_train: int, curve_points) -> engine.FitConfig:
        t = self.spec["train"]
        epochs = engine.epochs_for(n_train, t["batch_size"], t["epochs"], t.get("min_steps", 0))
        return engine.FitConfig(
            optimizer=self.strategy.optimizer, lr=float(point["lr"]), weight_decay=float(point["wd"]),
            epochs=epochs, warmup_epochs=max(1, round(t["warmup_fraction"] * epochs)) if t["warmup_fraction"] else 0,
            batch_size=t["batch_size"], seed=seed, lr_scale_batch=t.get("lr_scale_batch"),
            eval_epochs=engine.eval_epochs(epochs, curve_points))

    def build(self, point: dict, seed: int):
        torch.manual_seed(seed)
        extras = {k: v for k, v in {**self.spec.get("options", {}), **point}.items() if k not in GRID_KEYS_FIRST}
        return self.strategy.build(copy.deepcopy(self.backbone), self.manifest["num_classes"],
                                   head_init=self.spec["train"]["head_init"], **extras)

    def fit(self, model, train: str, evals: list[str], cfg: engine.FitConfig, checkpoint=None, desc=""):
        return engine.fit(model, self.split(train), {name: self.split(name) for name in evals}, cfg, self.input_cfg,
                          self.device, cache_features=self.strategy.cache_features, feature_cache=self.feature_cache
                          if self.strategy.cache_features else None, checkpoint=checkpoint, desc=desc)


def run_sweep_chunk(spec: dict, manifest_path, backbone_path, out_csv, chunk: int = 0) -> list[dict]:
    """Train the grid points of one chunk on train -> val and write one CSV row per point."""
    job = Job(spec, manifest_path, backbone_path)
    points = grid_points(spec["grid"])
    rows = []
    for index in chunk_indices(len(points), chunk, spec["train"]["sweep_chunk_size"]):
        point = points[index]
        seed = spec["train"]["sweep_seed"]
        model = job.build(point, seed)
        cfg = job.fit_config(point, seed, len(job.split("train")), curve_points=1)
        result = job.fit(model, "train", ["val"], cfg, desc=f"{spec['task']}/{spec['strategy']} {point}")
        rows.append({"grid_index": index, **point, "lr_scaled": cfg.scaled_lr, "epochs": cfg.epochs,
                     "val_top1": result["final"]["val"]["top1"], "val_loss": result["final"]["val"]["loss"],
                     "train_loss": result["train"]["loss"], "seconds": round(result["seconds"], 3),
                     **parameter_counts(model)})
        print(f"[sweep] {spec['task']} {spec['strategy']} {point}: val top-1 {rows[-1]['val_top1']:.2f} "
              f"({cfg.epochs} epochs, {result['seconds']:.1f}s)", flush=True)
    write_csv(out_csv, rows)
    return rows


def provenance(job: Job, seed: int) -> dict:
    """What a result was made from: config hash, code and package versions, device, seed, input hashes."""
    def git_commit():
        try:
            return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).parent).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    import timm

    import vptft

    device = str(job.device)
    if job.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(job.device)})"
    return {"config_hash": content_hash(job.spec), "seed": seed, "manifest": str(job.manifest_path),
            "manifest_sha256": job.manifest["sha256"], "backbone_checkpoint": str(job.backbone_path),
            "device": device, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "git_commit": git_commit(),
            "python": platform.python_version(), "host": platform.node(),
            "packages": {"vptft": vptft.__version__, "torch": torch.__version__, "timm": timm.__version__}}


def _final_run(job: Job, point: dict, seed: int, out_dir: Path) -> dict:
    from safetensors.torch import save_file

    from vptft.strategies.heads import tuned_parameters

    spec = job.spec
    model = job.build(point, seed)
    cfg = job.fit_config(point, seed, len(job.split("trainval")), curve_points=spec["train"].get("curve_points"))
    result = job.fit(model, "trainval", ["test"], cfg, checkpoint=out_dir / "checkpoint.pt",
                     desc=f"{spec['task']}/{spec['strategy']} seed {seed}")
    write_csv(out_dir / "curves.csv", result["curves"])
    with atomic_path(out_dir / "tuned.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tuned_parameters(model).items()}, str(tmp))
    metrics = {"task": spec["task"], "regime": spec["regime"], "strategy": spec["strategy"],
               "backbone": spec["backbone"], "seed": seed, "hparams": point, "lr_scaled": cfg.scaled_lr,
               "epochs": cfg.epochs, "test_top1": result["final"]["test"]["top1"],
               "test_loss": result["final"]["test"]["loss"], "train_loss": result["train"]["loss"],
               "train_top1": result["train"]["top1"], "n_train": len(job.split("trainval")),
               "n_test": len(job.split("test")), **parameter_counts(model),
               "seconds": round(result["seconds"], 3), "provenance": provenance(job, seed)}
    write_json(out_dir / "metrics.json", metrics)
    print(json.dumps({k: metrics[k] for k in ("task", "strategy", "seed", "hparams", "test_top1")}), flush=True)
    return metrics


def run_final(spec: dict, manifest_path, backbone_path, sweep_csv, runs_dir, seeds: list[int]) -> list[dict]:
    """Train the selected point on trainval once per seed (data and backbone loaded once); each seed writes
    seed{s}/metrics.json, curves.csv and tuned.safetensors under runs_dir.

    Every seed keeps its epoch checkpoint until all seeds are done, so a killed job resumes each seed where it
    stopped (a finished seed is re-created from its last checkpoint without training).
    """
    runs_dir = Path(runs_dir)
    job = Job(spec, manifest_path, backbone_path)
    point = selected_point(sweep_csv, spec["grid"])
    results = [_final_run(job, point, seed, runs_dir / f"seed{seed}") for seed in seeds]
    for seed in seeds:
        (runs_dir / f"seed{seed}" / "checkpoint.pt").unlink(missing_ok=True)
    return results
