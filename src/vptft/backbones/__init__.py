"""Registry of backbones, torch-free: the config validation, the Snakefile, the cost model, the bench and the
model factory all read a backbone's facts here, so each lives in one place.

An entry names the timm model (or the workflow's own pre-trained one), its family, the shape facts the workflow
plans with (depth, patch tokens, feature width), the checkpoint's own preprocessing, the VPT paper's Table 8
batch sizes and schedule, how its checkpoint file is loaded and where to get it. Everything family-specific about
the model itself (blocks, insertion points, pooling, the layer GradCAM reads) lives in the family's token
interface (vptft.strategies.tokens). New ViT checkpoint = one entry here; new family = an entry + one interface
class.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Family:
    """What the workflow plans with about a backbone family (its token interface in vptft.strategies.tokens has
    the code): which create_model arguments `train.backbone_dropout` sets (the VPT code's ViT dropout; its Swin
    has none, only the drop path of the registry's timm_args) and what has no form on it, refused before any
    job."""

    dropout_args: tuple[str, ...]
    cls_token: bool = True
    kv_prompts: bool = True  # key/value prompts (VPT-prefix, Adapt)
    prompt_locations: tuple[str, ...] = ("prepend", "add", "prepend_pixel", "concat_channel")


FAMILIES = {
    "vit": Family(("pos_drop_rate", "proj_drop_rate")),
    "swin": Family((), cls_token=False, kv_prompts=False, prompt_locations=("prepend",)),
    "clip": Family(("pos_drop_rate", "proj_drop_rate")),  # a timm ViT image tower + open_clip's text tower
}
LOADERS = ("timm", "mae", "mocov3", "open_clip")  # vptft.backbones.checkpoints, vptft.backbones.clip


@dataclass(frozen=True)
class ClipTowers:
    """What a CLIP backbone adds to its image tower (the entry's timm ViT): open_clip's text tower and the joint
    embedding, as open_clip configures them."""

    embed_dim: int  # the joint image-text embedding
    context_length: int  # text tokens (SOT ... EOT, padded)
    text_width: int
    text_heads: int
    text_layers: int
    image_heads: int
    patch_size: int
    quick_gelu: bool = False  # OpenAI's CLIP: QuickGELU in both towers
    vocab_size: int = 49408  # CLIP's BPE tokenizer

    def open_clip_config(self, image_size: int, depth: int, width: int) -> dict:
        """The arguments of open_clip's `CLIP` module (its model-config JSON's layout)."""
        return dict(
            embed_dim=self.embed_dim,
            vision_cfg=dict(
                image_size=image_size,
                layers=depth,
                width=width,
                head_width=width // self.image_heads,
                patch_size=self.patch_size,
            ),
            text_cfg=dict(
                context_length=self.context_length,
                vocab_size=self.vocab_size,
                width=self.text_width,
                heads=self.text_heads,
                layers=self.text_layers,
            ),
            quick_gelu=self.quick_gelu,
        )


@dataclass(frozen=True)
class Preprocessing:
    """The checkpoint's own input: square size, mean / std and resize interpolation (timm's pretrained config
    where timm has one). `train.normalization: imagenet` replaces mean / std with ImageNet's, as the VPT code."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str


@dataclass(frozen=True)
class Table8Batches:
    """The VPT paper's Table 8: batch size per kind of method on this backbone."""

    linear: int  # Linear (and Mlp)
    partial: int
    full: int  # Full, Bias, Adapter
    prompt: int  # VPT with p < 100
    long_prompt: int | None  # VPT with p >= 100 (None: the paper ran no such length on this backbone)


@dataclass(frozen=True)
class BenchProfile:
    """How `vptft bench` measures this backbone: batch, repeats, optimiser steps per repeat, and the workflow
    config that trains it (its train settings and its linear grid)."""

    batch: int
    repeats: int
    steps: int
    config: str
    feature_images: int | None = None  # images the feature pass is timed on (scaled to the grid's); None: all


