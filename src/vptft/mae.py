"""Masked autoencoding (He et al., 2022) of the mini ViT on the rendered source set: the mini benchmark's
stand-in for MAE pre-training, so FT and VPT can be compared across pre-training objectives (Han et al.
Tables 10-12) on a laptop.

The encoder is the backbone itself (its CLS token, position embedding, blocks and final norm) run on a random
quarter of the patches; a small decoder (two transformer blocks) fills in mask tokens and predicts each masked
patch's pixels, normalised per patch; the loss is their mean squared error. The checkpoint holds the encoder
in MAE's layout (with its final norm), which the registry's `mae` loader reads as the VPT code reads MAE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn


class MaskedAutoencoder(nn.Module):
    def __init__(self, encoder: VisionTransformer, mask_ratio: float = 0.75, width: int = 64, depth: int = 2):
        super().__init__()
        self.encoder, self.mask_ratio = encoder, mask_ratio
        patch = encoder.patch_embed.patch_size[0]
        n = encoder.patch_embed.num_patches
        self.embed = nn.Linear(encoder.embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.zeros(1, 1 + n, width))
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.Sequential(*[Block(width, num_heads=4) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.predict = nn.Linear(width, patch * patch * 3)

    def encode(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Final-normed [CLS, kept patches] (all patches where `keep` is None)."""
        enc = self.encoder
        x = enc.patch_embed(images) + enc.pos_embed[:, 1:]
        if keep is not None:
            x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(len(x), -1, -1)
        return enc.norm(enc.blocks(enc.norm_pre(torch.cat([cls, x], dim=1))))

    def loss(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error of the masked patches' per-patch-normalised pixels."""
        b, n = len(images), self.encoder.patch_embed.num_patches
        kept = max(1, round(n * (1 - self.mask_ratio)))
        order = torch.rand(b, n, generator=generator, device=images.device).argsort(1)
        keep, masked = order[:, :kept], order[:, kept:]
        latent = self.embed(self.encode(images, keep))
        tokens = self.mask_token.expand(b, n, -1).clone()
        tokens.scatter_(1, keep[..., None].expand(-1, -1, tokens.shape[-1]), latent[:, 1:])
        x = torch.cat([latent[:, :1], tokens], dim=1) + self.pos
        pred = self.predict(self.norm(self.blocks(x)))[:, 1:]
        target = self.patches(images)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        index = masked[..., None].expand(-1, -1, target.shape[-1])
        return F.mse_loss(torch.gather(pred, 1, index), torch.gather(target, 1, index))

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, p * p * 3), row-major patches as the patch embedding sees them."""
        p = self.encoder.patch_embed.patch_size[0]
        b, c, h, w = images.shape
        x = images.reshape(b, c, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


@torch.no_grad()
def knn_top1(train_features, train_labels, test_features, test_labels, k: int = 20) -> float:
    """Top-1 (%) of a k-nearest-neighbour vote (cosine similarity) on frozen features: how much class
    information a self-supervised encoder holds, without training anything on the labels."""
    a, b = F.normalize(train_features, dim=1), F.normalize(test_features, dim=1)
    nearest = (b @ a.T).topk(k, dim=1).indices
    votes = F.one_hot(train_labels[nearest], int(train_labels.max()) + 1).sum(1)
    return 100.0 * float((votes.argmax(1) == test_labels).float().mean())
