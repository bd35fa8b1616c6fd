"""Visual Prompt Tuning (Jia et al., 2022) and the study's prompt-based rows (Mixed, FT-then-PT), written once
against a backbone family's token-insertion point (vptft.strategies.tokens).

Sequence = [prefix (CLS), prompts, patches] (the family's token interface runs it: on Swin [prompts, patches]
through its windows and stages); prompts are inserted after the position embedding (and its
dropout) and carry none. At the first prompted block the prompts are inserted; before every later prompted
block the tokens at the prompt positions are replaced by that block's fresh prompts (the previous block's
outputs there are discarded); after the last prompted block they flow on. VPT-shallow prompts block 0 only,
VPT-deep every block. The final norm runs over the whole sequence and the head reads the backbone's own pooled
feature (`pooling: backbone`: the CLS token, or MAE's average of every token after CLS, prompts included, through
fc_norm, as the VPT code) or one of the VPT ablation's poolings.
`location="add"` instead adds one prompt to each token - CLS and every patch, as the VPT code - at every
prompted block (VPT ablation). The ablation's pixel-space forms prompt the input only (VPT-shallow's depth), as
the VPT code's `prepend-pixel` and `below`: `prepend_pixel` learns p image patches (3 x P x P, the code's
uniform init) that the frozen patch embedding turns into the p prepended tokens (no position embedding, no
prompt dropout); `concat_channel` concatenates p learned channels to the image and embeds the 3 + p channels by
a new patch embedding trained with them (uniform init, zero bias: the pre-trained one is replaced, as in the
code).
Tuned: prompts (p * D per prompted block; pixel forms: p * 3 * P * P, or p * H * W + the new embedding) + head,
plus the backbone for Mixed.
The VPT paper's other ablations of VPT: `share` (one prompt vector per block for its p tokens, one set of p
tokens for every block, or one vector everywhere: Figure 12) and `learn` (Figure 11: the prompts fixed at their
random init - kept as a buffer, so a run saves them - or no prompts and the CLS token learned; Table 9: the
prompts and every bias of the backbone, which stays in eval mode). `init: class_prototype` (Figure 13) starts
every prompted block from one prompt per class, its class's mean CLS output of the last block over the images
the run trains on (the VPT code's 'final-cls'; its prompt length is the class count, as the code asserts).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vptft.strategies.base import TunedModel, fixed_parameters
from vptft.strategies.tokens import token_interface


def prompt_init_bound(patch_size: int, dim: int) -> float:
    """The VPT code's uniform init bound: sqrt(6 / (3 * patch^2 + dim)) (0.0625 for ViT-B/16)."""
    return math.sqrt(6.0 / float(3 * patch_size * patch_size + dim))


def prompted_blocks(layers: str, depth: int) -> list[int]:
    """Block indices of a `layers` option: 'all' or a slice 'start:stop' (checked by the registry's validation)."""
    return list(range(depth)) if layers == "all" else list(range(depth))[slice(*map(int, layers.split(":")))]


