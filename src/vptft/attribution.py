"""Attribution maps for test images one strategy gets wrong and another right (the paper's Figures 8/17/18):
GradCAM on the patch-token grid and Integrated Gradients on the input, for two finished final runs.

GradCAM reads the patch tokens of a token layer as a (N, D, gh, gw) map, so captum averages the gradients over
the patch grid per channel; the CLS and any prompt tokens before the last gh * gw tokens are left out. Its
default layer is the last block's `norm1` (the input of the last attention, pytorch-grad-cam's choice for ViTs):
a CLS-pooled ViT reads no patch token after that attention, so GradCAM on the final-normed tokens
(`layer=model.backbone.norm`) is identically zero for it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vptft.io import atomic_path, read_json
from vptft.strategies.tokens import token_interface

# ------------------------------------------------------------------------------------------------- GradCAM


class PatchGrid(nn.Identity):
    """Identity on the patch-token grid (N, D, gh, gw): the layer captum's LayerGradCam hooks."""


class _GridView(nn.Module):
    """Runs `model` with the first output of `layer` in each forward pass split into [prefix, patches], the
    patches passed through `patch_grid` as a (N, D, gh, gw) map (later outputs of `layer` in the same pass,
    e.g. KV-prompt models' prompts through the same norm, are left alone)."""

    def __init__(self, model: nn.Module, layer: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.model, self.layer, self.grid = model, layer, tuple(grid)
        self.patch_grid = PatchGrid()
        self._pending = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._pending = True
        handle = self.layer.register_forward_hook(self._hook)
        try:
            return self.model(x)
        finally:
            handle.remove()
            self._pending = False

    def _hook(self, module, args, out):
        if not self._pending:
            return None
        self._pending = False
        gh, gw = self.grid
        if out.ndim != 3 or out.shape[1] < gh * gw:
            raise ValueError(
                f"layer output {tuple(out.shape)} is not (N, T, D) tokens with {gh}x{gw} patches"
            )
        prefix, patches = out[:, : out.shape[1] - gh * gw], out[:, out.shape[1] - gh * gw :]
        n, _, d = patches.shape
        mapped = self.patch_grid(patches.transpose(1, 2).reshape(n, d, gh, gw))
        return torch.cat([prefix, mapped.flatten(2).transpose(1, 2)], dim=1)


def default_cam_layer(model: nn.Module) -> nn.Module:
    """The layer GradCAM reads: the backbone family's choice (vptft.strategies.tokens)."""
    return token_interface(model.backbone).cam_layer


def patch_grid_size(model: nn.Module) -> tuple[int, int]:
    """(gh, gw) of the backbone's patch grid."""
    return token_interface(model.backbone).grid_size


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    grid: tuple[int, int],
    layer: nn.Module | None = None,
) -> torch.Tensor:
    """GradCAM (N, gh, gw) of class `target` (N,) on the patch tokens of `layer`'s output (default:
    `default_cam_layer`): relu(sum_c mean_patches(dy/dA_c) * A_c), by captum's LayerGradCam."""
    from captum.attr import LayerGradCam

    view = _GridView(model, layer if layer is not None else default_cam_layer(model), grid)
    x = x.detach().clone().requires_grad_(True)  # a gradient path even where no parameter of `model` trains
    cam = LayerGradCam(view, view.patch_grid).attribute(x, target=target, relu_attributions=True)
    return cam.squeeze(1).detach()


# ------------------------------------------------------------------------------------- Integrated Gradients


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    steps: int = 32,
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated Gradients (N, 3, H, W) of class `target` from the zero baseline (zero in the normalised input
    space) and captum's convergence delta (N,): sum(attributions) - (f(x) - f(0)) of the target logit."""
    from captum.attr import IntegratedGradients

    attr, delta = IntegratedGradients(model).attribute(
        x,
        baselines=torch.zeros_like(x),
        target=target,
        n_steps=steps,
        return_convergence_delta=True,
        internal_batch_size=internal_batch_size or steps,
    )
    return attr.detach(), delta.detach()


# --------------------------------------------------------------------------------------- trained models


def _resolve_start_from(metrics: dict, run_dir: Path, start_from) -> Path:
    """The weights file a continuing strategy's backbone started from: given, or recorded in the provenance."""
    if start_from is None:
        start_from = (metrics.get("provenance") or {}).get("start_from")
    if start_from is None:
        raise ValueError(
            f"{run_dir}/metrics.json: strategy {metrics['strategy']!r} continues another run but "
            "records no start_from; pass the weights file it started from"
        )
    return Path(start_from)


