"""Strategy variants: one strategy with some options fixed by its name (`vpt_deep[location=add]`), configured,
validated, trained and collected like any strategy under that name."""

import copy
import re

import pytest
import torch
import yaml

from conftest import ROOT
from vptft.config import ConfigError, validate_config
from vptft.figures import label
from vptft.strategies import NAME_PATTERN, STRATEGIES, get_strategy, variant_problems


def default_config():
    with open(f"{ROOT}/config/config.yaml") as f:
        return yaml.safe_load(f)


def test_a_variant_is_its_base_with_the_named_options_fixed(mini_vit):
    spec = get_strategy("vpt_deep[location=add,prompt_length=3]")
    assert spec.name == "vpt_deep[location=add,prompt_length=3]" and spec.base == "vpt_deep"
    assert spec.variant == (("location", "add"), ("prompt_length", 3))
    assert spec.resolve({}) == {**STRATEGIES["vpt_deep"].resolve({}), "location": "add", "prompt_length": 3}
    assert spec.optimizer == "sgd" and spec.builder == STRATEGIES["vpt_deep"].builder
    model = spec.build(mini_vit, 5, head_init="zero")
    assert model.location == "add" and model.prompts.shape == (
        4,
        1 + 16,
        96,
    )  # a prompt per token, every block
    assert STRATEGIES["vpt_deep"].options["location"].default == "prepend"  # the registry is untouched
    assert get_strategy("vpt_deep").base == "vpt_deep" and get_strategy("vpt_deep").variant == ()


def test_variant_values_take_their_options_types():
    spec = get_strategy("adapt[saliency=l2,target_length=16,prompt_dropout=0.1]")
    assert dict(spec.variant) == {"saliency": "l2", "target_length": 16, "prompt_dropout": 0.1}
    assert get_strategy("vpt_deep[layers=0:2]").resolve({})["layers"] == "0:2"


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "vpt_deep[foo=1]",
            "'vpt_deep' has no option 'foo' to fix (allowed: head, init, layers, learn, location, pooling",
        ),
        ("vpt_deep[lr=0.1]", "'vpt_deep' has no option 'lr' to fix"),  # lr / wd belong to the grid
        ("vpt_deep[prompt_length=x]", "prompt_length 'x' is not of type int"),
        ("vpt_deep[prompt_length=0]", "prompt_length 0 is below the minimum 1"),
        (
            "vpt_deep[location=middle]",
            "location 'middle' is not one of ['prepend', 'add', 'prepend_pixel', 'concat_channel']",
        ),
        ("vpt_deep[location]", "'location' is not option=value"),
        ("vpt_deep[location=add,location=add]", "'location' is given twice"),
        ("nope[a=b]", "unknown strategy 'nope'"),
        ("vpt_deep_x", "unknown strategy 'vpt_deep_x'; known: full, linear"),
    ],
)
def test_a_malformed_variant_is_refused_by_name(name, message):
    problems = variant_problems(name)
    assert any(message in p for p in problems), problems
    with pytest.raises(KeyError):
        get_strategy(name)


def test_a_variant_of_default_values_changes_nothing_unless_the_base_searches_that_key():
    message = "location=prepend is the default of 'vpt_deep' (it changes nothing)"
    assert variant_problems("vpt_deep[location=prepend]", frozenset({"lr", "wd"})) == [
        f"variant 'vpt_deep[location=prepend]': {message}"
    ]
    assert variant_problems("vpt_deep[location=prepend]", frozenset({"lr", "location"})) == []
    assert variant_problems("vpt_deep[location=prepend]") == []  # by name alone: a valid strategy


def test_the_wildcard_pattern_matches_every_valid_variant_and_only_names():
    valid = ["full", "vpt_deep[location=add]", "vpt_deep[layers=0:6]", "adapt[saliency=l2,target_length=16]"]
    valid.append("vpt_deep[prompt_dropout=0.1]")
    for name in valid:
        assert not variant_problems(name) and re.fullmatch(NAME_PATTERN, name), name
    for name in ["vpt_deep[]", "vpt_deep[location=add]x", "../full", "vpt_deep[location=a/b]"]:
        assert not re.fullmatch(NAME_PATTERN, name), name


