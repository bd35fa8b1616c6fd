"""Backbones by registry key, built through timm's factory so that the workflow's own mini ViT and the paper's
checkpoints load through the same path (`timm.create_model`, weights from a local file or timm's source).

The mini ViT is registered as a timm model (`vit_mini_patch8_32`), like timm's own families.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import timm
from timm.models import register_model
from timm.models._registry import generate_default_cfgs
from timm.models.swin_transformer import SwinTransformer, _create_swin_transformer
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer
from torch import nn

from vptft.backbones import BACKBONES, FAMILIES, IMAGENET_MEAN, IMAGENET_STD, get_backbone, needs_local_file
from vptft.backbones.checkpoints import LOADERS, LayoutError

MINI = BACKBONES["mini_vit"]
MINI_ARGS = dict(
    img_size=MINI.preprocessing.size,
    patch_size=8,
    embed_dim=MINI.dim,
    depth=MINI.depth,
    num_heads=3,
    mlp_ratio=4.0,
    class_token=True,
    global_pool="token",
)

MINI_CLIP = BACKBONES["mini_clip"]
MINI_CLIP_ARGS = dict(  # open_clip's ViT as timm builds CLIP image towers: pre-norm, LayerNorm eps 1e-5
    img_size=MINI_CLIP.preprocessing.size,
    patch_size=MINI_CLIP.clip.patch_size,
    embed_dim=MINI_CLIP.dim,
    depth=MINI_CLIP.depth,
    num_heads=MINI_CLIP.clip.image_heads,
    pre_norm=True,
    norm_layer=partial(nn.LayerNorm, eps=1e-5),
)

MINI_SWIN = BACKBONES["mini_swin"]
MINI_SWIN_ARGS = dict(
    img_size=MINI_SWIN.preprocessing.size,
    patch_size=4,
    window_size=4,
    embed_dim=48,
    depths=(2, 2),
    num_heads=(3, 6),
)


def _workflow_cfg(spec, classifier: str) -> dict:
    """timm's pretrained config of a workflow-pretrained backbone: its weights come from the `pretrain` rule,
    never from a hub."""
    prep = spec.preprocessing
    return dict(
        num_classes=0,
        input_size=(3, prep.size, prep.size),
        mean=prep.mean,
        std=prep.std,
        interpolation=prep.interpolation,
        crop_pct=1.0,
        first_conv="patch_embed.proj",
        classifier=classifier,
    )


default_cfgs = generate_default_cfgs(
    {
        "vit_mini_patch8_32.vptft": _workflow_cfg(MINI, "head"),
        "swin_mini_patch4_window4_32.vptft": _workflow_cfg(MINI_SWIN, "head.fc"),
        "vit_mini_clip_patch8_32.vptft": _workflow_cfg(MINI_CLIP, "head"),
    }
)


@register_model
def vit_mini_patch8_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT (patch 8, width 96, depth 4, 3 heads) for 32x32 images: the mini benchmark's backbone."""
    return _create_vision_transformer(
        "vit_mini_patch8_32", pretrained=pretrained, **dict(MINI_ARGS, **kwargs)
    )


@register_model
def vit_mini_clip_patch8_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """The mini CLIP's image tower (patch 8, width 96, depth 4, 3 heads, pre-norm) for 32x32 images."""
    return _create_vision_transformer(
        "vit_mini_clip_patch8_32", pretrained=pretrained, **dict(MINI_CLIP_ARGS, **kwargs)
    )


@register_model
def swin_mini_patch4_window4_32(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Swin (patch 4, window 4, widths 48 / 96, 2 + 2 blocks, 3 / 6 heads) for 32x32 images: the mini
    benchmark's hierarchical backbone (8x8 then 4x4 tokens, one shifted block per stage)."""
    return _create_swin_transformer(
        "swin_mini_patch4_window4_32", pretrained=pretrained, **dict(MINI_SWIN_ARGS, **kwargs)
    )


def create_backbone(
    key: str, checkpoint: str | Path | None = None, pretrained: bool = True, dropout: float = 0.0
):
    """A timm model without classifier (num_classes=0), weights from `checkpoint` (a local file, read by the
    registry entry's loader) or timm's source; the registry's preprocessing becomes its `pretrained_cfg`.

    dropout: on a ViT's position embedding, attention output and MLP (the VPT code's ViT-B config: 0.1, active
    only while the backbone is in train mode); attention-probability dropout stays 0. Families whose VPT code
    has no dropout (Swin) ignore it.
    """
    spec = get_backbone(key)
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: backbone checkpoint not found")
    elif pretrained and (spec.pretrained_by_workflow or needs_local_file(spec)):
        source = "the `pretrain` rule's checkpoint" if spec.pretrained_by_workflow else spec.weights
        raise ValueError(f"backbone {key!r} loads from a local file: pass {source}")
    prep = spec.preprocessing
    overlay = dict(
        input_size=(3, prep.size, prep.size), mean=prep.mean, std=prep.std, interpolation=prep.interpolation
    )
    timm_file = checkpoint is not None and spec.loader == "timm"
    if timm_file:  # timm reads state dicts itself and the original .npz through the model's load_pretrained
        overlay.update(file=str(checkpoint), custom_load=checkpoint.suffix == ".npz")
    try:
        model = timm.create_model(
            spec.timm_name,
            pretrained=timm_file or (pretrained and checkpoint is None),
            num_classes=0,
            pretrained_cfg_overlay=overlay,
            **{name: dropout for name in FAMILIES[spec.family].dropout_args},
            **spec.timm_args,
        )
        if spec.clip is not None:  # open_clip is imported only where CLIP runs
            from vptft.backbones.clip import attach_text_tower, load_open_clip

            if checkpoint is not None:
                load_open_clip(model, checkpoint, spec.clip)
            else:
                attach_text_tower(model, spec.clip)
        elif checkpoint is not None and not timm_file:
            LOADERS[spec.loader](model, checkpoint)
    except LayoutError:
        raise
    except Exception as err:  # torch, safetensors and timm each raise their own types for a bad file
        where = checkpoint or spec.timm_name
        raise RuntimeError(
            f"{where}: cannot load backbone {key!r} ({type(err).__name__}: {err}); "
            "a corrupt or truncated file must be deleted and re-created"
        ) from err
    for name in spec.fixed:
        model.get_parameter(name).requires_grad_(False)
    model.fixed_parameters = spec.fixed  # read by TunedModel: these stay frozen whatever trains
    return model


def input_config(backbone, normalization: str = "backbone") -> dict:
    """Input size and normalisation: the backbone's own pretrained config, or ImageNet mean/std ('imagenet')."""
    cfg = backbone.pretrained_cfg
    mean, std = (cfg["mean"], cfg["std"]) if normalization == "backbone" else (IMAGENET_MEAN, IMAGENET_STD)
    return {"size": tuple(cfg["input_size"][1:]), "mean": tuple(mean), "std": tuple(std)}
