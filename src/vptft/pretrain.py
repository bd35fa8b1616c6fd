"""Pre-train a mini backbone on the rendered source set (the mini benchmark's stand-in for ImageNet-21k), by the
registry entry's objective: supervised on the source classes, masked autoencoding (vptft.mae) or contrastive
(vptft.contrastive).

Writes a timm-loadable safetensors checkpoint (no classifier) and a report with the held-out source accuracy.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from vptft import engine, reproducibility
from vptft.backbones import BACKBONES
from vptft.backbones.factory import input_config
from vptft.contrastive import ContrastiveLearner
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


def decay_groups(model) -> list[dict]:
    """open_clip's training rule: weight decay on matrices only, none on gains, biases, embeddings and the logit
    scale (with decay on them the mini CLIP stayed collapsed at the uniform loss)."""
    decay, rest = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            plain = param.ndim < 2 or "embedding" in name or "logit_scale" in name or "ln_" in name
            (rest if plain else decay).append(param)
    return [{"params": decay}, {"params": rest, "weight_decay": 0.0}]


def _self_supervised_fit(
    cfg: dict, model, normalize, train: SplitData, heldout: SplitData, batch_loss, what, no_decay=False
):
    """AdamW on `batch_loss(model, uint8 batch, its labels, generator)` with warm-up and cosine decay (only the
    image-text objective reads the labels: they name the captions); the held-out loss (the same random draws
    every time) at the curve's epochs. Returns the curves."""
    dev = normalize.mean.device
    optimizer = torch.optim.AdamW(
        decay_groups(model) if no_decay else [p for p in model.parameters() if p.requires_grad],
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
    )
    g = torch.Generator().manual_seed(cfg["seed"])
    curves, evals = [], engine.eval_epochs(cfg["epochs"], cfg.get("curve_points", 10))
    for epoch in range(cfg["epochs"]):
        for group in optimizer.param_groups:
            group["lr"] = cfg["lr"] * lr_factor(epoch, cfg["warmup_epochs"], cfg["epochs"])
        model.train()
        order, losses = torch.randperm(len(train), generator=g), []
        for start in range(0, len(order), cfg["batch_size"]):
            idx = order[start : start + cfg["batch_size"]]
            loss = batch_loss(model, train.images[idx].to(dev), train.labels[idx].to(dev), g)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        row = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses)}
        if evals is None or epoch in evals:
            row["heldout_loss"] = _heldout_loss(model, heldout, batch_loss, dev, cfg["seed"] + 1)
            print(
                f"[pretrain] epoch {epoch + 1:3d}  train loss {row['train_loss']:.3f}  "
                f"held-out {what} {row['heldout_loss']:.3f}",
                flush=True,
            )
        curves.append(row)
    return curves