def test_config_validation_names_the_variants_key():
    config = default_config()
    config["strategies"]["vpt_deep[location=add]"] = {
        "grid": {"lr": [0.2], "wd": [0.0001], "prompt_length": [1]}
    }
    validate_config(copy.deepcopy(config))  # valid
    bad = copy.deepcopy(config)
    bad["strategies"]["vpt_deep[location=add]"]["grid"]["location"] = ["prepend", "add"]
    with pytest.raises(
        ConfigError, match=re.escape("$.strategies.vpt_deep[location=add].grid.location: fixed by")
    ):
        validate_config(bad)
    bad = copy.deepcopy(config)
    bad["strategies"]["vpt_deep[location=prepend]"] = {"grid": {"lr": [0.2], "wd": [0.0001]}}
    with pytest.raises(ConfigError, match=re.escape("$.strategies.vpt_deep[location=prepend]: variant")):
        validate_config(bad)
    searched = copy.deepcopy(config)  # Table 13's Mlp-2 row beside an Mlp that searches its depth
    searched["strategies"]["mlp"] = {"grid": {"lr": [0.2], "wd": [0.0001], "k": [2, 3]}}
    searched["strategies"]["mlp[k=2]"] = {"grid": {"lr": [0.2], "wd": [0.0001]}}
    validate_config(searched)
    del searched["strategies"]["mlp"]["grid"]["k"]
    with pytest.raises(
        ConfigError, match=re.escape("$.strategies.mlp[k=2]: variant 'mlp[k=2]': k=2 is the default")
    ):
        validate_config(searched)
    bad = copy.deepcopy(config)
    two = "vpt_deep[location=add,prompt_length=3]"
    bad["strategies"][two] = {"grid": {"lr": [0.2], "wd": [0.0001]}}
    bad["strategies"]["vpt_deep[prompt_length=3,location=add]"] = {"grid": {"lr": [0.2], "wd": [0.0001]}}
    with pytest.raises(ConfigError, match=re.escape(f"the same variant as {two!r}")):
        validate_config(bad)


def test_a_variant_fixing_a_long_prompt_takes_the_long_prompt_batch():
    spec = get_strategy("vpt_deep[prompt_length=200]")
    entry = {"batch_size": 128, "batch_size_long_prompts": 64}
    assert spec.batch_size({"lr": 0.1}, entry, 32) == 64
    assert get_strategy("vpt_deep").batch_size({"lr": 0.1}, entry, 32) == 128


def test_a_variant_keeps_its_bases_figure_label():
    assert label("vpt_deep[location=add]") == "VPT [location=add]" and label("vpt_deep") == "VPT"


def test_a_variant_is_built_like_its_base_and_differs_by_its_options(mini_vit):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    base = get_strategy("vpt_deep").build(copy.deepcopy(mini_vit), 5, head_init="vpt", prompt_length=1)
    torch.manual_seed(1)
    pooled = get_strategy("vpt_deep[pooling=global_pool]")
    same = pooled.build(copy.deepcopy(mini_vit), 5, head_init="vpt", prompt_length=1)
    with torch.no_grad():
        assert not torch.allclose(base(x), same(x))  # the same weights, another pooled feature
        same.pooling = "backbone"
        torch.testing.assert_close(base(x), same(x))


def _runs(rows):
    import pandas as pd

    return pd.DataFrame(
        [{"task": t, "strategy": s, "seed": seed, "test_top1": top1} for t, s, seed, top1 in rows]
    )


