"""The model contract, checked for every strategy in the registry on the mini ViT (D = 96, 4 blocks, 16 patches).

For each: exactly the declared parameters get gradients, every frozen tensor is bit-identical after optimiser
steps, tuned / total parameters equal the closed form, a short run lowers the training loss, and the tuned state
saves and reloads alone (small, not the backbone, except where the strategy tunes it) and reproduces the logits.
"""

import copy
import itertools
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from vptft import engine
from vptft.config import load_schema
from vptft.data import SplitData
from vptft.strategies import LONG_PROMPT, STRATEGIES, get_strategy
from vptft.strategies.base import HEAD_INITS, parameter_counts, tuned_parameters, tuned_state_dict

# the strategies a ViT runs (CLIP's image-text-head ones, zero-shot and CoOp: tests/test_clip.py)
IMAGE_HEAD_STRATEGIES = [name for name, spec in STRATEGIES.items() if not spec.text_head]

D, L, N, C, HIDDEN = 96, 4, 16, 5, 384
BLOCK = 12 * D * D + 13 * D  # qkv, proj, fc1, fc2 (weights + biases) and two LayerNorms
HEAD = D * C + C

# Small options per strategy (defaults elsewhere), and the closed form of its tuned parameters given the
# backbone's own count B.
OPTIONS = {
    "vpt_shallow": {"prompt_length": 3},
    "vpt_deep": {"prompt_length": 3},
    "mixed": {"prompt_length": 3},
    "ft_then_pt": {"prompt_length": 3},
    "partial": {"k": 2},
    "mlp": {"k": 3},
    "adapter": {"reduction": 8},
    "sidetune": {"side_width": 16},
    "lora": {"rank": 4, "alpha": 8.0},
    "vpt_prefix": {"prompt_length": 3},
    "adapt": {"context_length": 4, "target_length": 6, "warmup_epochs": 0, "prune_every": 2},
}


