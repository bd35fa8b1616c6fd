"""The paper config's training against the VPT paper / public code (batch sizes, optimiser, dropout, precision),
the optimiser rules themselves, and selection on the paper's own grids."""

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT
from vptft import engine
from vptft.backbones.factory import create_backbone
from vptft.config import validate_config
from vptft.selection import grid_points, merge_sweep, selected_point, write_csv
from vptft.strategies import STRATEGIES, get_strategy

# VPT paper Table 8 (ViT-B/16) and the public code: (batch, batch for p >= 100, optimiser, backbone dropout).
PAPER_TRAINING = {
    "full": (128, 128, "adamw", 0.1),
    "linear": (2048, 2048, "sgd", 0.0),
    "vpt_deep": (128, 64, "sgd", 0.0),
    "mixed": (128, 64, "sgd", 0.1),
    "ft_then_pt": (128, 64, "sgd", 0.0),
    "vpt_shallow": (128, 64, "sgd", 0.0),
    "partial": (1280, 1280, "adamw", 0.1),
    "bias": (128, 128, "adamw", 0.1),
    "adapter": (128, 128, "adamw", 0.1),
}


def paper_config(overlay=True):
    config = yaml.safe_load(Path(f"{ROOT}/config/paper.yaml").read_text())
    if overlay:
        from snakemake.utils import update_config  # how `--configfile a b` merges b into a

        update_config(config, yaml.safe_load(Path(f"{ROOT}/config/vpt-baselines.yaml").read_text()))
        assert "adapter" in config["regimes"]["vtab1k"]["strategies"]
    return validate_config(config)


def test_paper_config_trains_each_strategy_as_the_vpt_paper_and_code_do():
    config = paper_config()
    train = config["train"]
    assert train["optimizer_behavior"] == "vpt_code"
    assert train["precision"] == "tf32"  # the VPT code's fp32 as its PyTorch ran it on A100s
    assert train["lr_scale_batch"] == 256 and train["epochs"] == 100 and train["warmup_fraction"] == 0.1
    assert {"full", "vpt_deep", "mixed", "ft_then_pt"} <= set(config["strategies"])
    for name, (batch, long_batch, optimizer, dropout) in PAPER_TRAINING.items():
        entry, spec = config["strategies"][name], get_strategy(name)
        assert spec.optimizer == optimizer, name
        assert spec.batch_size({"prompt_length": 10}, entry, train["batch_size"]) == batch, name
        assert spec.batch_size({"prompt_length": 200}, entry, train["batch_size"]) == long_batch, name
        assert (train["backbone_dropout"] if spec.trains_backbone else 0.0) == dropout, name
    assert config["strategies"]["vpt_deep"]["options"]["prompt_dropout"] == 0.1
    assert (
        config["strategies"]["mixed"]["grid"] == config["strategies"]["vpt_deep"]["grid"]
    )  # prompt optimiser


def named_model():
    torch.manual_seed(0)
    return get_strategy("vpt_deep").build(create_backbone("mini_vit", pretrained=False), 3, prompt_length=2)


def groups_by_decay(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {}
    for group in optimizer.param_groups:
        decay.setdefault(group["weight_decay"], []).extend(names[id(p)] for p in group["params"])
    return {d: sorted(names) for d, names in decay.items()}


def test_vpt_code_optimiser_rules():
    model = named_model()
    model.backbone.requires_grad_(True)  # a model that tunes weights and biases
    adamw = engine.FitConfig(
        "adamw",
        lr=0.001,
        weight_decay=0.0001,
        epochs=1,
        warmup_epochs=0,
        batch_size=64,
        seed=0,
        optimizer_behavior="vpt_code",
    )
    opt = engine.make_optimizer(model, adamw)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["eps"] == 1e-6
    decay = groups_by_decay(opt, model)
    assert set(decay) == {0.01, 0.0}  # the grid's 0.0001 is ignored, as in the VPT code
    assert all("bias" in n for n in decay[0.0]) and not any("bias" in n for n in decay[0.01])
    assert "backbone.blocks.0.norm1.weight" in decay[0.01]  # norms are decayed like the code's *_norm weights
    sgd_fallback = engine.make_optimizer(model, dataclasses.replace(adamw, weight_decay=0.0))
    assert type(sgd_fallback) is torch.optim.SGD and sgd_fallback.defaults["momentum"] == 0.9
    assert all(g["weight_decay"] == 0.0 for g in sgd_fallback.param_groups)
    prompted = named_model()
    sgd = engine.make_optimizer(prompted, dataclasses.replace(adamw, optimizer="sgd", weight_decay=0.001))
    assert groups_by_decay(sgd, prompted) == {0.001: ["head.weight", "prompts"], 0.0: ["head.bias"]}
    plain = engine.make_optimizer(model, dataclasses.replace(adamw, optimizer_behavior="plain"))
    assert {g["weight_decay"] for g in plain.param_groups} == {0.0001} and plain.defaults["eps"] == 1e-8
    assert {g["group"] for g in plain.param_groups} == {"head", "backbone", "added"}  # the model's own groups


def test_selection_by_grid_index_on_the_paper_grids(tmp_path):
    """The paper's lr grid starts with the integer 50: a fractional selected lr must come back as the config's
    own value (re-typing it from the first entry crashed every final run with int('0.5'))."""
    grid = paper_config(overlay=False)["strategies"]["linear"]["grid"]
    points = grid_points(grid)
    rows = [
        {"grid_index": i, **p, "val_top1": 90.0 if p["lr"] == 0.5 and p["wd"] == 0.001 else 10.0}
        for i, p in enumerate(points)
    ]
    write_csv(tmp_path / "chunk0.csv", rows)
    merge_sweep([tmp_path / "chunk0.csv"], tmp_path / "sweep.csv", expected_points=len(points))
    assert selected_point(tmp_path / "sweep.csv", grid) == {"lr": 0.5, "wd": 0.001}
    stale = {**grid, "lr": [1, 2]}
    with pytest.raises(ValueError, match="from another grid"):
        selected_point(tmp_path / "sweep.csv", stale)


def test_every_registered_strategy_declares_its_training():
    for spec in STRATEGIES.values():
        assert spec.optimizer in {"sgd", "adamw"}
        assert not (spec.cache_features and spec.trains_backbone)
        if spec.continues:
            assert get_strategy(
                spec.continues
            ).stores_backbone  # it must have whole-backbone runs to continue