def test_an_ablation_figure_shows_seed_means_per_task_and_over_tasks(tmp_path):
    from vptft.figures import ablation

    runs = _runs(
        [
            ("a", "vpt_deep", 0, 50.0),
            ("a", "vpt_deep", 1, 52.0),
            ("a", "vpt_deep[location=add]", 0, 40.0),
            ("a", "vpt_deep[location=add]", 1, 44.0),
            ("b", "vpt_deep", 0, 70.0),
            ("b", "vpt_deep", 1, 70.0),
            ("b", "vpt_deep[location=add]", 0, 60.0),
            ("b", "vpt_deep[location=add]", 1, 62.0),
            ("b", "full", 0, 99.0),  # not in the figure
        ]
    )
    means = ablation(runs, ["vpt_deep", "vpt_deep[location=add]"], ["b", "a"], "t", tmp_path / "f.png")
    assert list(zip(means.task, means.strategy)) == [
        ("b", "vpt_deep"),
        ("b", "vpt_deep[location=add]"),
        ("a", "vpt_deep"),
        ("a", "vpt_deep[location=add]"),
        ("mean", "vpt_deep"),
        ("mean", "vpt_deep[location=add]"),
    ]
    assert list(means.top1) == [70.0, 61.0, 51.0, 42.0, 60.5, 51.5]
    assert means["std"].iloc[2] == pytest.approx(2**0.5) and (means.seeds == 2).all()
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_an_ablation_without_a_settings_runs_is_refused(tmp_path):
    from vptft.figures import ablation

    runs = _runs([("a", "vpt_deep", 0, 50.0)])
    with pytest.raises(ValueError, match=r"no runs of \[\('a', 'vpt_deep\[location=add\]'\)\]"):
        ablation(runs, ["vpt_deep", "vpt_deep[location=add]"], ["a"], "t", tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()


def test_an_ablation_figure_is_validated_like_a_table():
    config = default_config()
    config["strategies"]["vpt_deep[location=add]"] = {"grid": {"lr": [0.2], "wd": [0.0001]}}
    figure = {"groups": ["natural"], "strategies": ["vpt_deep", "vpt_deep[location=add]"], "title": "t"}
    validate_config({**copy.deepcopy(config), "figures": {"vpt_figure5": figure}})
    with pytest.raises(
        ConfigError, match=re.escape("$.figures.vpt_figure5.strategies[1]: 'vpt_deep[pooling=cls]'")
    ):
        bad = {**figure, "strategies": ["vpt_deep", "vpt_deep[pooling=cls]"]}
        validate_config({**copy.deepcopy(config), "figures": {"vpt_figure5": bad}})
    with pytest.raises(
        ConfigError, match=re.escape("$.figures.vpt_figure4: 'vpt_figure4' is a figure the workflow")
    ):
        validate_config({**copy.deepcopy(config), "figures": {"vpt_figure4": figure}})
    with pytest.raises(ConfigError, match=r"figures"):
        validate_config(
            {**copy.deepcopy(config), "figures": {"figure5": figure}}
        )  # Han's figures are built in


def trained_by_dry_run(workdir, target, configs) -> set:
    """(task, strategy) of every final-run job a dry run of `target` lists."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "snakemake", "-s", f"{ROOT}/Snakefile", "-n", "-c1", "-d", str(workdir)]
    proc = subprocess.run([*cmd, target, "--configfile", *configs], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    finals, rule = set(), None
    for line in proc.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("wildcards:") and rule and rule.startswith("train"):
            w = dict(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(", "))
            finals.add((w["task"], w["strategy"]))
    return finals


def test_the_mini_ablations_overlay_trains_exactly_each_outputs_settings(tmp_path):
    """config/mini-ablations.yaml on the default: valid, and `results/vpt_figure7.png` (depth) asks for the final
    runs of its four settings on its four tasks and for no other strategy's; Adapt's Table 2 for its three."""
    from overlays import merged

    configs = [f"{ROOT}/config/config.yaml", f"{ROOT}/config/mini-ablations.yaml"]
    validate_config(merged(*configs))
    tasks = {"newshapes_src", "newshapes_sketch", "count_src", "count_sketch"}
    settings = {"vpt_deep[layers=0:1]", "vpt_deep[layers=0:2]", "vpt_deep[layers=2:4]", "vpt_deep"}
    assert trained_by_dry_run(tmp_path, "results/vpt_figure7.png", configs) == {
        (t, s) for t in tasks for s in settings
    }
    settings = {"adapt[target_length=4]", "adapt", "adapt[target_length=12]"}
    assert trained_by_dry_run(tmp_path, "results/adapt_table2.csv", configs) == {
        (t, s) for t in tasks for s in settings
    }
    inits = {"vpt_deep", "vpt_deep[init=class_prototype]"}  # Figure 13
    assert trained_by_dry_run(tmp_path, "results/vpt_figure13.png", configs) == {
        (t, s) for t in tasks for s in inits
    }


def test_the_paper_ablations_overlay_trains_exactly_each_outputs_settings_on_the_19_tasks(tmp_path):
    """config/paper-ablations.yaml on the paper config: Figure 6 = a final run per prompt length, Adapt's Table 3
    = its three saliencies, on every VTAB-1k task; every Adapt setting reaches its T_target within the runs."""
    import math

    from overlays import merged
    from vptft import tasks as task_registry

    configs = [f"{ROOT}/config/paper.yaml", f"{ROOT}/config/paper-ablations.yaml"]
    config = merged(*configs)
    validate_config(copy.deepcopy(config))
    tasks = set(task_registry.tasks_of("vtab"))
    assert len(tasks) == 19
    lengths = {f"vpt_deep[prompt_length={p}]" for p in (1, 5, 10, 50, 100, 200)}
    assert trained_by_dry_run(tmp_path, "results/vpt_figure6.png", configs) == {
        (t, s) for t in tasks for s in lengths
    }
    saliencies = {"adapt", "adapt[saliency=grad_norm]", "adapt[saliency=l2]"}
    assert trained_by_dry_run(tmp_path, "results/adapt_table3.csv", configs) == {
        (t, s) for t in tasks for s in saliencies
    }
    inits = {"vpt_deep", "vpt_deep[init=class_prototype]"}  # Figure 13
    assert trained_by_dry_run(tmp_path, "results/vpt_figure13.png", configs) == {
        (t, s) for t in tasks for s in inits
    }
    epochs, batch = config["train"]["epochs"], 128
    for name, entry in config["strategies"].items():
        if name.startswith("adapt"):
            for n_train in (800, 1000):  # the sweep's and the final runs'
                steps = epochs * math.ceil(n_train / batch)
                assert (
                    get_strategy(name).schedule_problem(entry.get("options", {}), epochs, steps, 12) is None
                )


# ------------------------------------------------------------- pixel-space prompts (VPT Figure 5, the code's forms)


def test_prepend_pixel_prompts_are_the_frozen_patch_embedding_of_learned_patches(mini_vit):
    """Block 0 sees [CLS, embed(pixel prompts), patches]: the prompts' tokens are the backbone's own patch
    projection of 3 x P x P learned pixels, with no position embedding."""
    import copy

    model = get_strategy("vpt_shallow[location=prepend_pixel]").build(
        copy.deepcopy(mini_vit), 5, prompt_length=3
    )
    assert tuple(model.prompts.shape) == (3, 3, 8, 8)
    seen = {}
    model.backbone.blocks[0].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    x = torch.randn(2, 3, 32, 32)
    model.eval()(x)
    pe = mini_vit.patch_embed
    expected = pe.proj(model.prompts).flatten(2).transpose(1, 2).reshape(1, 3, -1)
    torch.testing.assert_close(seen["x"][:, 1:4], expected.expand(2, -1, -1))
    torch.testing.assert_close(seen["x"][:, 4:], mini_vit._pos_embed(pe(x))[:, 1:])  # the patches, unchanged
    assert seen["x"].shape[1] == 1 + 3 + 16


def test_concat_channel_embeds_the_image_and_its_prompt_channels_by_a_new_patch_embedding(mini_vit):
    """With the new embedding's image channels set to the backbone's and the prompt channels' weights zero, the
    model is the backbone itself: the prompt channels reach the tokens only through the new embedding."""
    import copy

    model = get_strategy("vpt_shallow[location=concat_channel]").build(
        copy.deepcopy(mini_vit), 5, prompt_length=2
    )
    assert tuple(model.prompts.shape) == (1, 2, 32, 32) and model.channel_proj.in_channels == 5
    assert model.channel_proj.weight.requires_grad and model.prompt_length == 0  # no extra tokens
    with torch.no_grad():
        model.channel_proj.weight.zero_()
        model.channel_proj.weight[:, :3] = mini_vit.patch_embed.proj.weight
        model.channel_proj.bias.copy_(mini_vit.patch_embed.proj.bias)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval().forward_features(x), mini_vit.eval().forward_features(x))
    with torch.no_grad():
        model.channel_proj.weight[:, 3:] = 0.1
    assert not torch.allclose(model.forward_features(x), mini_vit.forward_features(x))


@pytest.mark.parametrize(
    "name, message",
    [
        ("vpt_deep[location=prepend_pixel]", "location 'prepend_pixel' prompts the input image only"),
        ("vpt_shallow[location=concat_channel,pooling=prompt_pool]", "needs prepended prompts"),
    ],
)
def test_pixel_prompts_are_refused_where_they_have_no_form(name, message):
    config = default_config()
    config["strategies"][name] = {"grid": {"lr": [0.2], "wd": [0.0001], "prompt_length": [1]}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(copy.deepcopy(config))


# -------------------------------------------------- shared, fixed, CLS-learned prompts, VPT + Bias (VPT Figs 11-12, Table 9)


@pytest.mark.parametrize(
    "share, shape",
    [("none", (4, 3, 96)), ("intra", (4, 1, 96)), ("inter", (1, 3, 96)), ("all", (1, 1, 96))],
)
def test_shared_prompts_hold_one_set_where_blocks_or_tokens_share(mini_vit, share, shape):
    """Every block still receives p prompt tokens; sharing changes how many distinct vectors they are."""
    import copy

    model = get_strategy("vpt_deep").build(copy.deepcopy(mini_vit), 5, prompt_length=3, share=share)
    assert tuple(model.prompts.shape) == shape
    inputs = []
    for block in model.backbone.blocks:
        block.register_forward_pre_hook(lambda m, args: inputs.append(args[0][:, 1:4].detach()))
    model.eval()(torch.randn(2, 3, 32, 32))
    assert [x.shape[1] for x in inputs] == [3] * 4
    if share in ("inter", "all"):
        assert all(torch.equal(inputs[0], x) for x in inputs)  # the same tokens at every block
    else:
        assert not torch.equal(inputs[0], inputs[1])
    if share in ("intra", "all"):
        assert torch.equal(inputs[0][:, 0], inputs[0][:, 2])  # one vector for the block's p tokens


def test_fixed_prompts_do_not_train_but_are_saved_with_the_run(mini_vit):
    import copy

    from vptft.strategies.base import tuned_parameters, tuned_state_dict

    model = get_strategy("vpt_deep[learn=fixed]").build(copy.deepcopy(mini_vit), 5, prompt_length=2)
    assert set(tuned_parameters(model)) == {"head.weight", "head.bias"}
    assert "prompts" in tuned_state_dict(model) and model.prompts.abs().sum() > 0  # the random init, kept


def test_cls_learned_inserts_no_prompts_and_trains_the_cls_token(mini_vit):
    import copy

    model = get_strategy("vpt_shallow[learn=cls]").build(copy.deepcopy(mini_vit), 5, prompt_length=2)
    assert model.prompts is None and model.prompt_length == 0
    tuned = {name for name, p in model.named_parameters() if p.requires_grad}
    assert tuned == {"backbone.cls_token", "head.weight", "head.bias"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.head.weight.normal_()
    torch.testing.assert_close(model.eval().forward_features(x), mini_vit.eval().forward_features(x))
    model(x).sum().backward()
    assert model.backbone.cls_token.grad.abs().sum() > 0


def test_vpt_plus_bias_trains_the_prompts_and_every_backbone_bias(mini_vit):
    import copy

    model = get_strategy("vpt_deep[learn=prompts_bias]").build(copy.deepcopy(mini_vit), 5, prompt_length=2)
    backbone = {name for name, p in model.backbone.named_parameters() if p.requires_grad}
    assert backbone == {name for name, _ in mini_vit.named_parameters() if name.endswith("bias")}
    assert (
        model.prompts.requires_grad and not model.train().backbone.training
    )  # the backbone stays in eval mode


def test_class_prototypes_are_each_classs_mean_last_block_cls_before_the_final_norm(mini_vit):
    from vptft.data import Normalize
    from vptft.strategies.prompts import class_prototypes

    torch.manual_seed(1)
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 2, 0, 2, 2, 3, 0])
    normalize = Normalize((0.5,) * 3, (0.5,) * 3)
    got = class_prototypes(mini_vit.train(), images, labels, 5, normalize, torch.device("cpu"), batch_size=3)
    assert mini_vit.training  # its mode is given back
    with torch.no_grad():
        x = mini_vit.eval().norm_pre(mini_vit._pos_embed(mini_vit.patch_embed(normalize(images))))
        for block in mini_vit.blocks:
            x = block(x)
    cls = x[:, 0]
    for c in (0, 2, 3):
        torch.testing.assert_close(got[c], cls[labels == c].mean(0))
    assert got.shape == (5, 96) and not got[1].any() and not got[4].any()  # no image: zeros
    assert not torch.allclose(got[0], mini_vit.norm(x)[labels == 0, 0].mean(0))  # before the final norm


def test_class_prototype_prompts_start_every_block_from_one_prompt_per_class(mini_vit):
    from vptft.strategies.base import tuned_parameters

    prototypes = torch.randn(5, 96)
    spec = get_strategy("vpt_deep[init=class_prototype]")
    model = spec.build(copy.deepcopy(mini_vit), 5, head_init="zero", class_prototypes=prototypes)
    assert model.prompt_length == 5 and model.prompts.shape == (4, 5, 96)  # prompt length = classes
    assert all(torch.equal(model.prompts[i].detach(), prototypes) for i in range(4))
    assert set(tuned_parameters(model)) == {"prompts", "head.weight", "head.bias"}
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match=r"init 'class_prototype' needs the \(5, 96\) class means"):
        spec.build(copy.deepcopy(mini_vit), 5, head_init="zero")
    with pytest.raises(ValueError, match=r"needs the \(5, 96\).*got \(4, 96\)"):
        spec.build(copy.deepcopy(mini_vit), 5, head_init="zero", class_prototypes=torch.randn(4, 96))
    random = get_strategy("vpt_deep").build(
        copy.deepcopy(mini_vit), 5, prompt_length=5, class_prototypes=prototypes
    )
    assert not torch.equal(random.prompts[0].detach(), prototypes)  # only the init option reads them


@pytest.mark.parametrize(
    "name, grid, message",
    [
        (
            "vpt_deep[init=class_prototype]",
            {"prompt_length": [5]},
            r"\$.s.grid.prompt_length: init 'class_prototype'",
        ),
        (
            "vpt_deep[init=class_prototype,prompt_length=5]",
            {},
            r"\$.s: init 'class_prototype' inserts one prompt per",
        ),
        (
            "vpt_deep[init=class_prototype,location=add]",
            {},
            r"init 'class_prototype' starts prepended, unshared",
        ),
        (
            "vpt_deep[init=class_prototype,share=inter]",
            {},
            r"init 'class_prototype' starts prepended, unshared",
        ),
    ],
)
def test_class_prototype_prompts_are_refused_where_their_length_or_form_is_not_theirs(name, grid, message):
    problems = get_strategy(name).problems("$.s", {"lr": [0.1], **grid}, {}, depth=4)
    assert any(re.search(message, p) for p in problems), problems


def test_class_prototype_runs_count_one_prompt_per_class_for_their_batch_and_their_backbone():
    from vptft.backbones import BACKBONES, family_problem
    from vptft.strategies import LONG_PROMPT

    spec = get_strategy("vpt_deep[init=class_prototype]")
    values = spec.run_values({"lr": 0.1, "wd": 0.0}, LONG_PROMPT + 50)
    assert values["prompt_length"] == LONG_PROMPT + 50
    entry = {"batch_size": 128, "batch_size_long_prompts": 64}
    assert spec.batch_size(values, entry, 32) == 64  # the long-prompt batch, as the VPT paper's rule
    assert spec.batch_size(spec.run_values({"lr": 0.1}, 10), entry, 32) == 128
    assert get_strategy("vpt_deep").run_values({"prompt_length": 5}, 300) == {"prompt_length": 5}
    swin = BACKBONES["mini_swin"]
    assert "no CLS token" in family_problem(swin, "vpt_deep", spec.resolve({}))
    assert family_problem(BACKBONES["mini_vit"], "vpt_deep", spec.resolve({})) is None
