"""Where prompt methods meet a backbone family: its token embedding, blocks and final norm.

Prompt methods (VPT, Mixed, FT-then-PT, VPT-prefix, Adapt) are written once against this interface; a new
backbone family (e.g. Swin) adds its own class here instead of a copy of every prompt method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer


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
