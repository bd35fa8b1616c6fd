"""The model contract every strategy shares, in timm's terms: `forward_features(x)` gives the final-normed
tokens, `forward_head(tokens, pre_logits=True)` the pooled feature a head reads, `head` the classifier.

A strategy's model also says which of its parameters train and in which group (`param_groups`: head,
backbone, or the strategy's own added parameters), so the engine builds optimisers, caches frozen features,
saves tuned parameters and calls training hooks without knowing which strategy it drives.
"""

from __future__ import annotations

import math

import torch
from torch import nn

HEAD_INITS = ("vpt", "zero")
GROUPS = ("head", "backbone", "added")


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


def fixed_parameters(backbone: nn.Module) -> set[str]:
    """Backbone parameters that never train (the registry's `fixed`, e.g. MoCo v3's sin-cos position embedding)."""
    return set(getattr(backbone, "fixed_parameters", ()))


class TunedModel(nn.Module):
    """backbone -> tokens -> pooled feature -> head. The backbone trains only where `trains_backbone` says so
    (never its fixed parameters); otherwise it is frozen and kept in eval mode (no dropout), as in the VPT code."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        head_init: str,
        trains_backbone: bool = False,
        head: nn.Module | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.trains_backbone = trains_backbone
        self._backbone_params = {id(p) for p in backbone.parameters()}
        fixed = fixed_parameters(backbone)
        for name, param in backbone.named_parameters():
            param.requires_grad_(trains_backbone and name not in fixed)
        self.head = head if head is not None else make_head(backbone.num_features, num_classes, head_init)

    # timm's forward split
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.backbone.forward_head(x, pre_logits=True)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # what trains, and where
    @property
    def classifier(self) -> nn.Linear:
        """The layer that outputs the logits (its bias gets no weight decay under SGD, as in the VPT code)."""
        return self.head[-1] if isinstance(self.head, nn.Sequential) else self.head

    def param_group(self, name: str, param: nn.Parameter) -> str:
        if name.startswith("head."):
            return "head"
        return "backbone" if id(param) in self._backbone_params else "added"

    def param_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Trainable parameters by group: head, backbone (its own weights) and added (prompts, adapters, ...)."""
        groups = {group: {} for group in GROUPS}
        for name, param in self.named_parameters():
            if param.requires_grad:
                groups[self.param_group(name, param)][name] = param
        return groups

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trains_backbone:
            self.backbone.eval()
        return self

    # hooks the engine calls
    def after_backward(self, epoch: int) -> None:
        """Called after every backward pass, before the optimiser step (gradients are available)."""

    def stored_parameters(self) -> int:
        """Parameters a task keeps after training (Adapt drops its pruned tokens)."""
        return sum(p.numel() for p in tuned_parameters(self).values())

    def summary(self) -> dict:
        """Strategy-specific facts to record in metrics.json (e.g. Adapt's per-layer context lengths)."""
        return {}


def tuned_parameters(model: nn.Module) -> dict:
    """The parameters the optimiser updates (those that require grad), by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def parameter_counts(model: nn.Module) -> dict:
    tuned = sum(p.numel() for p in tuned_parameters(model).values())
    total = sum(p.numel() for p in model.parameters())
    return {"tuned": tuned, "total": total, "tuned_pct": 100.0 * tuned / total}


def tuned_state_dict(model: nn.Module) -> dict:
    """What a run must keep to reproduce its logits on top of the backbone it started from: the tuned
    parameters and the strategy's own buffers (e.g. Adapt's token mask)."""
    tuned = set(tuned_parameters(model))
    buffers = {name for name, _ in model.named_buffers() if not name.startswith("backbone.")}
    return {k: v for k, v in model.state_dict().items() if k in tuned | buffers}
