"""Registry of tuning strategies, torch-free: the config validation, the Snakefile, the sweep and the builders
all read a strategy's declaration here, so each default lives in one place.

A strategy (like a peft method) is a typed declaration - its options with types and defaults, its optimiser
family, what trains, whether it continues another strategy's runs - plus one builder that wraps a backbone
into a `vptft.strategies.base.TunedModel`. Builders are imported on first use. New strategy = one module + one
entry in STRATEGIES.
"""

from __future__ import annotations

import importlib
import itertools
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

# The VPT paper's Table 8 batch rule: prompt lengths from this value on train with the smaller batch.
LONG_PROMPT = 100


@dataclass(frozen=True)
class Option:
    """One hyper-parameter of a strategy: its type, default and allowed values (checked before any job runs)."""

    type: type
    default: Any
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # > 0 (lr)
    pattern: str | None = None
    help: str = ""

    def problem(self, value) -> str | None:
        """What is wrong with `value` (None if it is valid)."""
        expected = (int, float) if self.type is float else self.type
        if isinstance(value, bool) and self.type is not bool or not isinstance(value, expected):
            return f"{value!r} is not of type {self.type.__name__}"
        if isinstance(value, float) and math.isnan(value):
            return "NaN is not a valid value"
        if self.positive and value <= 0:
            return f"{value!r} must be greater than 0"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {list(self.choices)}"
        if self.minimum is not None and value < self.minimum:
            return f"{value!r} is below the minimum {self.minimum}"
        if self.maximum is not None and value > self.maximum:
            return f"{value!r} is above the maximum {self.maximum}"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"{value!r} does not match {self.pattern}"
        return None

    def cast(self, value):
        return self.type(value)


LR = Option(float, None, positive=True, help="base lr (scaled by batch / lr_scale_batch)")
WD = Option(float, None, minimum=0.0, help="weight decay (see train.optimizer_behavior)")
BASE_OPTIONS = {"lr": LR, "wd": WD}

PROMPT_OPTIONS = {
    "prompt_length": Option(int, 10, minimum=1, help="prompt tokens per prompted layer"),
    "prompt_dropout": Option(
        float, 0.0, minimum=0.0, maximum=1.0, help="dropout on the prompts (VPT code: 0.0)"
    ),
    "location": Option(
        str,
        "prepend",
        choices=("prepend", "add", "prepend_pixel", "concat_channel"),
        help="prepend tokens, add one prompt to each token (CLS included), or in pixel space: prepend patches "
        "the frozen patch embedding embeds, or concatenate channels to the image under a new patch embedding "
        "(VPT ablation; the pixel forms prompt the input only, layers '0:1')",
    ),
    "pooling": Option(
        str,
        "backbone",
        choices=("backbone", "cls", "image_pool", "prompt_pool", "global_pool"),
        help="the feature the head reads: the backbone's own pooling, or a VPT-ablation pooling",
    ),
    "layers": Option(
        str,
        "all",
        pattern=r"all|\d+:\d+",
        help="blocks that receive prompts, 'all' or a slice 'start:stop' (VPT depth ablation)",
    ),
}
# The VPT paper's other ablations of VPT itself (its Figures 11-12, Table 9): VPT-shallow and VPT-deep only
VPT_ABLATION_OPTIONS = {
    "share": Option(
        str,
        "none",
        choices=("none", "intra", "inter", "all"),
        help="shared prompts (VPT Figure 12): one vector for a block's p tokens (intra), the same p tokens at "
        "every block (inter), or one vector everywhere (all)",
    ),
    "learn": Option(
        str,
        "prompts",
        choices=("prompts", "fixed", "cls", "prompts_bias"),
        help="what learns with the head (VPT Figure 11, Table 9): the prompts; nothing (prompts fixed at their "
        "random init); the CLS token instead of prompts; the prompts and every backbone bias (VPT + Bias)",
    ),
    "init": Option(
        str,
        "random",
        choices=("random", "class_prototype"),
        help="the prompts' start (VPT Figure 13): uniform random, or one prompt per class at every prompted "
        "block, its class's mean last-block CLS output over the run's train images (prompt length = classes)",
    ),
}
# On a CLIP backbone: which head reads the image feature, which towers key/value prompts go into
HEAD_OPTION = {
    "head": Option(
        str,
        "linear",
        choices=("linear", "text"),
        help="a new linear head, or CLIP's image-text matching with the class names (CLIP backbones)",
    )
}
TOWER_OPTION = {
    "towers": Option(
        str,
        "image",
        choices=("image", "text", "both"),
        help="the towers whose blocks get key/value prompts (text / both: CLIP with head 'text')",
    )
}
KV_PROMPT_OPTIONS = {
    "prompt_length": Option(int, 10, minimum=1, help="key/value prompt tokens per layer"),
    "prompt_dropout": PROMPT_OPTIONS["prompt_dropout"],
    **HEAD_OPTION,
    **TOWER_OPTION,
}
ADAPT_OPTIONS = {
    "context_length": Option(int, 16, minimum=1, help="xi: key/value prompt tokens per layer at the start"),
    "target_length": Option(int, 32, minimum=1, help="T_target: kept tokens summed over layers at the end"),
    "saliency": Option(
        str, "snip", choices=("snip", "grad_norm", "l2"), help="what ranks tokens for pruning"
    ),
    "prune_every": Option(int, 80, minimum=1, help="n_k: minibatches between pruning steps"),
    "prune_tokens": Option(int, 4, minimum=1, help="r_p: tokens pruned per pruning step"),
    "warmup_epochs": Option(int, 5, minimum=0, help="epochs before the first pruning step"),
    "prompt_dropout": PROMPT_OPTIONS["prompt_dropout"],
    **HEAD_OPTION,
    **TOWER_OPTION,
}
COOP_OPTIONS = {
    "n_ctx": Option(int, 16, minimum=1, help="CoOp's learned context vectors (shared by the classes)")
}


