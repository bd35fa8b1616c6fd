"""Pre-train a mini backbone on the rendered source set (the mini benchmark's stand-in for ImageNet-21k), by the
registry entry's objective: supervised on the source classes, or masked autoencoding (vptft.mae).

Writes a timm-loadable safetensors checkpoint (no classifier) and a report with the held-out source accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from vptft import engine, reproducibility
from vptft.backbones import BACKBONES
from vptft.backbones.factory import input_config
from vptft.data import Normalize, SplitData, to_uint8_tensor
from vptft.io import atomic_path, write_json
from vptft.mae import MaskedAutoencoder, knn_top1
from vptft.schedule import lr_factor
from vptft.tasks.mini import SOURCE_SHAPES, render_source


class _FlipAugmented(torch.nn.Module):
    """Random horizontal flip during training (the only augmentation of the pre-training recipe)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        if self.training:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return self.model(x)


def portable_trunc_normal_(tensor: torch.Tensor, std: float, low: float = -2.0, high: float = 2.0):
    """N(0, std) truncated to [low, high] (absolute bounds, as timm's trunc_normal_), drawn by rejection from
    torch's normal sampler: the same bits on every CPU. timm's own draws through erfinv, which torch takes from
    MKL's vector math library, whose bits differ between Intel and AMD CPUs."""
    with torch.no_grad():
        tensor.normal_(0.0, std)
        while (outside := (tensor < low) | (tensor > high)).any():
            tensor[outside] = torch.empty(int(outside.sum())).normal_(0.0, std)
    return tensor


def redraw_truncated_normals(model: torch.nn.Module) -> None:
    """timm's ViT / Swin initialisation, with its truncated normals drawn portably: every Linear weight, the
    position embedding and Swin's relative-position bias tables N(0, 0.02) cut at +-2 (biases, norms, the class
    token and the patch convolution keep timm's draws, which are portable)."""
    for name, param in model.named_parameters():
        if name == "pos_embed" or name.endswith("relative_position_bias_table"):
            portable_trunc_normal_(param, std=0.02)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            portable_trunc_normal_(module.weight, std=0.02)


def _supervised(cfg: dict, spec, train: SplitData, heldout: SplitData, device: str):
    """Cross-entropy on the source classes (flip augmentation): (model, held-out top-1, curves, extras, why it
    failed or None)."""
    model = timm.create_model(
        spec.timm_name, pretrained=False, num_classes=len(SOURCE_SHAPES), **spec.timm_args
    )
    redraw_truncated_normals(model)
    fit_cfg = engine.FitConfig(
        optimizer="adamw",
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        epochs=cfg["epochs"],
        warmup_epochs=cfg["warmup_epochs"],
        batch_size=cfg["batch_size"],
        seed=cfg["seed"],
        lr_scale_batch=None,
        optimizer_behavior="plain",
        eval_epochs=engine.eval_epochs(cfg["epochs"], cfg.get("curve_points", 10)),
    )
    result = engine.fit(
        _FlipAugmented(model),
        train,
        {"heldout": heldout},
        fit_cfg,
        input_config(model),
        engine.pick_device(device),
        desc="pretrain",
    )
    for row in result["curves"]:
        if "heldout_top1" in row:
            print(
                f"[pretrain] epoch {row['epoch']:3d}  train loss {row['train_loss']:.3f}  "
                f"held-out top-1 {row['heldout_top1']:.1f}%",
                flush=True,
            )
    top1 = result["final"]["heldout"]["top1"]
    problem = None
    if top1 < cfg["min_heldout_top1"]:
        problem = (
            f"held-out top-1 {top1:.1f}% is below pretrain.min_heldout_top1 = {cfg['min_heldout_top1']}% "
            f"(chance {100.0 / len(SOURCE_SHAPES):.1f}%)"
        )
    return model, top1, result["curves"], {}, problem


