"""Strategies where only a new head trains on the frozen backbone's pre-logits (features are cached once)."""

from __future__ import annotations

from torch import nn

from vptft.strategies.base import TunedModel, make_head


def build_linear(backbone, num_classes, head_init):
    """Linear probing: a new linear head."""
    return TunedModel(backbone, num_classes, head_init)


def build_mlp(backbone, num_classes, head_init, k):
    """Mlp-k (VPT paper): k linear layers, the k - 1 hidden ones of the feature width with ReLU."""
    dim = backbone.num_features
    hidden = [layer for _ in range(k - 1) for layer in (nn.Linear(dim, dim), nn.ReLU())]
    return TunedModel(
        backbone, num_classes, head_init, head=nn.Sequential(*hidden, make_head(dim, num_classes, head_init))
    )