def _head_problems(values: dict, depth: int) -> list[str]:
    """Text prompts are read only by CLIP's image-text head."""
    if values.get("towers", "image") != "image" and values.get("head") != "text":
        return [f"towers {values['towers']!r} prompts the text tower, which only head 'text' reads"]
    return []


def _prompt_problems(values: dict, depth: int) -> list[str]:
    """Combinations a prompt strategy cannot build: an empty or out-of-range `layers`, prompt pooling without
    prepended prompts."""
    errors = []
    layers = values.get("layers", "all")
    if layers != "all":
        start, stop = map(int, layers.split(":"))
        if not 0 <= start < stop <= depth:
            errors.append(f"layers {layers!r} is not a non-empty block range of a {depth}-block backbone")
    location = values.get("location", "prepend")
    if location in ("add", "concat_channel") and values.get("pooling") == "prompt_pool":
        errors.append(f"pooling 'prompt_pool' needs prepended prompts, not location {location!r}")
    if location in ("prepend_pixel", "concat_channel") and layers != "0:1":
        errors.append(
            f"location {location!r} prompts the input image only: it needs layers '0:1', not {layers!r}"
        )
    if location in ("prepend_pixel", "concat_channel") and values.get("share", "none") != "none":
        errors.append(f"share {values['share']!r} shares latent prompts, not location {location!r}'s pixels")
    if values.get("learn") == "cls" and (location != "prepend" or values.get("share", "none") != "none"):
        errors.append("learn 'cls' inserts no prompts: location and share keep their defaults")
    if values.get("learn") == "cls" and values.get("pooling") == "prompt_pool":
        errors.append("pooling 'prompt_pool' needs prompts, and learn 'cls' inserts none")
    if values.get("init") == "class_prototype" and (
        location != "prepend" or values.get("share", "none") != "none" or values.get("learn") == "cls"
    ):
        errors.append(
            "init 'class_prototype' starts prepended, unshared prompts: location 'prepend', share "
            "'none', learn not 'cls'"
        )
    return errors