@dataclass(frozen=True)
class BackboneSpec:
    key: str
    timm_name: str  # timm model (with its pretrained tag where timm knows the weights)
    family: str  # one of FAMILIES: which token interface drives it
    pretraining: str  # what it was pre-trained on, by which objective (tables and README say it)
    depth: int  # transformer blocks
    tokens: int  # patch tokens of one image at `preprocessing.size`
    dim: int  # width of the pooled feature a head reads
    preprocessing: Preprocessing
    loader: str = "timm"  # one of LOADERS: how a checkpoint file becomes the timm model's weights
    timm_args: dict = field(default_factory=dict)  # create_model arguments besides num_classes and dropout
    batches: Table8Batches | None = None  # None: not a VPT-paper backbone
    epochs: int = 100  # the VPT paper's schedule on this backbone (Table 6: 50 for ViT-L / ViT-H)
    prompt_lengths: tuple[int, ...] | None = (
        None  # the VPT paper's prompt-length grid here, where it has its own
    )
    weights: str = ""  # where to get the checkpoint file (said when it is missing)
    fixed: tuple[
        str, ...
    ] = ()  # parameters that never train, whatever the strategy (MoCo v3's position embedding)
    pretrained_by_workflow: bool = False  # True: the `pretrain` rule makes the checkpoint
    objective: str = "supervised"  # the `pretrain` rule's objective: supervised, mae or contrastive
    bench: BenchProfile | None = None  # None: `vptft bench` has no profile for it
    clip: ClipTowers | None = None  # a CLIP backbone's text tower (family "clip")


VIT_B_BATCHES = Table8Batches(linear=2048, partial=1280, full=128, prompt=128, long_prompt=64)
INCEPTION_LIKE = Preprocessing(224, HALF, HALF, "bicubic")  # the original in21k ViTs: 0.5 / 0.5
IMAGENET_224 = Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD, "bicubic")
MINI_INPUT = Preprocessing(32, HALF, HALF, "bilinear")
OPENAI_CLIP_224 = Preprocessing(
    224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), "bicubic"
)
MINI_VIT = BackboneSpec(
    "mini_vit",
    "vit_mini_patch8_32.vptft",
    "vit",
    "the workflow's rendered source set, supervised (rule pretrain)",
    depth=4,
    tokens=16,
    dim=96,
    preprocessing=MINI_INPUT,
    pretrained_by_workflow=True,
    bench=BenchProfile(batch=64, repeats=3, steps=20, config="config/config.yaml"),
)

