"""Contrastive pre-training of the mini ViT on the rendered source set: the mini benchmark's stand-in for MoCo v3,
so FT and VPT can be compared on a contrastively pre-trained backbone (Han et al. Tables 13-15, the VPT paper's
Table 4) on a laptop.

Two augmented views of every image; InfoNCE over the batch's 2B views (each view's positive is the other view of
its image, the other 2B - 2 views are its negatives; temperature 0.2) on a projection of the CLS feature; the
projection head is dropped afterwards. As in MoCo v3's ViT the position embedding is a fixed 2-D sin-cos one.
Measured on this set (10 epochs, 20-NN top-1 on held-out images, chance 8.3 %): with MoCo's momentum encoder and
predictor 15 %, without them 24 % - so none here; without the colour-channel permutation the views matched by
their (random per image) colours and 20-NN stayed at chance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def sincos_position_embedding(encoder: VisionTransformer) -> torch.Tensor:
    """MoCo v3's fixed position embedding: 2-D sin-cos of the patch grid (timm's), zero for the CLS slot; computed
    in float64 so that every CPU rounds it to the same float32 values."""
    grid = encoder.patch_embed.grid_size
    patches = build_sincos2d_pos_embed(list(grid), encoder.embed_dim, dtype=torch.float64)
    return torch.cat([patches.new_zeros(1, encoder.embed_dim), patches]).float()[None]


class ContrastiveLearner(nn.Module):
    """The encoder with a projection head (Linear, BatchNorm, ReLU, Linear), trained by InfoNCE between views."""

    def __init__(
        self,
        encoder: VisionTransformer,
        hidden: int = 256,
        out: int = 64,
        temperature: float = 0.2,
        crop_scale: float = 0.5,
    ):
        super().__init__()
        self.encoder, self.temperature, self.crop_scale = encoder, temperature, crop_scale
        with torch.no_grad():
            encoder.pos_embed.copy_(sincos_position_embedding(encoder))
        encoder.pos_embed.requires_grad_(False)
        self.project = nn.Sequential(
            nn.Linear(encoder.num_features, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, out, bias=False),
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled feature a downstream head reads (CLS after the final norm)."""
        return self.encoder(images)

    def view(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One augmented view of uint8 (B, 3, H, W) images, in [0, 1]: a random resized crop (area 0.5-1 of the
        image, aspect 3/4-4/3) with a horizontal flip in one resampling, brightness / contrast jitter (p 0.8),
        grayscale (p 0.3) and a random order of the colour channels."""
        n, dev = len(images), images.device

        def uniform(low, high, *shape):
            return (torch.rand(n, *shape, generator=generator) * (high - low) + low).to(dev)

        x = images.float() / 255
        side = uniform(self.crop_scale, 1.0).sqrt()
        aspect = uniform(math.log(3 / 4), math.log(4 / 3)).exp().sqrt()
        sx, sy = (side * aspect).clamp(max=1), (side / aspect).clamp(max=1)
        flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 1, 1] = sx * flip, sy
        theta[:, 0, 2], theta[:, 1, 2] = uniform(-1, 1) * (1 - sx), uniform(-1, 1) * (1 - sy)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        jitter = (uniform(0, 1) < 0.8).float().view(n, 1, 1, 1)
        brightness = 1 + uniform(-0.4, 0.4).view(n, 1, 1, 1) * jitter
        contrast = 1 + uniform(-0.4, 0.4).view(n, 1, 1, 1) * jitter
        mean = x.mean((1, 2, 3), keepdim=True) * brightness
        x = ((x * brightness - mean) * contrast + mean).clamp(0, 1)
        gray = (uniform(0, 1) < 0.3).view(n, 1, 1, 1)
        x = torch.where(gray, x.mean(1, keepdim=True).expand_as(x), x)
        order = torch.rand(n, 3, generator=generator).argsort(1).to(dev)
        return torch.gather(x, 1, order[:, :, None, None].expand_as(x))

    def loss(self, images: torch.Tensor, normalize, generator: torch.Generator) -> torch.Tensor:
        """InfoNCE of two views of each uint8 image (`normalize` maps [0, 255] to the encoder's input)."""
        views = torch.cat([self.view(images, generator), self.view(images, generator)]) * 255
        z = F.normalize(self.project(self.encoder(normalize(views))), dim=1)
        similarity = z @ z.T / self.temperature
        similarity.fill_diagonal_(float("-inf"))  # a view is not its own positive nor a negative
        n = len(images)
        positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
        return F.cross_entropy(similarity, positives)
