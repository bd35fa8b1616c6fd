"""Registry of tuning strategies. A strategy declares its optimiser family (REFERENCE.md section 2: SGD for
prompt/linear-style methods, AdamW for methods that tune backbone weights), its own hyper-parameters with their
defaults, and the function that wraps a backbone into the tuned model.

This module stays torch-free (builders are imported on first use) so that config validation and the Snakefile
can list strategies and their hyper-parameters cheaply. New strategy = one module + one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StrategySpec:
    name: str
    optimizer: str  # "sgd" (momentum 0.9) or "adamw"
    builder: str  # "module:function" taking (backbone, num_classes, **hparams)
    hparams: dict = field(default_factory=dict)  # extra hyper-parameters and their defaults
    cache_features: bool = False  # the backbone is frozen and its output used as is: compute features once
    description: str = ""

    def build(self, backbone, num_classes: int, head_init: str = "vpt", **hparams):
        """The tuned model: `backbone` wrapped with a new `head_init` head and the strategy's parameters."""
        unknown = set(hparams) - set(self.hparams)
        if unknown:
            raise TypeError(f"strategy {self.name!r} has no hyper-parameters {sorted(unknown)}; "
                            f"it takes {sorted(self.hparams)}")
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)(backbone, num_classes, head_init=head_init,
                                                                  **{**self.hparams, **hparams})


STRATEGIES = {s.name: s for s in [
    StrategySpec("full", "adamw", "vptft.strategies.full:build", description="all parameters"),
    StrategySpec("linear", "sgd", "vptft.strategies.linear:build", cache_features=True,
                 description="a new head on frozen features"),
    StrategySpec("vpt_shallow", "sgd", "vptft.strategies.vpt:build_shallow",
                 {"prompt_length": 10, "prompt_dropout": 0.0}, description="p prompts at the first layer + head"),
    StrategySpec("vpt_deep", "sgd", "vptft.strategies.vpt:build_deep",
                 {"prompt_length": 10, "prompt_dropout": 0.0}, description="p fresh prompts at every layer + head"),
]}


def get_strategy(name: str) -> StrategySpec:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}") from None