def _depth_problems(key: str):
    def problems(values: dict, depth: int) -> list[str]:
        return (
            [f"{key} {values[key]} exceeds the backbone's {depth} blocks"]
            if values.get(key, 0) > depth
            else []
        )

    return problems


def _adapt_problems(values: dict, depth: int) -> list[str]:
    """The budget must be below the tokens it starts from (image tower; with text prompts the text tower's
    blocks add theirs, checked where the backbone is known: vptft.backbones.family_problem)."""
    total = depth * values["context_length"]
    if values["target_length"] > total and values.get("towers", "image") == "image":
        return [
            (
                f"target_length {values['target_length']} exceeds the {total} tokens of {depth} blocks x "
                f"context_length {values['context_length']}"
            )
        ]
    return _head_problems(values, depth)


def _adapt_schedule(values: dict, epochs: int, steps: int) -> str | None:
    """Whether pruning can reach the budget within the run: Adapt's result is defined by that budget. The tokens
    it starts from: context_length at every prompted block (`depth` image blocks, `text_depth` text blocks)."""
    towers = values.get("towers", "image")
    blocks = values["depth"] * (towers != "text") + values.get("text_depth", 0) * (towers != "image")
    prunes = -(-(values["context_length"] * blocks - values["target_length"]) // values["prune_tokens"])
    after_warmup = steps * max(0, epochs - values["warmup_epochs"]) // max(1, epochs)
    if prunes * values["prune_every"] > after_warmup:
        return (
            f"reaching target_length {values['target_length']} takes {prunes} pruning steps x prune_every "
            f"{values['prune_every']} = {prunes * values['prune_every']} minibatches after warm-up, but the "
            f"run has about {after_warmup}; lower prune_every, raise prune_tokens or shorten warmup_epochs"
        )
    return None


@dataclass(frozen=True)
class StrategySpec:
    name: str
    optimizer: str  # "sgd" (momentum 0.9) or "adamw": prompt and head methods SGD, backbone tuning AdamW
    builder: str  # "module:function" taking (backbone, num_classes, head_init=..., **options)
    options: dict = field(default_factory=dict)  # name -> Option (besides lr and wd)
    cache_features: bool = False  # only a head trains on the frozen backbone's pre-logits: compute them once
    trains_backbone: bool = False  # backbone weights train, so it runs in train mode (its dropout is on)
    continues: str | None = (
        None  # a strategy whose final runs (and selected sweep point) this one starts from
    )
    stores_backbone: bool = False  # a task needs its own copy of the whole backbone (total-parameter count)
    description: str = ""
    combination_problems: Any = None  # (values, backbone depth) -> list of what cannot be built
    schedule: Any = None  # (values incl. depth, epochs, steps) -> what the training schedule cannot deliver
    table8: str | None = (
        None  # its column of the VPT paper's Table 8 (batch sizes): linear, partial, full, prompt
    )
    label: str = ""  # its name in legends (default: the registry name)
    color: str = "#8c564b"  # its colour in figures
    prompt: bool = False  # a prompt method: its step time grows with the prompt length (cost model)
    text_head: bool = False  # always CLIP's image-text head (zero-shot, CoOp); others: option `head`
    base: str = ""  # the registry strategy (a variant's base; its own name otherwise)
    variant: tuple = ()  # a variant's fixed (option, value) pairs, in the order of its name

    def __post_init__(self):
        if not self.base:
            object.__setattr__(self, "base", self.name)
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def all_options(self) -> dict:
        return {**BASE_OPTIONS, **self.options}

    def problems(self, path: str, grid: dict, options: dict, depth: int | None = None) -> list[str]:
        """Every wrong key, type or value of a config entry's grid (lists) and options, with its key path; with
        the backbone's `depth`, also every grid point whose combination of values cannot be built."""
        errors = []
        allowed = ", ".join(sorted(self.options)) or "none"
        for where, values in (("grid", grid), ("options", options)):
            for key, value in values.items():
                option = self.all_options.get(key)
                if key in dict(self.variant):
                    errors.append(f"{path}.{where}.{key}: fixed by the variant's name {self.name!r}")
                    continue
                if option is None or (where == "options" and key in BASE_OPTIONS):
                    errors.append(
                        f"{path}.{where}.{key}: {self.name!r} has no hyper-parameter {key!r} "
                        f"(allowed: {allowed})"
                    )
                    continue
                items = enumerate(value) if where == "grid" else [(None, value)]
                for i, item in items:
                    if (problem := option.problem(item)) is not None:
                        where_i = f"{path}.{where}.{key}" + (f"[{i}]" if i is not None else "")
                        errors.append(f"{where_i}: {problem}")
        both = set(grid) & set(options)
        errors += [
            f"{path}.options.{key}: {key!r} is also in the grid; give it in one place" for key in sorted(both)
        ]
        if not errors and self.uses_class_prototypes(options):
            given = [
                f"{path}.{where}.prompt_length"
                for where, v in (("grid", grid), ("options", options))
                if "prompt_length" in v
            ] + ([path] if "prompt_length" in dict(self.variant) else [])
            errors += [
                f"{where}: init 'class_prototype' inserts one prompt per class; its prompt length is "
                "the task's class count"
                for where in given
            ]
        if errors or depth is None or self.combination_problems is None:
            return errors
        extras = {k: v for k, v in grid.items() if k not in BASE_OPTIONS}
        for combo in itertools.product(*extras.values()):
            values = self.resolve({**options, **dict(zip(extras, combo))})
            for problem in self.combination_problems(values, depth):
                where = ", ".join(f"{k}={v!r}" for k, v in zip(extras, combo))
                errors.append(f"{path}: {problem}" + (f" (grid point {where})" if where else ""))
        return list(dict.fromkeys(errors))

    def schedule_problem(
        self, values: dict, epochs: int, steps: int, depth: int, text_depth: int = 0
    ) -> str | None:
        """What a run of `epochs` epochs and `steps` optimiser steps cannot deliver for these values (`depth`:
        the image tower's blocks; `text_depth`: a CLIP text tower's)."""
        if self.schedule is None:
            return None
        resolved = self.resolve({k: v for k, v in values.items() if k not in BASE_OPTIONS})
        return self.schedule({**resolved, "depth": depth, "text_depth": text_depth}, epochs, steps)

    def resolve(self, values: dict) -> dict:
        """Options with defaults filled in and values cast to their declared type (lr and wd excluded)."""
        unknown = set(values) - set(self.all_options)
        if unknown:
            raise TypeError(
                f"strategy {self.name!r} has no hyper-parameters {sorted(unknown)}; "
                f"it takes {sorted(self.options)}"
            )
        return {
            key: option.cast(values[key]) if key in values else option.default
            for key, option in self.options.items()
        }

    def batch_size(self, point: dict, entry: dict, default: int) -> int:
        """The VPT paper's rule: the strategy's batch, the smaller long-prompt batch from LONG_PROMPT tokens."""
        long_batch = entry.get("batch_size_long_prompts")
        fixed = self.options.get("prompt_length")  # a variant may fix it; a grid point gives it otherwise
        length = point.get("prompt_length", fixed.default if fixed is not None else 0)
        if long_batch and int(length) >= LONG_PROMPT:
            return long_batch
        return entry.get("batch_size") or default

    def table8_batches(self, batches) -> dict:
        """Its batch sizes from a backbone's Table 8 row (vptft.backbones.Table8Batches), as config entry keys;
        empty where the row or the strategy's column does not exist (the config's own then hold)."""
        if batches is None or self.table8 is None:
            return {}
        if self.table8 == "prompt":
            return {"batch_size": batches.prompt, "batch_size_long_prompts": batches.long_prompt}
        return {"batch_size": getattr(batches, self.table8)}

    def uses_text_head(self, values: dict) -> bool:
        """Whether these option values read the image feature with CLIP's image-text head."""
        return (
            self.text_head
            or self.resolve({k: v for k, v in values.items() if k not in BASE_OPTIONS}).get("head") == "text"
        )

    def uses_class_prototypes(self, values: dict) -> bool:
        """Whether these option values start the prompts from class prototypes (the builder needs them)."""
        return self.resolve({k: v for k, v in values.items() if k not in BASE_OPTIONS}).get("init") == (
            "class_prototype"
        )

    def run_values(self, values: dict, num_classes: int) -> dict:
        """The option values a run on a task of `num_classes` classes trains with: class-prototype prompts are one
        per class (their prompt length, hence their batch by the long-prompt rule)."""
        if self.uses_class_prototypes(values):
            return {**values, "prompt_length": num_classes}
        return values

    def build(
        self,
        backbone,
        num_classes: int,
        head_init: str = "vpt",
        class_texts: tuple | None = None,
        class_prototypes=None,
        **values,
    ):
        """The tuned model: `backbone` wrapped with a new `head_init` head (or CLIP's image-text head over
        `class_texts` = (class names, template)) and the strategy's parameters; `class_prototypes` (C, D): the
        start of class-prototype prompts."""
        options = self.resolve({k: v for k, v in values.items() if k not in BASE_OPTIONS})
        if options.get("init") == "class_prototype":
            options["class_prototypes"] = class_prototypes
        if self.text_head or options.pop("head", "linear") == "text":
            if class_texts is None:
                raise ValueError(f"strategy {self.name!r}: CLIP's image-text head needs the class names")
            from vptft.strategies.text_head import text_head  # open_clip: imported only where CLIP runs

            options["head"] = text_head(backbone, *class_texts, options.pop("n_ctx", 0))
        elif getattr(backbone, "clip_text", None) is not None:
            backbone.clip_text = None  # a new linear head: CLIP's text tower is no part of the model
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)(
            backbone, num_classes, head_init=head_init, **options
        )