class PromptedModel(TunedModel):
    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        head_init: str,
        prompt_length: int,
        prompt_dropout: float,
        location: str,
        pooling: str,
        layers: str,
        trains_backbone: bool = False,
        share: str = "none",
        learn: str = "prompts",
        head: nn.Module | None = None,
        init: str = "random",
        class_prototypes: torch.Tensor | None = None,
    ):
        super().__init__(backbone, num_classes, head_init, trains_backbone, head)
        self.tokens = token_interface(backbone)
        if init == "class_prototype":  # one prompt per class, each its class's mean final CLS (the VPT code)
            if class_prototypes is None or tuple(class_prototypes.shape) != (num_classes, self.tokens.dim):
                raise ValueError(
                    f"init 'class_prototype' needs the ({num_classes}, {self.tokens.dim}) class means of the "
                    f"last block's CLS output, got {None if class_prototypes is None else tuple(class_prototypes.shape)}"
                )
            prompt_length = num_classes
        if (pooling == "cls" or learn == "cls") and not self.tokens.num_prefix_tokens:
            raise ValueError(f"pooling / learn 'cls': {type(backbone).__name__} has no CLS token")
        self.location, self.pooling, self.learn = location, pooling, learn
        self.prompt_length = 0 if location in ("add", "concat_channel") or learn == "cls" else prompt_length
        self.prompted = [] if learn == "cls" else prompted_blocks(layers, self.tokens.depth)
        self._unfreeze(learn)
        tokens_per_block = (
            self.tokens.num_prefix_tokens + self.tokens.num_patches if location == "add" else prompt_length
        )
        bound = prompt_init_bound(self.tokens.patch_size, self.tokens.dim)
        widths = [self.tokens.block_dims[i] for i in self.prompted]
        self.channel_proj = None
        if location in ("prepend_pixel", "concat_channel"):
            if self.prompted != [0] or not hasattr(self.tokens, "patchify"):
                raise ValueError(f"location {location!r} prompts the input of a ViT only (layers '0:1')")
            size, patch = self.tokens.grid_size, self.tokens.patch_size
            if location == "prepend_pixel":  # p patches of pixels
                self.prompts = nn.Parameter(
                    torch.empty(prompt_length, 3, patch, patch).uniform_(-bound, bound)
                )
            else:  # p channels of the whole image, and the patch embedding of 3 + p channels
                shape = (1, prompt_length, size[0] * patch, size[1] * patch)
                self.prompts = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
                self.channel_proj = nn.Conv2d(3 + prompt_length, self.tokens.dim, patch, stride=patch)
                nn.init.uniform_(self.channel_proj.weight, -bound, bound)
                nn.init.zeros_(self.channel_proj.bias)
        elif learn == "cls":
            self.prompts = None
        elif len(set(widths)) == 1:  # one tensor (slots, p, D), or fewer where blocks or tokens share
            slots = 1 if share in ("inter", "all") else len(self.prompted)
            per_slot = 1 if share in ("intra", "all") else tokens_per_block
            self.prompts = nn.Parameter(torch.empty(slots, per_slot, widths[0]).uniform_(-bound, bound))
        elif share != "none" or learn == "fixed":
            raise ValueError(f"share / learn 'fixed' have no form on {type(backbone).__name__}'s stages")
        else:  # a hierarchical backbone (Swin): each prompted block's prompts at its own width
            self.prompts = nn.ParameterList(
                [nn.Parameter(torch.empty(tokens_per_block, d).uniform_(-bound, bound)) for d in widths]
            )
        if init == "class_prototype":  # every prompted block starts from the same class prototypes
            with torch.no_grad():
                self.prompts.copy_(class_prototypes.to(self.prompts).expand_as(self.prompts))
        self.init = init
        if learn == "fixed":  # a buffer: not trained, but saved with the run (its random init is its value)
            fixed = self.prompts.detach().clone()
            del self.prompts
            self.register_buffer("prompts", fixed)
        self.tokens_per_block = tokens_per_block
        self.prompt_dropout = nn.Dropout(prompt_dropout)

    def _unfreeze(self, learn: str) -> None:
        """The backbone parameters an ablation trains besides prompts and head (never the registry's fixed)."""
        fixed = fixed_parameters(self.backbone)
        for name, param in self.backbone.named_parameters():
            if name not in fixed and (
                learn == "cls" and name == "cls_token" or learn == "prompts_bias" and name.endswith("bias")
            ):
                param.requires_grad_(True)

    def _prompts(self, slot: int, x: torch.Tensor) -> torch.Tensor:
        if self.location == "prepend_pixel":  # (p, 3, P, P) -> (1, p, D) through the frozen patch embedding
            tokens = self.tokens.patchify(self.prompts.to(x.dtype)).reshape(1, -1, x.shape[-1])
            return tokens.expand(x.shape[0], -1, -1)
        prompts = self.prompts[min(slot, len(self.prompts) - 1)]  # a shared set serves every block
        return self.prompt_dropout(prompts.expand(x.shape[0], self.tokens_per_block, -1)).to(x.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final-normed token sequence [prefix, prompts, patches]."""
        if self.location == "concat_channel":  # the image with its prompt channels, under the new embedding
            x = torch.cat([x, self.prompts.expand(x.shape[0], -1, -1, -1).to(x.dtype)], dim=1)
            return self.tokens.forward_prompted(x, lambda i, tokens: None, "prepend", proj=self.channel_proj)
        slots = {block: slot for slot, block in enumerate(self.prompted)}
        return self.tokens.forward_prompted(
            x, lambda i, tokens: self._prompts(slots[i], tokens) if i in slots else None, self.location
        )

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        n, p = self.tokens.num_prefix_tokens, self.prompt_length
        x = {
            "backbone": lambda: self.tokens.pool(x),
            "cls": lambda: x[:, 0],
            "image_pool": lambda: x[:, n + p :].mean(1),
            "prompt_pool": lambda: x[:, n : n + p].mean(1),
            "global_pool": lambda: x[:, n:].mean(1),
        }[self.pooling]()
        return x if pre_logits else self.head(x)


def class_prototypes(
    backbone,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    normalize,
    device,
    batch_size: int = 256,
) -> torch.Tensor:
    """(num_classes, D) float32: per class, the mean CLS output of the backbone's last block (before the final
    norm, as the VPT code's 'final-cls' file) over uint8 `images` (N, 3, H, W), in eval mode without
    augmentation. A class without an image gets zeros."""
    tokens = token_interface(backbone)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        cls = torch.cat(
            [
                tokens.last_cls(normalize(images[i : i + batch_size].to(device))).double().cpu()
                for i in range(0, len(images), batch_size)
            ]
        )
    backbone.train(was_training)
    sums = torch.zeros(num_classes, cls.shape[1], dtype=torch.float64).index_add_(0, labels.cpu(), cls)
    counts = torch.bincount(labels.cpu(), minlength=num_classes).clamp(min=1).double()
    return (sums / counts[:, None]).float()


def build_prompted(backbone, num_classes, head_init, **options):
    """VPT-shallow / VPT-deep (by `layers`), and FT-then-PT's stage 2 (the same on a fine-tuned backbone)."""
    return PromptedModel(backbone, num_classes, head_init, **options)


def build_mixed(backbone, num_classes, head_init, **options):
    """Mixed: deep prompts and the whole backbone train together, with the prompt-tuning optimiser."""
    return PromptedModel(backbone, num_classes, head_init, trains_backbone=True, **options)


def expected_tuned_parameters(prompt_length: int, dim: int, depth: int, num_classes: int, deep: bool) -> int:
    """Closed form of VPT's tuned-parameter count: p * D * (L if deep else 1) + D * C + C."""
    return prompt_length * dim * (depth if deep else 1) + dim * num_classes + num_classes


def expected_swin_tuned_parameters(
    prompt_length: int, stage_dims: list[int], stage_depths: list[int], num_classes: int, deep: bool
) -> int:
    """The same on Swin: p * (sum over blocks of the block's width if deep, else the first width) + head.
    Swin-B (widths 128..1024, depths 2, 2, 18, 2): 12,032 * p prompt parameters deep."""
    per_token = sum(d * n for d, n in zip(stage_dims, stage_depths)) if deep else stage_dims[0]
    return prompt_length * per_token + stage_dims[-1] * num_classes + num_classes
