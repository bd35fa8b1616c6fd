"""Checkpoint files whose layout is not timm's: each loader turns one into the timm model's weights exactly as
the public VPT code reads it, and refuses a file whose keys say it is something else.

timm's own loader (the registry's `timm` entries) reads `.safetensors` / `.pth` state dicts and, through the
model's `load_pretrained`, the original `.npz` ViT checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch
from timm.models import load_state_dict
from timm.models.vision_transformer import VisionTransformer


def _read(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a torch or safetensors file (under 'state_dict' or 'model' where it is nested, DDP's
    'module.' prefix removed), loaded with weights_only."""
    return load_state_dict(str(path), use_ema=False, weights_only=True)


class LayoutError(ValueError):
    """A readable checkpoint whose keys do not fit the backbone (another model, or another layout)."""


def _check(path: Path, what: str, missing, unexpected, allowed_missing=()) -> None:
    missing = sorted(set(missing) - set(allowed_missing))
    if missing or unexpected:
        raise LayoutError(
            f"{path}: not a {what} checkpoint of this backbone (missing {missing[:5]}, unexpected "
            f"{sorted(unexpected)[:5]})"
        )


def load_mae(model: VisionTransformer, path: Path) -> None:
    """MAE's pre-training checkpoint (`{'model': encoder state}`) on a ViT with average pooling: the VPT code's
    MAE deletes the final `norm` and pools through a fresh LayerNorm `fc_norm` (weight 1, bias 0), so the
    checkpoint's `norm.*` is left unused and `fc_norm` keeps its initial values."""
    state = {k: v for k, v in _read(path).items() if not k.startswith("norm.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    _check(path, "MAE", missing, unexpected, allowed_missing={"fc_norm.weight", "fc_norm.bias"})


def load_mocov3(model: VisionTransformer, path: Path) -> None:
    """MoCo v3's checkpoints: the linear-probe file (`state_dict` of `module.<timm ViT keys>`, with its
    ImageNet-1k head) or the pre-training file (`module.base_encoder.*`, with a projection MLP as head). The
    encoder's keys are timm's; the head is dropped (the VPT code replaces it by Identity)."""
    state = _read(path)
    if any(k.startswith("base_encoder.") for k in state):
        state = {
            k.removeprefix("base_encoder."): v for k, v in state.items() if k.startswith("base_encoder.")
        }
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    _check(path, "MoCo v3", missing, unexpected)


LOADERS = {"mae": load_mae, "mocov3": load_mocov3}