BACKBONES = {
    b.key: b
    for b in [
        MINI_VIT,
        replace(  # the VPT paper's Figure 4 in miniature: the mini ViT at half its width (ViT-S : ViT-B)
            MINI_VIT,
            key="mini_vit_s",
            dim=48,
            timm_args={"embed_dim": 48},  # 3 heads of 16
            bench=None,
        ),
        replace(
            MINI_VIT,
            key="mini_vit_mae",
            pretraining="the workflow's rendered source set, masked autoencoding (rule pretrain)",
            loader="mae",  # pooled as the VPT code pools MAE: average of the tokens after CLS, a fresh fc_norm
            timm_args={"global_pool": "avg"},
            objective="mae",
            bench=None,
        ),
        replace(
            MINI_VIT,
            key="mini_vit_moco",
            pretraining="the workflow's rendered source set, contrastive (rule pretrain)",
            loader="mocov3",  # the pretrain rule writes MoCo v3's layout: the same remap as a downloaded file
            fixed=("pos_embed",),  # as MoCo v3's ViT: a fixed 2-D sin-cos position embedding
            objective="contrastive",
            bench=None,
        ),
        BackboneSpec(
            "mini_clip",
            "vit_mini_clip_patch8_32.vptft",
            "clip",
            "the workflow's rendered source set with captions, contrastive image-text (rule pretrain)",
            depth=4,
            tokens=16,
            dim=96,
            preprocessing=MINI_INPUT,
            loader="open_clip",  # the pretrain rule writes open_clip's layout: read as a downloaded file is
            pretrained_by_workflow=True,
            objective="clip",
            clip=ClipTowers(
                embed_dim=64,
                context_length=16,
                text_width=64,
                text_heads=2,
                text_layers=2,
                image_heads=3,
                patch_size=8,
            ),
        ),
        BackboneSpec(
            "mini_swin",
            "swin_mini_patch4_window4_32.vptft",
            "swin",
            "the workflow's rendered source set, supervised (rule pretrain)",
            depth=4,
            tokens=64,
            dim=96,
            preprocessing=MINI_INPUT,
            timm_args={"drop_path_rate": 0.0},  # like the mini ViT: no regularisation to switch on or off
            pretrained_by_workflow=True,
        ),
        BackboneSpec(
            "vit_b16_in21k",
            # the original ViT-B_16.npz in21k checkpoint (not augreg, not the in1k-finetuned one)
            "vit_base_patch16_224.orig_in21k",
            "vit",
            "ImageNet-21k, supervised",
            depth=12,
            tokens=196,
            dim=768,
            preprocessing=INCEPTION_LIKE,
            batches=VIT_B_BATCHES,
            weights="timm's vit_base_patch16_224.orig_in21k (model.safetensors on the Hugging Face hub) or the "
            "original ViT-B_16.npz",
            bench=BenchProfile(batch=8, repeats=2, steps=1, config="config/paper.yaml", feature_images=16),
        ),
        BackboneSpec(
            "vit_l16_in21k",
            "vit_large_patch16_224.orig_in21k",
            "vit",
            "ImageNet-21k, supervised",
            depth=24,
            tokens=196,
            dim=1024,
            preprocessing=INCEPTION_LIKE,
            batches=Table8Batches(linear=2048, partial=640, full=64, prompt=64, long_prompt=32),
            epochs=50,
            weights="timm's vit_large_patch16_224.orig_in21k (Hugging Face hub) or the original ViT-L_16.npz",
        ),
        BackboneSpec(
            "vit_h14_in21k",
            "vit_huge_patch14_224.orig_in21k",
            "vit",
            "ImageNet-21k, supervised",
            depth=32,
            tokens=256,
            dim=1280,
            preprocessing=INCEPTION_LIKE,
            batches=Table8Batches(linear=1024, partial=240, full=28, prompt=28, long_prompt=14),
            epochs=50,
            weights="timm's vit_huge_patch14_224.orig_in21k (Hugging Face hub) or the original ViT-H_14.npz",
        ),
        BackboneSpec(
            "swin_b_in21k",
            "swin_base_patch4_window7_224.ms_in22k",
            "swin",
            "ImageNet-21k, supervised",
            depth=24,
            tokens=3136,
            dim=1024,
            preprocessing=IMAGENET_224,
            # the VPT code's Swin-B: drop path 0.5, active only while the backbone trains (its blocks are in eval
            # mode under prompt tuning)
            timm_args={"drop_path_rate": 0.5},
            batches=Table8Batches(linear=1024, partial=1024, full=128, prompt=80, long_prompt=None),
            prompt_lengths=(1, 5, 10, 50),  # VPT paper App. A.1
            weights="swin_base_patch4_window7_224_22k.pth from the Swin Transformer releases (timm's "
            "swin_base_patch4_window7_224.ms_in22k)",
        ),
        BackboneSpec(
            "clip_b16_openai",
            "vit_base_patch16_clip_quickgelu_224.openai",
            "clip",
            "400M web image-text pairs, contrastive image-text (OpenAI CLIP)",
            depth=12,
            tokens=196,
            dim=768,
            preprocessing=OPENAI_CLIP_224,
            loader="open_clip",
            batches=VIT_B_BATCHES,
            weights="open_clip_model.safetensors of timm/vit_base_patch16_clip_224.openai on the Hugging Face hub "
            "(open_clip's ViT-B-16 `openai` weights as a state dict; open_clip.create_model_and_transforms("
            "'ViT-B-16', pretrained='openai') downloads it where there is network)",
            clip=ClipTowers(
                embed_dim=512,
                context_length=77,
                text_width=512,
                text_heads=8,
                text_layers=12,
                image_heads=12,
                patch_size=16,
                quick_gelu=True,
            ),
        ),
        BackboneSpec(
            "vit_b16_mae",
            "vit_base_patch16_224.mae",
            "vit",
            "ImageNet-1k, masked autoencoding (MAE)",
            depth=12,
            tokens=196,
            dim=768,
            preprocessing=IMAGENET_224,
            # the VPT code's MAE: average of the non-CLS tokens, then a fresh fc_norm (the checkpoint's norm unused)
            loader="mae",
            timm_args={"global_pool": "avg"},
            batches=VIT_B_BATCHES,
            weights="mae_pretrain_vit_base.pth from https://dl.fbaipublicfiles.com/mae/pretrain/ (timm's "
            "vit_base_patch16_224.mae)",
        ),
        BackboneSpec(
            "vit_b16_mocov3",
            "vit_base_patch16_224",  # timm has no MoCo v3 weights: a local file, remapped
            "vit",
            "ImageNet-1k, contrastive (MoCo v3)",
            depth=12,
            tokens=196,
            dim=768,
            preprocessing=Preprocessing(
                224, IMAGENET_MEAN, IMAGENET_STD, "bilinear"
            ),  # MoCo v3's own transforms
            loader="mocov3",
            fixed=("pos_embed",),  # MoCo v3's ViT: a fixed 2-D sin-cos position embedding
            batches=VIT_B_BATCHES,
            weights="linear-vit-b-300ep.pth.tar from the MoCo v3 repository (facebookresearch/moco-v3, "
            "CONFIG.md), saved under any name; the pre-training checkpoint vit-b-300ep.pth.tar works too",
        ),
    ]
}


