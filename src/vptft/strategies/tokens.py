"""Where strategies meet a backbone family: its token embedding, blocks, final norm and pooling, the weights
Partial / Adapter / LoRA tune, the layer GradCAM reads and the patch grid.

Every strategy and analysis is written once against this interface (the registry in vptft.backbones holds the
facts the workflow plans with); a new backbone family (e.g. Swin) adds its own class here instead of a copy of
every strategy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn


class ViTTokens:
    """The token-insertion point of a timm VisionTransformer."""

    def __init__(self, vit: VisionTransformer):
        self.vit = vit
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.dim = vit.embed_dim
        self.depth = len(vit.blocks)
        self.patch_size = vit.patch_embed.patch_size[0]
        self.num_patches = vit.patch_embed.num_patches

    @property
    def blocks(self):
        return self.vit.blocks

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> [prefix (CLS), patches] after the position embedding, its dropout and the pre-norm."""
        vit = self.vit
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's own feature of its final-normed tokens, through timm's `forward_head`: the CLS token, or
        (MAE's `global_pool='avg'`) the mean of every token after the prefix, prompts included, through
        `fc_norm`, as the VPT code pools MAE."""
        return self.vit.forward_head(x, pre_logits=True)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(rows, columns) of the patch grid."""
        return tuple(self.vit.patch_embed.grid_size)

    @property
    def cam_layer(self) -> nn.Module:
        """The last block's first norm: its patch tokens still reach the CLS token through the last attention."""
        return self.vit.blocks[-1].norm1

    def last_blocks(self, k: int) -> tuple[str, ...]:
        """Parameter-name prefixes of Partial-k: the last k blocks, the final norm and fc_norm where it exists."""
        return tuple(f"blocks.{i}." for i in range(self.depth - k, self.depth)) + ("norm.", "fc_norm.")

    lora_targets = ("qkv",)  # the attention projections LoRA adapts

    def wrap_mlps(self, wrap) -> None:
        """Replace every block's FFN `mlp` by `wrap(mlp, width)` (adapters)."""
        for block in self.vit.blocks:
            block.mlp = wrap(block.mlp, self.dim)

    @staticmethod
    def block_with_kv_prefix(block, x: torch.Tensor, prefix: torch.Tensor, keep: torch.Tensor | None = None):
        """One block where `prefix` tokens (B, p, D) join only the keys and values of self-attention (queries and
        outputs are the sequence's own); `keep` (p,) bool drops prefix tokens from the attention entirely."""
        attn = block.attn
        b, n, d = x.shape
        heads = attn.num_heads

        def project(tokens):
            qkv = attn.qkv(block.norm1(tokens)).reshape(b, tokens.shape[1], 3, heads, d // heads)
            return qkv.permute(2, 0, 3, 1, 4).unbind(0)

        q, k, v = project(x)
        _, pk, pv = project(prefix)
        q, k, pk = attn.q_norm(q), attn.k_norm(k), attn.k_norm(pk)
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        mask = None
        if keep is not None:
            mask = torch.cat([keep.to(x.device), torch.ones(n, dtype=torch.bool, device=x.device)])[
                None, None, None
            ]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=attn.attn_drop.p if attn.training else 0.0
        )
        out = out.transpose(1, 2).reshape(b, n, d)
        out = attn.proj_drop(attn.proj(getattr(attn, "norm", torch.nn.Identity())(out)))
        x = x + block.drop_path1(block.ls1(out))
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def token_interface(backbone) -> ViTTokens:
    """The token-insertion point of `backbone`'s family."""
    if isinstance(backbone, VisionTransformer):
        return ViTTokens(backbone)
    raise TypeError(
        f"{type(backbone).__name__}: no token-insertion point for this backbone family; "
        "add one in vptft/strategies/tokens.py"
    )