def load_trained(run_dir, backbone_path, num_classes: int, backbone_key: str | None = None, start_from=None):
    """The model of a final run (eval mode) from run_dir/metrics.json and run_dir/tuned.safetensors.

    The tuned file holds what training changed; every other tensor comes from the backbone checkpoint. A
    strategy that continues another run (FT-then-PT) tunes only prompts and head, so its backbone first loads the
    run it continued (`start_from`, default the path recorded in its provenance)."""
    from safetensors.torch import load_file

    from vptft.backbones.factory import create_backbone
    from vptft.strategies import get_strategy
    from vptft.strategies.base import tuned_state_dict
    from vptft.sweep import load_backbone_of_run

    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json")
    key = backbone_key or metrics["backbone"]
    if metrics.get("backbone", key) != key:
        raise ValueError(f"{run_dir}/metrics.json: run used backbone {metrics['backbone']!r}, not {key!r}")
    strategy = get_strategy(metrics["strategy"])
    backbone = create_backbone(key, backbone_path)
    if strategy.continues:
        load_backbone_of_run(backbone, _resolve_start_from(metrics, run_dir, start_from))
    values = {**metrics.get("options", {}), **metrics["hparams"]}
    # class-prototype prompts: their start has the shape of the run's; the run's weights file replaces it
    start = torch.zeros(num_classes, backbone.embed_dim) if strategy.uses_class_prototypes(values) else None
    model = strategy.build(
        backbone,
        num_classes,
        head_init="zero",
        class_texts=metrics.get("class_texts"),
        class_prototypes=start,
        **values,
    )
    path = run_dir / "tuned.safetensors"
    tuned = load_file(str(path))
    state = model.state_dict()
    unknown = sorted(set(tuned) - set(state))
    missing = sorted(set(tuned_state_dict(model)) - set(tuned))
    if unknown or missing:
        raise ValueError(
            f"{path}: does not fit strategy {strategy.name!r} at {values} (keys not in the model: "
            f"{unknown[:5]}, tuned keys not in the file: {missing[:5]})"
        )
    wrong = [k for k, v in tuned.items() if v.shape != state[k].shape]
    if wrong:
        raise ValueError(f"{path}: shapes differ from the model's for {wrong[:5]}")
    model.load_state_dict(tuned, strict=False)
    return model.eval()


def load_run_of(
    run_dir, task: str, strategy: str, num_classes: int, backbone_path, backbone_key: str, device
):
    """(model on `device`, metrics) of a final run, refused unless it is `strategy`'s run on `task`."""
    metrics = read_json(Path(run_dir) / "metrics.json")
    if (metrics["task"], metrics["strategy"]) != (task, strategy):
        raise ValueError(
            f"{run_dir}: a run of {metrics['strategy']!r} on {metrics['task']!r}, not {strategy!r} on {task!r}"
        )
    return load_trained(run_dir, backbone_path, num_classes, backbone_key).to(device), metrics


# ------------------------------------------------------------------------------------------------ the job


def pick_examples(labels, pred_a, pred_b, n: int, seed: int) -> np.ndarray:
    """Indices (ascending) where `pred_a` is wrong and `pred_b` right: the first `n` such in a permutation of all
    indices seeded by `seed` (as many as exist when fewer)."""
    labels, pred_a, pred_b = (np.asarray(torch.as_tensor(v).cpu()) for v in (labels, pred_a, pred_b))
    qualifies = (pred_a != labels) & (pred_b == labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    return np.sort(order[qualifies[order]][:n]).astype(np.int64)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, normalize: nn.Module, device, batch_size: int = 256):
    """Predicted classes (N,) of uint8 images, in batches."""
    preds = [
        model(normalize(images[i : i + batch_size].to(device))).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64)