def side_params(width):
    widths = [3] + [width // 8, width // 4, width // 2, width]
    convs = sum(a * b * 9 + b for a, b in itertools.pairwise(widths))
    return convs + width * D + D + 1  # + projection to D, + the blend weight


TUNED = {
    "full": lambda b: b + HEAD,
    "linear": lambda b: HEAD,
    "vpt_shallow": lambda b: 3 * D + HEAD,
    "vpt_deep": lambda b: 3 * D * L + HEAD,
    "mixed": lambda b: b + 3 * D * L + HEAD,
    "ft_then_pt": lambda b: 3 * D * L + HEAD,
    "partial": lambda b: 2 * BLOCK + 2 * D + HEAD,
    "mlp": lambda b: 2 * (D * D + D + 2 * D) + HEAD,  # hidden Linear + BatchNorm's weight and bias
    "bias": lambda b: (
        D + 11 * D * L + D + HEAD
    ),  # patch embedding, per block (2 norms, qkv, proj, fc1, fc2), norm
    "adapter": lambda b: L * (2 * D * (D // 8) + D // 8 + D) + HEAD,
    "sidetune": lambda b: side_params(16) + HEAD,
    "lora": lambda b: L * (4 * D + 3 * D * 4) + HEAD,
    "vpt_prefix": lambda b: 3 * D * L + HEAD,
    "adapt": lambda b: 4 * D * L + HEAD,
}

# What trains, by name (written independently of the strategies' own bookkeeping).
HEAD_ONLY = lambda n: n.startswith("head.")
TRAINS = {
    "full": lambda n: True,
    "linear": HEAD_ONLY,
    "mlp": HEAD_ONLY,
    "partial": lambda n: n.startswith(
        ("head.", "backbone.blocks.2.", "backbone.blocks.3.", "backbone.norm.")
    ),
    "bias": lambda n: n.startswith("head.") or n.endswith("bias") and n.startswith("backbone."),
    "adapter": lambda n: n.startswith("head.") or ".mlp.down." in n or ".mlp.up." in n,
    "lora": lambda n: n.startswith("head.") or "lora_" in n,
    "sidetune": lambda n: n.startswith(("head.", "side.")) or n == "alpha",
    "mixed": lambda n: True,
}
PROMPTS_AND_HEAD = lambda n: n == "prompts" or n.startswith("head.")


def trains(name, param_name):
    return TRAINS.get(name, PROMPTS_AND_HEAD)(param_name)


def build(name, backbone, seed=1, head_init="vpt"):
    torch.manual_seed(seed)
    return get_strategy(name).build(copy.deepcopy(backbone), C, head_init=head_init, **OPTIONS.get(name, {}))


def toy_data(n=64, seed=0):
    """Images whose class is their colour: learnable in a few steps by every strategy."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % C
    colours = torch.linspace(20, 235, C)[labels].view(n, 1, 1, 1)
    images = (colours + torch.randn(n, 3, 32, 32, generator=g) * 20).clamp(0, 255).to(torch.uint8)
    return SplitData(images, labels)


INPUTS = {"size": (32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}


@pytest.mark.parametrize("name", IMAGE_HEAD_STRATEGIES)
def test_exactly_the_declared_parameters_train_and_frozen_tensors_stay_bit_identical(mini_vit, name):
    model = build(name, mini_vit)
    declared = set(tuned_parameters(model))
    assert declared == {n for n, _ in model.named_parameters() if trains(name, n)}
    groups = model.param_groups()
    assert set().union(*map(set, groups.values())) == declared and len(groups["head"]) >= 2
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k not in tuned_state_dict(model)}
    optimizer = torch.optim.SGD(list(tuned_parameters(model).values()), lr=0.1, momentum=0.9)
    data = toy_data(8)
    x = (data.images.float() / 127.5) - 1
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), data.labels).backward()
        got_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert got_grad <= declared
        assert {n for n, p in model.named_parameters() if p.grad is not None} == declared
        optimizer.step()
    for key, value in model.state_dict().items():
        if key in frozen:
            assert torch.equal(value, frozen[key]), key


@pytest.mark.parametrize("name", IMAGE_HEAD_STRATEGIES)
def test_tuned_over_total_is_the_closed_form(mini_vit, name):
    backbone = sum(p.numel() for p in mini_vit.parameters())
    counts = parameter_counts(build(name, mini_vit))
    assert counts["tuned"] == TUNED[name](backbone)
    if name in ("full", "partial", "bias"):  # the backbone's own weights train: nothing added but the head
        assert counts["total"] == backbone + HEAD
    elif name == "mixed":
        assert counts["total"] == counts["tuned"]
    else:  # every tuned parameter is added to the unchanged backbone
        assert counts["total"] == backbone + counts["tuned"]
    assert counts["tuned_pct"] == pytest.approx(100 * counts["tuned"] / counts["total"])


@pytest.mark.parametrize("name", IMAGE_HEAD_STRATEGIES)
def test_a_short_run_lowers_the_training_loss(mini_vit, name):
    spec = get_strategy(name)
    model = build(name, mini_vit, head_init="zero")
    lr = {"adamw": 0.01}.get(spec.optimizer, 0.8)
    cfg = engine.FitConfig(
        spec.optimizer,
        lr=lr,
        weight_decay=1e-4,
        epochs=6,
        warmup_epochs=1,
        batch_size=16,
        seed=0,
        optimizer_behavior="vpt_code",
    )
    curves = engine.fit(
        model, toy_data(), {}, cfg, INPUTS, torch.device("cpu"), cache_features=spec.cache_features
    )["curves"]
    assert curves[-1]["train_loss"] < 0.9 * curves[0]["train_loss"], [
        round(c["train_loss"], 3) for c in curves
    ]


@pytest.mark.parametrize("name", IMAGE_HEAD_STRATEGIES)
def test_tuned_state_saves_and_reloads_alone_and_reproduces_the_logits(mini_vit, name, tmp_path):
    model = build(name, mini_vit).eval()
    with torch.no_grad():  # move every tuned tensor off its init, so a reload that drops one is seen
        for p in tuned_parameters(model).values():
            p.add_(torch.randn_like(p) * 0.02)
    if name == "adapt":
        model.keep[0, :2] = False
    path = tmp_path / "tuned.safetensors"
    save_file({k: v.contiguous() for k, v in tuned_state_dict(model).items()}, str(path))
    assert set(load_file(str(path))) == set(tuned_parameters(model)) | {
        k for k, _ in model.named_buffers() if not k.startswith("backbone.")
    }
    tuned_bytes = 4 * parameter_counts(model)["tuned"]
    assert tuned_bytes <= path.stat().st_size < tuned_bytes + 16_384  # the tuned tensors, nothing more
    if name not in ("full", "mixed", "partial"):  # KB, not the backbone
        assert path.stat().st_size < 0.1 * sum(p.numel() * 4 for p in mini_vit.parameters())
    fresh = build(name, mini_vit, seed=99).eval()
    missing, unexpected = fresh.load_state_dict(load_file(str(path)), strict=False)
    assert not unexpected and all(not k.startswith("head.") for k in missing)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
        assert not torch.equal(build(name, mini_vit, seed=99).eval()(x), model(x))


def test_unknown_strategy_option_and_bad_types_are_refused(mini_vit):
    with pytest.raises(KeyError, match="unknown strategy 'lorax'"):
        get_strategy("lorax")
    with pytest.raises(TypeError, match="no hyper-parameters"):
        get_strategy("full").build(mini_vit, 3, prompt_length=5)
    errors = get_strategy("vpt_deep").problems(
        "$.strategies.vpt_deep",
        {"lr": [0.1, "x"], "prompt_length": [1.5]},
        {"prompt_dropout": "abc", "pooling": "max"},
    )
    assert errors == [
        "$.strategies.vpt_deep.grid.lr[1]: 'x' is not of type float",
        "$.strategies.vpt_deep.grid.prompt_length[0]: 1.5 is not of type int",
        "$.strategies.vpt_deep.options.prompt_dropout: 'abc' is not of type float",
        (
            "$.strategies.vpt_deep.options.pooling: 'max' is not one of ['backbone', 'cls', 'image_pool', "
            "'prompt_pool', 'global_pool']"
        ),
    ]


def test_batch_size_rule_of_the_vpt_paper():
    vpt, full = get_strategy("vpt_deep"), get_strategy("full")
    entry = {"batch_size": 128, "batch_size_long_prompts": 64}
    assert vpt.batch_size({"prompt_length": LONG_PROMPT - 1}, entry, 32) == 128
    assert vpt.batch_size({"prompt_length": LONG_PROMPT}, entry, 32) == 64
    assert full.batch_size({}, {}, 32) == 32


@pytest.mark.parametrize("init", HEAD_INITS)
def test_head_init_options(mini_vit, init):
    head = get_strategy("linear").build(mini_vit, 5, head_init=init).head
    if init == "vpt":
        assert head.bias.eq(-math.log(99)).all() and head.weight.std() > 0.1  # kaiming fan_out: std sqrt(2/5)
    else:
        assert not head.weight.any() and not head.bias.any()
    with pytest.raises(ValueError, match="unknown head init"):
        get_strategy("linear").build(mini_vit, 5, head_init="xavier")


def test_schema_lists_every_head_init():
    assert tuple(load_schema()["properties"]["train"]["properties"]["head_init"]["enum"]) == HEAD_INITS


def test_combinations_that_cannot_be_built_are_refused_before_any_job(mini_vit):
    path = "$.strategies.x"
    assert get_strategy("vpt_deep").problems(
        path, {"lr": [0.1], "wd": [0.0], "layers": ["1:3", "3:1", "2:9"]}, {}, depth=4
    ) == [
        "$.strategies.x: layers '3:1' is not a non-empty block range of a 4-block backbone (grid point layers='3:1')",
        "$.strategies.x: layers '2:9' is not a non-empty block range of a 4-block backbone (grid point layers='2:9')",
    ]
    assert get_strategy("mixed").problems(
        path, {"lr": [0.1], "wd": [0.0]}, {"location": "add", "pooling": "prompt_pool"}, depth=4
    ) == ["$.strategies.x: pooling 'prompt_pool' needs prepended prompts, not location 'add'"]
    assert get_strategy("partial").problems(path, {"lr": [0.1], "wd": [0.0], "k": [1, 9]}, {}, depth=4) == [
        "$.strategies.x: k 9 exceeds the backbone's 4 blocks (grid point k=9)"
    ]
    assert get_strategy("adapt").problems(
        path, {"lr": [0.1], "wd": [0.0]}, {"target_length": 65}, depth=4
    ) == ["$.strategies.x: target_length 65 exceeds the 64 tokens of 4 blocks x context_length 16"]
    assert get_strategy("full").problems(path, {"lr": [float("nan"), 0.0], "wd": [0.0]}, {}) == [
        "$.strategies.x.grid.lr[0]: NaN is not a valid value",
        "$.strategies.x.grid.lr[1]: 0.0 must be greater than 0",
    ]


def test_adapt_refuses_a_schedule_too_short_to_reach_its_budget():
    adapt = get_strategy("adapt")
    values = {
        "context_length": 16,
        "target_length": 32,
        "prune_every": 80,
        "prune_tokens": 4,
        "warmup_epochs": 10,
    }
    # ViT-B/16 on VTAB-1k: 12 x 16 tokens -> 32 takes 40 pruning steps x 80 = 3,200 minibatches; 100 epochs of 8
    problem = adapt.schedule_problem(values, epochs=100, steps=800, depth=12)
    assert "3200 minibatches after warm-up, but the run has about 720" in problem
    assert adapt.schedule_problem({**values, "prune_every": 16}, epochs=100, steps=800, depth=12) is None
    assert get_strategy("vpt_deep").schedule_problem({"prompt_length": 5}, 1, 1, 12) is None


def test_batch_rule_reads_a_prompt_length_fixed_in_options():
    vpt = get_strategy("vpt_deep")
    entry = {"batch_size": 128, "batch_size_long_prompts": 64, "options": {"prompt_length": 200}}
    assert vpt.batch_size({**entry["options"], "lr": 0.1}, entry, 32) == 64