def _masked_autoencoding(cfg: dict, spec, train: SplitData, heldout: SplitData, device: str):
    """MAE on the source images (labels unused; flip augmentation): (encoder, held-out kNN top-1 of its
    average-pooled patch features, curves, extras with the held-out reconstruction loss, why it failed or
    None). It fails on its own objective, not on the class information (MAE's features hold little of it)."""
    encoder = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)  # MAE's layout: final norm
    redraw_truncated_normals(encoder)
    model = MaskedAutoencoder(encoder).to(engine.pick_device(device))
    dev = next(model.parameters()).device
    normalize = Normalize(*(input_config(encoder)[k] for k in ("mean", "std"))).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    g = torch.Generator().manual_seed(cfg["seed"])
    curves, evals = [], engine.eval_epochs(cfg["epochs"], cfg.get("curve_points", 10))
    for epoch in range(cfg["epochs"]):
        for group in optimizer.param_groups:
            group["lr"] = cfg["lr"] * lr_factor(epoch, cfg["warmup_epochs"], cfg["epochs"])
        model.train()
        order, losses = torch.randperm(len(train), generator=g), []
        for start in range(0, len(order), cfg["batch_size"]):
            batch = normalize(train.images[order[start : start + cfg["batch_size"]]].to(dev))
            flip = torch.rand(len(batch), generator=g) < 0.5
            batch = torch.where(flip[:, None, None, None].to(dev), batch.flip(-1), batch)
            loss = model.loss(batch, g)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        row = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses)}
        if evals is None or epoch in evals:
            row["heldout_loss"] = _heldout_loss(model, normalize, heldout, cfg["seed"])
            print(
                f"[pretrain] epoch {epoch + 1:3d}  train loss {row['train_loss']:.3f}  "
                f"held-out reconstruction loss {row['heldout_loss']:.3f}",
                flush=True,
            )
        curves.append(row)
    features = {
        name: _pooled(model, normalize, split) for name, split in (("train", train), ("heldout", heldout))
    }
    top1 = knn_top1(features["train"], train.labels, features["heldout"], heldout.labels)
    loss = curves[-1]["heldout_loss"]
    extras = {
        "objective": "masked autoencoding (75% of patches masked)",
        "heldout_reconstruction_loss": loss,
        "reconstruction_loss_of_predicting_each_patch_mean": 1.0,
        "heldout_top1_is": "20-nearest-neighbour vote on average-pooled patch features",
    }
    problem = None
    if loss > cfg["max_reconstruction_loss"]:
        problem = (
            f"held-out reconstruction loss {loss:.3f} is above pretrain.max_reconstruction_loss = "
            f"{cfg['max_reconstruction_loss']} (predicting each patch's mean: 1.0)"
        )
    return encoder, top1, curves, extras, problem


def _batches(model, normalize, split: SplitData, size: int = 256):
    """The split's images, normalised on the model's device, `size` at a time, with the model in eval mode."""
    model.eval()
    for i in range(0, len(split), size):
        yield normalize(split.images[i : i + size].to(normalize.mean.device))


@torch.no_grad()
def _heldout_loss(model, normalize, heldout: SplitData, seed: int) -> float:
    g = torch.Generator().manual_seed(seed + 1)  # the same masks every evaluation
    return sum(float(model.loss(x, g)) * len(x) for x in _batches(model, normalize, heldout)) / len(heldout)


@torch.no_grad()
def _pooled(model, normalize, split: SplitData) -> torch.Tensor:
    return torch.cat([model.encode(x)[:, 1:].mean(1).cpu() for x in _batches(model, normalize, split)])


OBJECTIVES = {"supervised": _supervised, "mae": _masked_autoencoding}


def run_pretrain(cfg: dict, backbone_key: str, out_dir, device: str = "auto") -> dict:
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    n_train, n_heldout = cfg["n_train"], cfg["n_heldout"]
    images, labels = render_source(n_train + n_heldout, cfg["seed"])
    print(f"[pretrain] rendered {len(labels)} source images in {time.perf_counter() - t0:.1f}s", flush=True)
    torch.manual_seed(cfg["seed"])  # the initial weights too: the backbone is deterministic from the seed
    spec = BACKBONES[backbone_key]
    size = (spec.preprocessing.size, spec.preprocessing.size)
    x = to_uint8_tensor(images, size)
    y = torch.as_tensor(labels)
    train, heldout = SplitData(x[:n_train], y[:n_train]), SplitData(x[n_train:], y[n_train:])
    model, top1, curves, extras, problem = OBJECTIVES[spec.objective](cfg, spec, train, heldout, device)
    chance = 100.0 / len(SOURCE_SHAPES)
    if problem:  # checked before anything is written: no checkpoint of a failed run
        raise RuntimeError(f"pre-training of {backbone_key!r} failed: {problem}; check the pretrain config")
    state = {
        k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("head.")
    }
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    report = {
        "backbone": backbone_key,
        "num_classes": len(SOURCE_SHAPES),
        "n_train": n_train,
        "n_heldout": n_heldout,
        "heldout_top1": top1,
        "chance_top1": chance,
        **extras,
        "epochs": cfg["epochs"],
        "seconds": round(time.perf_counter() - t0, 1),
        "curves": curves,
        "config": cfg,
        "arithmetic": reproducibility.facts(),
    }
    write_json(out_dir / "pretrain.json", report)
    print(
        f"[pretrain] held-out source top-1 {top1:.1f}% (chance {chance:.1f}%) after {cfg['epochs']} epochs, "
        f"{report['seconds']}s",
        flush=True,
    )
    return report