def _write_npz(path, arrays: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def _write_rows(path, fields: list[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _attribute(model, x, target, grid, steps: int) -> dict:
    """GradCAM (n, gh, gw), IG summed |.| over channels (n, H, W) and the IG delta (n,) of one model."""
    if len(x) == 0:
        return {
            "gradcam": np.zeros((0, *grid), np.float32),
            "ig": np.zeros((0, *x.shape[2:]), np.float32),
            "ig_delta": np.zeros(0, np.float32),
        }
    cam = gradcam(model, x, target, grid)
    igs, deltas = zip(
        *(integrated_gradients(model, x[i : i + 1], target[i : i + 1], steps) for i in range(len(x)))
    )
    return {
        "gradcam": cam.cpu().numpy(),
        "ig": torch.cat(igs).abs().sum(1).cpu().numpy(),
        "ig_delta": torch.cat(deltas).cpu().numpy(),
    }


def run_attribution(spec: dict, manifest_path, backbone_path, runs: dict[str, str], out_dir) -> dict:
    """GradCAM and IG maps of both models of spec.attribution.pair on test images pair[0] gets wrong and
    pair[1] right; writes out_dir/maps.npz and out_dir/index.csv (empty when no image qualifies)."""
    from vptft.backbones.factory import input_config
    from vptft.data import Normalize, load_split
    from vptft.engine import pick_device
    from vptft.splits import read_manifest

    cfg = spec["attribution"]
    pair = list(cfg["pair"])
    if len(pair) != 2 or pair[0] == pair[1] or any(s not in runs for s in pair):
        raise ValueError(
            f"attribution.pair {pair} must name two different strategies of the runs {sorted(runs)}"
        )
    manifest = read_manifest(manifest_path)
    if manifest["task"] != spec["task"]:
        raise ValueError(f"{manifest_path}: manifest of task {manifest['task']!r}, not {spec['task']!r}")
    device = pick_device(spec["device"])
    recorded, models = {}, {}
    for name in pair:
        metrics = read_json(Path(runs[name]) / "metrics.json")
        if (metrics["strategy"], metrics["task"]) != (name, spec["task"]):
            raise ValueError(
                f"{runs[name]}: a run of {metrics['strategy']!r} on {metrics['task']!r}, "
                f"not {name!r} on {spec['task']!r}"
            )
        recorded[name] = metrics.get("test_top1")
        models[name] = load_trained(runs[name], backbone_path, manifest["num_classes"], spec["backbone"]).to(
            device
        )
    input_cfg = input_config(models[pair[0]].backbone, spec["normalization"])
    normalize = Normalize(input_cfg["mean"], input_cfg["std"], input_cfg.get("size")).to(device)
    test = load_split(manifest, "test", spec["data_dir"], input_cfg["size"])
    preds = {name: predict(model, test.images, normalize, device) for name, model in models.items()}
    top1 = {
        name: 100.0 * (p == test.labels).float().mean().item() if len(test) else 0.0
        for name, p in preds.items()
    }
    qualifies = (preds[pair[0]] != test.labels) & (preds[pair[1]] == test.labels)
    index = pick_examples(test.labels, preds[pair[0]], preds[pair[1]], int(cfg["n_images"]), int(cfg["seed"]))

    grid = patch_grid_size(models[pair[0]])
    idx = torch.as_tensor(index)
    x = normalize(test.images[idx].to(device))
    from vptft import tasks

    arrays = {
        "index": index,
        "images": test.images[idx].numpy(),
        "labels": test.labels[idx].numpy(),
        "pair": np.array(pair),
        "class_names": np.array(tasks.class_names(tasks.get_task(spec["task"]), spec["data_dir"]), dtype=str),
    }
    for name in pair:
        target = preds[name][idx].to(device)
        maps = _attribute(models[name], x, target, grid, int(cfg["ig_steps"]))
        arrays[f"pred_{name}"] = preds[name][idx].numpy()
        arrays.update({f"{key}_{name}": value for key, value in maps.items()})

    out_dir = Path(out_dir)
    _write_npz(out_dir / "maps.npz", arrays)
    fields = ["test_index", "label", *(f"pred_{s}" for s in pair), *(f"ig_delta_{s}" for s in pair)]
    rows = [
        {
            "test_index": int(i),
            "label": int(arrays["labels"][k]),
            **{f"pred_{s}": int(arrays[f"pred_{s}"][k]) for s in pair},
            **{f"ig_delta_{s}": float(arrays[f"ig_delta_{s}"][k]) for s in pair},
        }
        for k, i in enumerate(index)
    ]
    _write_rows(out_dir / "index.csv", fields, rows)

    summary = {
        "task": spec["task"],
        "pair": pair,
        "n_test": len(test),
        "n_candidates": int(qualifies.sum()),
        "n_images": len(index),
        "test_top1": top1,
        "recorded_test_top1": recorded,
    }
    if not len(index):
        print(
            f"[attribution] {spec['task']}: no test image that {pair[0]} gets wrong and {pair[1]} right; "
            "wrote empty maps",
            flush=True,
        )
    for name in pair:
        if recorded[name] is not None and abs(recorded[name] - top1[name]) > 1.0:
            print(
                f"[attribution] WARNING {spec['task']} {name}: test top-1 {top1[name]:.2f} of the loaded model "
                f"differs from the run's recorded {recorded[name]:.2f}",
                flush=True,
            )
    print(
        f"[attribution] {spec['task']} {pair[0]} wrong / {pair[1]} right: {summary['n_candidates']} candidates, "
        f"{len(index)} mapped; test top-1 " + ", ".join(f"{s} {top1[s]:.2f}" for s in pair),
        flush=True,
    )
    return summary
