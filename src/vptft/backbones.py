"""Backbones by config key, built through timm's factory so that the workflow's own mini ViT and the paper's
ViT-B/16 load through the same path (`timm.create_model(..., pretrained=True)` with a local file overlay).

The mini ViT is registered as a timm model (`vit_mini_patch8_32`), like timm's own families.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
from timm.models import register_model
from timm.models._registry import generate_default_cfgs
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer

MINI_ARGS = dict(
    img_size=32,
    patch_size=8,
    embed_dim=96,
    depth=4,
    num_heads=3,
    mlp_ratio=4.0,
    class_token=True,
    global_pool="token",
)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

default_cfgs = generate_default_cfgs(
    {
        # weights come from the workflow's `pretrain` rule, never from a hub
        "vit_mini_patch8_32.vptft": dict(
            num_classes=0,
            input_size=(3, 32, 32),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation="bilinear",
            crop_pct=1.0,
            first_conv="patch_embed.proj",
            classifier="head",
        ),
    }
)


@register_model
def vit_mini_patch8_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT (patch 8, width 96, depth 4, 3 heads) for 32x32 images: the mini benchmark's backbone."""
    return _create_vision_transformer(
        "vit_mini_patch8_32", pretrained=pretrained, **dict(MINI_ARGS, **kwargs)
    )


@dataclass(frozen=True)
class BackboneSpec:
    timm_name: str
    pretrained_by_workflow: bool = False  # True: the `pretrain` rule makes the checkpoint


BACKBONES = {
    "mini_vit": BackboneSpec("vit_mini_patch8_32.vptft", pretrained_by_workflow=True),
    # the original ViT-B_16.npz in21k checkpoint (not augreg, not the in1k-finetuned one)
    "vit_b16_in21k": BackboneSpec("vit_base_patch16_224.orig_in21k"),
}


def create_backbone(
    key: str, checkpoint: str | Path | None = None, pretrained: bool = True, dropout: float = 0.0
):
    """A timm ViT without classifier (num_classes=0), weights from `checkpoint` (a local file) or timm's source.

    dropout: on the position embedding, attention output and MLP (the VPT code's ViT-B config: 0.1, active
    only while the backbone is in train mode); attention-probability dropout stays 0.
    """
    try:
        spec = BACKBONES[key]
    except KeyError:
        raise KeyError(f"unknown backbone {key!r}; known: {', '.join(BACKBONES)}") from None
    overlay = None
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: backbone checkpoint not found")
        overlay = dict(file=str(checkpoint))
    elif spec.pretrained_by_workflow and pretrained:
        raise ValueError(
            f"backbone {key!r} is pre-trained by the workflow: pass the `pretrain` rule's checkpoint"
        )
    try:
        return timm.create_model(
            spec.timm_name,
            pretrained=pretrained,
            num_classes=0,
            pretrained_cfg_overlay=overlay,
            pos_drop_rate=dropout,
            proj_drop_rate=dropout,
        )
    except Exception as err:  # torch, safetensors and timm each raise their own types for a bad file
        where = checkpoint or spec.timm_name
        raise RuntimeError(
            f"{where}: cannot load backbone {key!r} ({type(err).__name__}: {err}); "
            "a corrupt or truncated file must be deleted and re-created"
        ) from err


def input_config(backbone, normalization: str = "backbone") -> dict:
    """Input size and normalisation: the backbone's own pretrained config, or ImageNet mean/std ('imagenet')."""
    cfg = backbone.pretrained_cfg
    mean, std = (cfg["mean"], cfg["std"]) if normalization == "backbone" else (IMAGENET_MEAN, IMAGENET_STD)
    return {"size": tuple(cfg["input_size"][1:]), "mean": tuple(mean), "std": tuple(std)}
