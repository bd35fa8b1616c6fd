"""Pre-train the mini ViT on the rendered source set (the mini benchmark's stand-in for ImageNet-21k).

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
from vptft.data import SplitData, to_uint8_tensor
from vptft.io import atomic_path, write_json
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


def run_pretrain(cfg: dict, backbone_key: str, out_dir, device: str = "auto") -> dict:
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    n_train, n_heldout = cfg["n_train"], cfg["n_heldout"]
    images, labels = render_source(n_train + n_heldout, cfg["seed"])
    print(f"[pretrain] rendered {len(labels)} source images in {time.perf_counter() - t0:.1f}s", flush=True)
    torch.manual_seed(cfg["seed"])  # the initial weights too: the backbone is deterministic from the seed
    spec = BACKBONES[backbone_key]
    model = timm.create_model(
        spec.timm_name, pretrained=False, num_classes=len(SOURCE_SHAPES), **spec.timm_args
    )
    redraw_truncated_normals(model)
    inputs = input_config(model)
    size = inputs["size"]
    x = to_uint8_tensor(images, size)
    y = torch.as_tensor(labels)
    train, heldout = SplitData(x[:n_train], y[:n_train]), SplitData(x[n_train:], y[n_train:])
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
        inputs,
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
    chance = 100.0 / len(SOURCE_SHAPES)
    if top1 < cfg["min_heldout_top1"]:  # checked before anything is written: no checkpoint of a failed run
        raise RuntimeError(
            f"pre-training failed: held-out top-1 {top1:.1f}% is below pretrain.min_heldout_top1 "
            f"= {cfg['min_heldout_top1']}% (chance {chance:.1f}%); check the pretrain config"
        )
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
        "epochs": cfg["epochs"],
        "seconds": round(time.perf_counter() - t0, 1),
        "curves": result["curves"],
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