def _k(name: str, default: int, help: str) -> dict:
    return {name: Option(int, default, minimum=1, help=help)}


STRATEGIES = {
    s.name: s
    for s in [
        StrategySpec(
            "full",
            "adamw",
            "vptft.strategies.backbone_tuning:build_full",
            trains_backbone=True,
            stores_backbone=True,
            table8="full",
            description="every backbone weight + head",
            label="FT",
            color="#1f77b4",
        ),
        StrategySpec(
            "linear",
            "sgd",
            "vptft.strategies.head_only:build_linear",
            cache_features=True,
            table8="linear",
            description="a new head on frozen features",
            label="Linear",
            color="#7f7f7f",
        ),
        StrategySpec(
            "vpt_shallow",
            "sgd",
            "vptft.strategies.prompts:build_prompted",
            {
                **PROMPT_OPTIONS,
                **VPT_ABLATION_OPTIONS,
                "layers": Option(
                    str, "0:1", pattern=PROMPT_OPTIONS["layers"].pattern, help=PROMPT_OPTIONS["layers"].help
                ),
            },
            table8="prompt",
            description="p prompts at the first layer + head",
            combination_problems=_prompt_problems,
            label="VPT-shallow",
            color="#ffbb78",
            prompt=True,
        ),
        StrategySpec(
            "vpt_deep",
            "sgd",
            "vptft.strategies.prompts:build_prompted",
            {**PROMPT_OPTIONS, **VPT_ABLATION_OPTIONS, **HEAD_OPTION},
            table8="prompt",
            description="p fresh prompts at every layer + head",
            combination_problems=_prompt_problems,
            label="VPT",
            color="#ff7f0e",
            prompt=True,
        ),
        StrategySpec(
            "mixed",
            "sgd",
            "vptft.strategies.prompts:build_mixed",
            PROMPT_OPTIONS,
            trains_backbone=True,
            stores_backbone=True,
            combination_problems=_prompt_problems,
            table8="prompt",
            description="deep prompts + the whole backbone + head, with the prompt-tuning optimiser",
            label="Mixed",
            color="#2ca02c",
            prompt=True,
        ),
        StrategySpec(
            "ft_then_pt",
            "sgd",
            "vptft.strategies.prompts:build_prompted",
            PROMPT_OPTIONS,
            continues="full",
            stores_backbone=True,
            combination_problems=_prompt_problems,
            table8="prompt",
            description="deep prompts + head on the backbone of a finished full finetuning run",
            label="FT-then-PT",
            color="#d62728",
            prompt=True,
        ),
        StrategySpec(
            "partial",
            "adamw",
            "vptft.strategies.backbone_tuning:build_partial",
            _k("k", 1, "the last k blocks (+ final norm) train"),
            trains_backbone=True,
            combination_problems=_depth_problems("k"),
            table8="partial",
            description="the last k blocks + final norm + head",
            label="Partial",
            color="#aec7e8",
        ),
        StrategySpec(
            "mlp",
            "sgd",
            "vptft.strategies.head_only:build_mlp",
            _k("k", 2, "linear layers of the head (k - 1 hidden layers of the feature width)"),
            cache_features=True,
            description="a k-layer MLP head on frozen features",
            label="Mlp",
            color="#c7c7c7",
        ),
        StrategySpec(
            "bias",
            "adamw",
            "vptft.strategies.backbone_tuning:build_bias",
            trains_backbone=True,
            table8="full",
            description="every bias of the backbone + head (BitFit / TinyTL)",
            label="Bias",
            color="#e377c2",
        ),
        StrategySpec(
            "adapter",
            "adamw",
            "vptft.strategies.backbone_tuning:build_adapter",
            {
                **_k("reduction", 8, "r: bottleneck width = feature width / r"),
                "init": Option(
                    str,
                    "zero_both",
                    choices=("zero_both", "zero_up"),
                    help="zero_both: the VPT code's (only the up-projection's bias learns); zero_up: the "
                    "bottleneck adapter as intended (docs/protocol.md)",
                ),
            },
            trains_backbone=True,
            table8="full",
            description="bottleneck adapters after each FFN + head",
            label="Adapter",
            color="#bcbd22",
        ),
        StrategySpec(
            "sidetune",
            "sgd",
            "vptft.strategies.sidetune:build_sidetune",
            _k("side_width", 64, "channels of the side network's last conv layer"),
            description="a side network blended with the frozen features + head",
            label="Sidetune",
            color="#17becf",
        ),
        StrategySpec(
            "lora",
            "adamw",
            "vptft.strategies.backbone_tuning:build_lora",
            {
                **_k("rank", 8, "r of the low-rank updates"),
                "alpha": Option(float, 8.0, minimum=0.0, help="LoRA scaling alpha"),
            },
            trains_backbone=True,
            description="peft LoRA on the attention qkv projections + head",
            label="LoRA",
            color="#9467bd",
        ),
        StrategySpec(
            "zero_shot",
            "sgd",
            "vptft.strategies.text_head:build_with_head",
            text_head=True,
            description="CLIP's image-text matching with the class names (nothing trains; CLIP backbones)",
            label="ZS-CLIP",
            color="#393b79",
        ),
        StrategySpec(
            "coop",
            "sgd",
            "vptft.strategies.text_head:build_with_head",
            COOP_OPTIONS,
            text_head=True,
            description="learned text context before the class names, CLIP frozen (CLIP backbones)",
            label="CoOp",
            color="#637939",
        ),
        StrategySpec(
            "vpt_prefix",
            "sgd",
            "vptft.strategies.kv_prompts:build_prefix",
            KV_PROMPT_OPTIONS,
            table8="prompt",
            description="prompts prepended to every layer's keys and values only + head",
            combination_problems=_head_problems,
            label="VPT-prefix",
            color="#ff9896",
            prompt=True,
        ),
        StrategySpec(
            "adapt",
            "sgd",
            "vptft.strategies.kv_prompts:build_adapt",
            ADAPT_OPTIONS,
            table8="prompt",
            description="key/value prompts pruned by saliency to a total budget + head",
            combination_problems=_adapt_problems,
            schedule=_adapt_schedule,
            label="Adapt",
            color="#98df8a",
            prompt=True,
        ),
    ]
}

