"""Pieces every strategy shares: the new classification head, freezing, tuned-parameter accounting."""

from __future__ import annotations

import math

from torch import nn


def make_head(dim: int, num_classes: int) -> nn.Linear:
    """Linear head initialised as in the VPT code: kaiming-normal (fan_out) weight, bias -log(99)."""
    head = nn.Linear(dim, num_classes)
    nn.init.kaiming_normal_(head.weight, a=0, mode="fan_out")
    nn.init.constant_(head.bias, -math.log((1 - 0.01) / 0.01))
    return head


def freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    return module


def tuned_parameters(model: nn.Module) -> dict:
    """The parameters the optimiser updates (those that require grad), by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def parameter_counts(model: nn.Module) -> dict:
    tuned = sum(p.numel() for p in tuned_parameters(model).values())
    total = sum(p.numel() for p in model.parameters())
    return {"tuned": tuned, "total": total, "tuned_pct": 100.0 * tuned / total}


class FrozenBackboneMixin:
    """Keeps `self.backbone` in eval mode (no dropout, frozen norms) even while the rest trains."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self
