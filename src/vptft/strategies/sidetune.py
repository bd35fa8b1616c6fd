"""Side-tuning (Zhang et al., 2020; a VPT-paper baseline): a small side network trained from scratch on the
image, its feature blended with the frozen backbone's by a learned weight: a * backbone + (1 - a) * side,
a = sigmoid(alpha), alpha = 0 at init; then the head. The VPT code used an ImageNet-pre-trained AlexNet as the
side network; no weights can be fetched here, so the side network is a small CNN trained from scratch.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from vptft.strategies.base import TunedModel
from vptft.strategies.tokens import token_interface


def side_network(out_dim: int, width: int) -> nn.Sequential:
    """4 stride-2 conv layers (width/8 .. width channels), global average pool, a projection to `out_dim`."""
    widths = [3] + [max(1, width // 2 ** (3 - i)) for i in range(4)]
    layers = []
    for c_in, c_out in itertools.pairwise(widths):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, out_dim))


class SideTuned(TunedModel):
    """forward_features appends the side network's feature to the backbone's tokens as one extra token, so the
    timm split (tokens -> forward_head) holds without keeping state between the two calls."""

    def __init__(self, backbone, num_classes, head_init, side_width):
        super().__init__(backbone, num_classes, head_init)
        self.tokens = token_interface(backbone)
        self.side = side_network(backbone.num_features, side_width)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward_features(self, x):
        return torch.cat([self.tokens.features(x), self.side(x)[:, None]], dim=1)

    def forward_head(self, x, pre_logits=False):
        a = torch.sigmoid(self.alpha)
        x = a * self.tokens.pool(x[:, :-1]) + (1 - a) * x[:, -1]
        return x if pre_logits else self.head(x)


def build_sidetune(backbone, num_classes, head_init, side_width):
    return SideTuned(backbone, num_classes, head_init, side_width)