TEXT_HEAD_STRATEGIES = ("zero_shot", "coop")  # always read by CLIP's image-text head


def family_problem(spec: BackboneSpec, strategy: str, values: dict) -> str | None:
    """Why `strategy` with these option values has no form on the backbone's family (None if it has one)."""
    family = FAMILIES[spec.family]
    if spec.clip is None and (strategy in TEXT_HEAD_STRATEGIES or values.get("head") == "text"):
        return f"CLIP's image-text head needs a CLIP backbone (registry family 'clip'), not {spec.key}"
    if strategy == "adapt" and values.get("towers", "image") != "image" and spec.clip is not None:
        image = spec.depth if values["towers"] == "both" else 0
        total = (image + spec.clip.text_layers) * values["context_length"]
        if values["target_length"] > total:
            return (
                f"target_length {values['target_length']} exceeds the {total} tokens of towers "
                f"{values['towers']!r} x context_length {values['context_length']} ({spec.key})"
            )
    if not family.kv_prompts and strategy in ("vpt_prefix", "adapt"):
        return f"key/value prompts have no {spec.family} form here ({spec.key})"
    if "location" in values and values["location"] not in family.prompt_locations:
        return f"prompt location {values['location']!r} has no {spec.family} form ({spec.key})"
    if not family.cls_token and values.get("pooling") == "cls":
        return f"pooling 'cls': {spec.key} has no CLS token"
    if not family.cls_token and values.get("init") == "class_prototype":
        return f"init 'class_prototype' averages CLS outputs: {spec.key} has no CLS token"
    return None


def needs_local_file(spec: BackboneSpec) -> bool:
    """Whether the weights come only from a local file (timm cannot fetch them in the layout the study uses)."""
    return spec.loader != "timm" and not spec.pretrained_by_workflow


def get_backbone(key: str) -> BackboneSpec:
    try:
        return BACKBONES[key]
    except KeyError:
        raise KeyError(f"unknown backbone {key!r}; known backbones: {', '.join(BACKBONES)}") from None
