"""Visual Prompt Tuning (Jia et al., 2022) and the study's prompt-based rows (Mixed, FT-then-PT), written once
against a backbone family's token-insertion point (vptft.strategies.tokens).

Sequence = [prefix (CLS), prompts, patches]; prompts are inserted after the position embedding (and its
dropout) and carry none. At the first prompted block the prompts are inserted; before every later prompted
block the tokens at the prompt positions are replaced by that block's fresh prompts (the previous block's
outputs there are discarded); after the last prompted block they flow on. VPT-shallow prompts block 0 only,
VPT-deep every block. The final norm runs over the whole sequence and the head reads the backbone's own pooled
feature (`pooling: backbone`: the CLS token, or MAE's average of every token after CLS, prompts included, through
fc_norm, as the VPT code) or one of the VPT ablation's poolings.
`location="add"` instead adds one prompt to each patch embedding at every prompted block (VPT ablation).
Tuned: prompts (p * D per prompted block) + head, plus the backbone for Mixed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vptft.strategies.base import TunedModel
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
    ):
        super().__init__(backbone, num_classes, head_init, trains_backbone)
        self.tokens = token_interface(backbone)
        self.location, self.pooling = location, pooling
        self.prompt_length = 0 if location == "add" else prompt_length
        self.prompted = prompted_blocks(layers, self.tokens.depth)
        tokens_per_block = self.tokens.num_patches if location == "add" else prompt_length
        bound = prompt_init_bound(self.tokens.patch_size, self.tokens.dim)
        self.prompts = nn.Parameter(
            torch.empty(len(self.prompted), tokens_per_block, self.tokens.dim).uniform_(-bound, bound)
        )
        self.prompt_dropout = nn.Dropout(prompt_dropout)

    def _prompts(self, slot: int, x: torch.Tensor) -> torch.Tensor:
        return self.prompt_dropout(self.prompts[slot].expand(x.shape[0], -1, -1)).to(x.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final-normed token sequence [prefix, prompts, patches]."""
        x = self.tokens.embed(x)
        n, p = self.tokens.num_prefix_tokens, self.prompt_length
        slots = {block: slot for slot, block in enumerate(self.prompted)}
        for i, block in enumerate(self.tokens.blocks):
            if i in slots:
                prompts = self._prompts(slots[i], x)
                if self.location == "add":
                    x = torch.cat([x[:, :n], x[:, n:] + prompts], dim=1)
                else:  # insert at the first prompted block, replace the prompt outputs at the later ones
                    kept = n + p if slots[i] > 0 else n
                    x = torch.cat([x[:, :n], prompts, x[:, kept:]], dim=1)
            x = block(x)
        return self.tokens.norm(x)

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


def build_prompted(backbone, num_classes, head_init, **options):
    """VPT-shallow / VPT-deep (by `layers`), and FT-then-PT's stage 2 (the same on a fine-tuned backbone)."""
    return PromptedModel(backbone, num_classes, head_init, **options)


def build_mixed(backbone, num_classes, head_init, **options):
    """Mixed: deep prompts and the whole backbone train together, with the prompt-tuning optimiser."""
    return PromptedModel(backbone, num_classes, head_init, trains_backbone=True, **options)


def expected_tuned_parameters(prompt_length: int, dim: int, depth: int, num_classes: int, deep: bool) -> int:
    """Closed form of VPT's tuned-parameter count: p * D * (L if deep else 1) + D * C + C."""
    return prompt_length * dim * (depth if deep else 1) + dim * num_classes + num_classes
