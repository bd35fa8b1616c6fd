"""Strategies where only a new head trains on the frozen backbone's pre-logits (features are cached once)."""

from __future__ import annotations

from torch import nn

from vptft.strategies.base import TunedModel, make_head

MLP_DROPOUT = 0.1  # the VPT code's MLP head: dropout after every hidden layer's BatchNorm


def build_linear(backbone, num_classes, head_init):
    """Linear probing: a new linear head."""
    return TunedModel(backbone, num_classes, head_init)


def build_mlp(backbone, num_classes, head_init, k):
    """Mlp-k as the VPT code's head: k linear layers; each of the k - 1 hidden ones (the feature width,
    kaiming-normal fan-out weights) followed by ReLU, BatchNorm1d and Dropout(0.1)."""
    dim = backbone.num_features
    hidden = []
    for _ in range(k - 1):
        layer = nn.Linear(dim, dim)
        nn.init.kaiming_normal_(layer.weight, a=0, mode="fan_out")
        hidden += [layer, nn.ReLU(), nn.BatchNorm1d(dim), nn.Dropout(MLP_DROPOUT)]
    return TunedModel(
        backbone, num_classes, head_init, head=nn.Sequential(*hidden, make_head(dim, num_classes, head_init))
    )
