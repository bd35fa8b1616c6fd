"""Pieces every strategy shares: the new classification head, freezing, tuned-parameter accounting."""

from __future__ import annotations

import math

from torch import nn

HEAD_INITS = ("vpt", "zero")


def make_head(dim: int, num_classes: int, init: str = "vpt") -> nn.Linear:
    """A new linear head. "vpt": as in the VPT code, kaiming-normal (fan_out) weight and bias -log(99);
    "zero": all zeros (timm's jax-style head init), which small backbones with short schedules train better from.
    """
    head = nn.Linear(dim, num_classes)
    if init == "vpt":
        nn.init.kaiming_normal_(head.weight, a=0, mode="fan_out")
        nn.init.constant_(head.bias, -math.log((1 - 0.01) / 0.01))
    elif init == "zero":
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    else:
        raise ValueError(f"unknown head init {init!r}; one of {HEAD_INITS}")
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
