"""Strategies that tune backbone weights, all or some (AdamW in the VPT paper): Full, Partial-k, Bias,
Adapter, LoRA. The backbone runs in train mode, so its dropout is on, as in the VPT code.
"""

from __future__ import annotations

from torch import nn

from vptft.strategies.base import TunedModel, fixed_parameters
from vptft.strategies.tokens import token_interface


def build_full(backbone, num_classes, head_init):
    """Full finetuning: every backbone weight and a new head."""
    return TunedModel(backbone, num_classes, head_init, trains_backbone=True)


def _tune_only(model: TunedModel, predicate) -> TunedModel:
    """Freeze the backbone except the parameters whose name satisfies `predicate` (and is not fixed)."""
    fixed = fixed_parameters(model.backbone)
    for name, param in model.backbone.named_parameters():
        param.requires_grad_(bool(predicate(name)) and name not in fixed)
    return model


def build_partial(backbone, num_classes, head_init, k):
    """Partial-k: the last k blocks, the final norm (and fc_norm where there is one) and the head."""
    tuned = token_interface(backbone).last_blocks(k)
    return _tune_only(
        TunedModel(backbone, num_classes, head_init, trains_backbone=True),
        lambda name: name.startswith(tuned),
    )


def build_bias(backbone, num_classes, head_init):
    """Bias (BitFit / TinyTL): every bias term of the backbone and the head."""
    return _tune_only(
        TunedModel(backbone, num_classes, head_init, trains_backbone=True), lambda name: name.endswith("bias")
    )


class Adapter(nn.Module):
    """FFN -> FFN output + up(GELU(down(FFN output))) (the VPT paper's adapter placement: after the FFN, with a
    residual), unchanged at init either way:

    - init 'zero_both' (the VPT code): both projections start at zero. GELU(0) = 0, so neither weight ever gets
      a gradient and only the up-projection's bias learns - in effect a bias added to every FFN output;
    - init 'zero_up' (the intended bottleneck adapter): the down-projection keeps its default init, the
      up-projection starts at zero, and both train."""

    def __init__(self, mlp: nn.Module, dim: int, reduction: int, init: str):
        super().__init__()
        self.mlp = mlp
        self.down = nn.Linear(dim, max(1, dim // reduction))
        self.act = nn.GELU()
        self.up = nn.Linear(max(1, dim // reduction), dim)
        zeroed = {"zero_both": (self.down, self.up), "zero_up": (self.up,)}[init]
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        h = self.mlp(x)
        return h + self.up(self.act(self.down(h)))


def build_adapter(backbone, num_classes, head_init, reduction, init):
    """Adapter-r: a bottleneck adapter (width D / r) after every block's FFN; the backbone's own weights freeze."""
    model = _tune_only(TunedModel(backbone, num_classes, head_init, trains_backbone=True), lambda name: False)
    token_interface(backbone).wrap_mlps(lambda mlp, width: Adapter(mlp, width, reduction, init))
    return model


def build_lora(backbone, num_classes, head_init, rank, alpha):
    """LoRA through peft on the attention `qkv` projections (zero-initialised B: unchanged at init)."""
    from peft import LoraConfig, inject_adapter_in_model

    model = _tune_only(TunedModel(backbone, num_classes, head_init, trains_backbone=True), lambda name: False)
    targets = list(token_interface(backbone).lora_targets)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, bias="none")
    inject_adapter_in_model(config, backbone)
    for name, param in backbone.named_parameters():
        param.requires_grad_("lora_" in name)
    return model
