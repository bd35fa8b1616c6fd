"""Visual Prompt Tuning (Jia et al., 2022) for any timm VisionTransformer.

Sequence = [prefix (CLS), prompts, patches]; prompts are inserted after the position embedding (and its dropout)
and carry none. Deep: before every block i >= 1 the tokens at the prompt positions are replaced by that layer's
fresh prompts (the previous block's outputs there are discarded). Shallow: the layer-0 prompts flow through.
The final norm runs over the whole sequence and the head reads token 0. Backbone frozen and kept in eval mode.
Only prompts + head train: p * D * (L if deep else 1) + D * C + C parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vptft.strategies.heads import FrozenBackboneMixin, freeze, make_head


def prompt_init_bound(patch_size: int, dim: int) -> float:
    """The VPT code's uniform init bound: sqrt(6 / (3 * patch^2 + dim)) (0.0625 for ViT-B/16)."""
    return math.sqrt(6.0 / float(3 * patch_size * patch_size + dim))


class PromptedViT(FrozenBackboneMixin, nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, prompt_length: int, deep: bool,
                 prompt_dropout: float = 0.0, head_init: str = "vpt"):
        super().__init__()
        if prompt_length < 1:
            raise ValueError(f"prompt_length must be >= 1, got {prompt_length}")
        self.backbone = freeze(backbone)
        self.deep = deep
        self.prompt_length = prompt_length
        dim = backbone.embed_dim
        layers = len(backbone.blocks) if deep else 1
        bound = prompt_init_bound(backbone.patch_embed.patch_size[0], dim)
        self.prompts = nn.Parameter(torch.empty(layers, prompt_length, dim).uniform_(-bound, bound))
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        self.head = make_head(dim, num_classes, head_init)

    def _prompts(self, layer: int, batch: int) -> torch.Tensor:
        return self.prompt_dropout(self.prompts[layer].expand(batch, -1, -1))

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The final-normed token sequence [prefix, prompts, patches]."""
        vit = self.backbone
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        n_prefix, p = vit.num_prefix_tokens, self.prompt_length
        x = torch.cat([x[:, :n_prefix], self._prompts(0, x.shape[0]).to(x.dtype), x[:, n_prefix:]], dim=1)
        for i, block in enumerate(vit.blocks):
            if self.deep and i > 0:
                prompts = self._prompts(i, x.shape[0]).to(x.dtype)
                x = torch.cat([x[:, :n_prefix], prompts, x[:, n_prefix + p:]], dim=1)
            x = block(x)
        return vit.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_deep(backbone, num_classes, prompt_length=10, prompt_dropout=0.0, head_init="vpt"):
    return PromptedViT(backbone, num_classes, int(prompt_length), True, prompt_dropout, head_init)


def build_shallow(backbone, num_classes, prompt_length=10, prompt_dropout=0.0, head_init="vpt"):
    return PromptedViT(backbone, num_classes, int(prompt_length), False, prompt_dropout, head_init)


def expected_tuned_parameters(prompt_length: int, dim: int, depth: int, num_classes: int, deep: bool) -> int:
    """Closed form of the tuned-parameter count (REFERENCE.md section 2)."""
    return prompt_length * dim * (depth if deep else 1) + dim * num_classes + num_classes