def _heldout_loss(model, heldout: SplitData, batch_loss, dev, seed: int) -> float:
    """The objective on the held-out images in eval mode, with the same random draws at every evaluation."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        total = sum(
            float(batch_loss(model, x.to(dev), y.to(dev), g)) * len(x)
            for x, y in zip(heldout.images.split(256), heldout.labels.split(256))
        )
    return total / len(heldout)


def _knn_of(features, train: SplitData, heldout: SplitData, normalize) -> float:
    """20-NN top-1 (%) of the held-out source images among the train images, on `features(normalised images)`."""
    with torch.no_grad():
        train_f, heldout_f = (
            torch.cat(
                [features(normalize(x.to(normalize.mean.device))).cpu() for x in split.images.split(256)]
            )
            for split in (train, heldout)
        )
    return knn_top1(train_f, train.labels, heldout_f, heldout.labels)


def _without(args: dict, *keys: str) -> dict:
    return {k: v for k, v in args.items() if k not in keys}


def _masked_autoencoding(cfg: dict, spec, train: SplitData, heldout: SplitData, device: str):
    """MAE on the source images (labels unused; flip augmentation): (encoder, held-out kNN top-1 of its
    average-pooled patch features, curves, extras with the held-out reconstruction loss, why it failed or
    None). It fails on its own objective, not on the class information (MAE's features hold little of it)."""
    encoder = timm.create_model(  # MAE's pre-training layout: a final norm, no pooling of its own
        spec.timm_name, pretrained=False, num_classes=0, **_without(spec.timm_args, "global_pool")
    )
    redraw_truncated_normals(encoder)
    model = MaskedAutoencoder(encoder).to(engine.pick_device(device))
    normalize = Normalize(*(input_config(encoder)[k] for k in ("mean", "std"))).to(
        next(model.parameters()).device
    )

    def batch_loss(model, images, labels, g):
        flip = (torch.rand(len(images), generator=g) < 0.5).to(images.device)
        return model.loss(normalize(torch.where(flip[:, None, None, None], images.flip(-1), images)), g)

    curves = _self_supervised_fit(cfg, model, normalize, train, heldout, batch_loss, "reconstruction loss")
    model.eval()
    top1 = _knn_of(lambda x: model.encode(x)[:, 1:].mean(1), train, heldout, normalize)
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


class _MoCoV3Layout(torch.nn.Module):
    """The encoder under MoCo v3's pre-training layout (`base_encoder.*`), which the registry's `mocov3` loader
    reads: the workflow's own checkpoint goes through the same remap as a downloaded one."""

    def __init__(self, encoder):
        super().__init__()
        self.base_encoder = encoder


def _contrastive(cfg: dict, spec, train: SplitData, heldout: SplitData, device: str):
    """Contrastive learning between augmented views (vptft.contrastive; labels unused): (the encoder in MoCo v3's
    layout, held-out 20-NN top-1 of its CLS feature, curves, extras with the held-out contrastive loss, why it
    failed or None). It fails on the class information its features hold: what it hands downstream."""
    encoder = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **spec.timm_args)
    redraw_truncated_normals(encoder)
    model = ContrastiveLearner(encoder).to(engine.pick_device(device))
    normalize = Normalize(*(input_config(encoder)[k] for k in ("mean", "std"))).to(
        next(model.parameters()).device
    )
    curves = _self_supervised_fit(
        cfg,
        model,
        normalize,
        train,
        heldout,
        lambda model, images, labels, g: model.loss(images, normalize, g),
        "contrastive loss",
    )
    model.eval()
    top1 = _knn_of(model.features, train, heldout, normalize)
    extras = {
        "objective": "contrastive (InfoNCE between two augmented views, temperature 0.2)",
        "heldout_contrastive_loss": curves[-1]["heldout_loss"],
        "contrastive_loss_of_constant_features": math.log(2 * min(256, len(heldout)) - 1),
        "heldout_top1_is": "20-nearest-neighbour vote on the CLS feature",
    }
    problem = None
    if top1 < cfg["min_knn_top1"]:
        problem = (
            f"held-out 20-NN top-1 {top1:.1f}% is below pretrain.min_knn_top1 = {cfg['min_knn_top1']}% "
            f"(chance {100.0 / len(SOURCE_SHAPES):.1f}%)"
        )
    return _MoCoV3Layout(encoder), top1, curves, extras, problem


def _image_text(cfg: dict, spec, train: SplitData, heldout: SplitData, device: str):
    """CLIP's contrastive image-text objective on the source images and their captions (vptft.image_text; flip
    augmentation): (open_clip's CLIP in its own layout, held-out zero-shot top-1 from the class captions, curves,
    extras, why it failed or None). It fails on the zero-shot top-1: what CLIP hands downstream."""
    from vptft.backbones.clip import open_clip_model
    from vptft.image_text import ZERO_SHOT_TEMPLATE, ImageTextLearner

    clip = open_clip_model(spec.clip, spec.preprocessing.size, spec.depth, spec.dim)
    model = ImageTextLearner(clip, list(SOURCE_SHAPES), spec.clip.context_length)
    model = model.to(engine.pick_device(device))
    normalize = Normalize(spec.preprocessing.mean, spec.preprocessing.std).to(next(model.parameters()).device)

    def batch_loss(model, images, labels, g):
        flip = (torch.rand(len(images), generator=g) < 0.5).to(images.device)
        return model.loss(
            normalize(torch.where(flip[:, None, None, None], images.flip(-1), images)), labels, g
        )

    curves = _self_supervised_fit(
        cfg, model, normalize, train, heldout, batch_loss, "image-text loss", no_decay=True
    )
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [
                model.zero_shot_logits(normalize(x.to(normalize.mean.device))).cpu()
                for x in heldout.images.split(256)
            ]
        )
    top1 = 100.0 * float((logits.argmax(1) == heldout.labels).float().mean())
    extras = {
        "objective": "contrastive image-text (CLIP's symmetric InfoNCE, captions from the class names)",
        "heldout_image_text_loss": curves[-1]["heldout_loss"],
        "heldout_top1_is": f"zero-shot: the class captions {ZERO_SHOT_TEMPLATE!r} through the text tower",
    }
    problem = None
    if top1 < cfg["min_heldout_top1"]:
        problem = (
            f"held-out zero-shot top-1 {top1:.1f}% is below pretrain.min_heldout_top1 = {cfg['min_heldout_top1']}% "
            f"(chance {100.0 / len(SOURCE_SHAPES):.1f}%)"
        )
    return clip, top1, curves, extras, problem


OBJECTIVES = {
    "supervised": _supervised,
    "mae": _masked_autoencoding,
    "contrastive": _contrastive,
    "clip": _image_text,
}


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