# The study's own four strategies: its tables show them first, in this order.
STUDY_STRATEGIES = ("full", "vpt_deep", "mixed", "ft_then_pt")


# A variant names a strategy with some options fixed: `vpt_deep[location=add]`, `adapt[saliency=l2,target_length=16]`.
# It is configured, trained, selected and collected like any strategy, under its own name.
VARIANT = re.compile(r"([a-z0-9_]+)\[([^\]]*)\]")
VARIANT_ITEM = re.compile(r"([a-z0-9_]+)=([A-Za-z0-9_.:+-]+)")
NAME_PATTERN = r"[a-z0-9_]+(\[[a-z0-9_]+=[A-Za-z0-9_.:+-]+(,[a-z0-9_]+=[A-Za-z0-9_.:+-]+)*\])?"


def _typed(option: Option, text: str):
    """A variant value as its option's type (int, float or str)."""
    if option.type is str:
        return text
    try:
        return option.type(text)
    except ValueError:
        raise ValueError(f"{text!r} is not of type {option.type.__name__}") from None


def variant_problems(name: str, searched: frozenset | None = None) -> list[str]:
    """What is wrong with a strategy name: an unknown strategy, or a variant whose base, keys or values are
    not valid. Given `searched` (the keys the base's configured grid searches), also a variant that changes
    nothing: a value the base would use anyway (its default, on a key the base does not search; `mlp[k=2]`
    beside an `mlp` that searches k is a choice, beside one that does not, the same strategy twice)."""
    match = VARIANT.fullmatch(name)
    if match is None:
        if name in STRATEGIES:
            return []
        return [
            f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)} (or a variant such as vpt_deep[location=add])"
        ]
    base, body = match.groups()
    if base not in STRATEGIES:
        return [f"variant {name!r}: unknown strategy {base!r}; known: {', '.join(STRATEGIES)}"]
    spec, problems, seen = STRATEGIES[base], [], set()
    items = body.split(",")
    for item in items:
        parsed = VARIANT_ITEM.fullmatch(item)
        if parsed is None:
            problems.append(f"variant {name!r}: {item!r} is not option=value")
            continue
        key, text = parsed.groups()
        option = spec.options.get(key)
        if option is None:
            allowed = ", ".join(sorted(spec.options)) or "none"
            problems.append(f"variant {name!r}: {base!r} has no option {key!r} to fix (allowed: {allowed})")
            continue
        if key in seen:
            problems.append(f"variant {name!r}: {key!r} is given twice")
        seen.add(key)
        try:
            value = _typed(option, text)
        except ValueError as err:
            problems.append(f"variant {name!r}: {key} {err}")
            continue
        if (problem := option.problem(value)) is not None:
            problems.append(f"variant {name!r}: {key} {problem}")
        elif searched is not None and value == option.default and key not in searched:
            problems.append(f"variant {name!r}: {key}={text} is the default of {base!r} (it changes nothing)")
    return problems


def _items(body: str) -> list[tuple[str, str]]:
    return [tuple(item.split("=", 1)) for item in body.split(",")]


def _variant(name: str) -> StrategySpec:
    """The registry strategy with a variant's values as fixed defaults (checked by variant_problems)."""
    if problems := variant_problems(name):
        raise KeyError("; ".join(problems))
    base, body = VARIANT.fullmatch(name).groups()
    spec = STRATEGIES[base]
    fixed = tuple((key, _typed(spec.options[key], text)) for key, text in _items(body))
    options = {**spec.options, **{key: replace(spec.options[key], default=value) for key, value in fixed}}
    label = f"{spec.label} [{body}]"  # VPT [location=add]
    return replace(spec, name=name, options=options, base=base, variant=fixed, label=label, color=spec.color)


def get_strategy(name: str) -> StrategySpec:
    """A registry strategy, or a variant of one (`base[option=value,...]`)."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    if VARIANT.fullmatch(name):
        return _variant(name)
    raise KeyError(f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}")
