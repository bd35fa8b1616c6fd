import dataclasses

import pytest
import timm
import torch
from safetensors.torch import save_file

from vptft.backbones import BACKBONES, FAMILIES, LOADERS, get_backbone, needs_local_file
from vptft.backbones.checkpoints import LayoutError
from vptft.backbones.factory import create_backbone, input_config
from vptft.config import ConfigError, load_schema, missing_weights, validate_config
from vptft.strategies import get_strategy
from vptft.strategies.tokens import token_interface


@pytest.mark.parametrize("key", list(BACKBONES))
def test_every_registry_entry_builds_the_model_it_declares(key):
    """Depth, patch tokens, feature width and preprocessing as declared, through the family's token interface;
    built on the meta device (ViT-H's 632M parameters, no memory)."""
    spec = get_backbone(key)
    assert spec.key == key and spec.family in FAMILIES and spec.loader in LOADERS
    with torch.device("meta"):
        model = create_backbone(key, pretrained=False)
    tokens = token_interface(model)
    assert (tokens.depth, tokens.num_patches, model.num_features) == (spec.depth, spec.tokens, spec.dim)
    assert len(tokens.last_blocks(1)) >= 2 and tokens.grid_size[0] * tokens.grid_size[1] == spec.tokens
    prep = spec.preprocessing
    assert input_config(model) == {"size": (prep.size, prep.size), "mean": prep.mean, "std": prep.std}
    if "." in spec.timm_name:  # timm knows these weights: the registry repeats its preprocessing
        cfg = timm.get_pretrained_cfg(spec.timm_name)
        assert (cfg.input_size[1], cfg.mean, cfg.std, cfg.interpolation) == (
            prep.size,
            prep.mean,
            prep.std,
            prep.interpolation,
        )
    assert spec.pretrained_by_workflow or spec.weights, (
        "a downloaded backbone says where its weights come from"
    )
    assert (
        spec.pretrained_by_workflow or spec.batches is not None
    )  # every paper backbone has Table 8's batches
    for name in spec.fixed:
        assert not model.get_parameter(name).requires_grad


def test_the_workflow_pretrained_backbone_and_the_schema_read_the_registry():
    assert "enum" not in load_schema()["properties"]["backbone"]  # the registry is the one list
    assert [k for k, s in BACKBONES.items() if s.pretrained_by_workflow] == [
        "mini_vit",
        "mini_vit_s",
        "mini_vit_mae",
        "mini_vit_moco",
        "mini_clip",
        "mini_swin",
    ]
    assert {s.objective for s in BACKBONES.values()} == {"supervised", "mae", "contrastive", "clip"}
    assert [k for k, s in BACKBONES.items() if needs_local_file(s)] == [
        "clip_b16_openai",
        "vit_b16_mae",
        "vit_b16_mocov3",
    ]
    assert [k for k, s in BACKBONES.items() if s.clip is not None] == ["mini_clip", "clip_b16_openai"]


def _paper_config(**changes) -> dict:
    import yaml

    from conftest import ROOT

    with open(f"{ROOT}/config/paper.yaml") as f:
        config = yaml.safe_load(f)
    tables = {name: entry for name, entry in config["tables"].items() if not entry.get("backbone")}
    analyses = {name: entry for name, entry in config["analyses"].items() if name != "model_scale"}
    return {**config, "backbones": {}, "tables": tables, "analyses": analyses, **changes}


def test_config_names_an_unknown_backbone_and_a_missing_local_file(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"\$\.backbone: unknown backbone 'vit_z'; known: mini_vit, mini_vit_s, mini_vit_mae, mini_vit_moco, mini_clip, mini_swin, vit_b16_in21k",
    ):
        validate_config(_paper_config(backbone="vit_z"))
    with pytest.raises(
        ConfigError,
        match=r"\$\.backbone_checkpoint: backbone 'vit_b16_mae' loads from a local file.*mae_pretrain_vit_base\.pth",
    ):
        validate_config(_paper_config(backbone="vit_b16_mae"))
    config = validate_config(
        _paper_config(backbone="vit_b16_mocov3", backbone_checkpoint=str(tmp_path / "moco.pth"))
    )
    assert missing_weights(config, "vit_b16_mocov3") == (
        f"$.backbone_checkpoint: {tmp_path}/moco.pth: no such file; backbone 'vit_b16_mocov3' needs "
        + BACKBONES["vit_b16_mocov3"].weights
    )
    (tmp_path / "moco.pth").write_bytes(b"")
    assert missing_weights(config, "vit_b16_mocov3") is None


def test_workflow_checkpoint_loads_through_timm_factory(mini_vit, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in mini_vit.state_dict().items()}, str(path))
    loaded = create_backbone("mini_vit", path)
    for key, value in mini_vit.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(mini_vit.eval()(x), loaded.eval()(x))


def test_corrupt_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(RuntimeError, match="model.safetensors: cannot load backbone"):
        create_backbone("mini_vit", path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        create_backbone("mini_vit", tmp_path / "missing.safetensors")


def test_workflow_backbone_needs_its_checkpoint():
    with pytest.raises(ValueError, match="pretrain"):
        create_backbone("mini_vit")
    with pytest.raises(ValueError, match="local file: pass mae_pretrain_vit_base.pth"):
        create_backbone("vit_b16_mae")


def test_input_config_reads_the_pretrained_config(mini_vit):
    assert input_config(mini_vit) == {"size": (32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert input_config(mini_vit, "imagenet")["mean"] == (0.485, 0.456, 0.406)
    vit_b = create_backbone("vit_b16_in21k", pretrained=False)
    assert input_config(vit_b)["size"] == (224, 224) and input_config(vit_b)["mean"] == (0.5, 0.5, 0.5)


# The MAE and MoCo v3 loaders, on mini-sized entries of the same loader (the paper's are ViT-B sized)
def _mini_entry(monkeypatch, key: str, **changes) -> str:
    spec = dataclasses.replace(BACKBONES["mini_vit"], key=key, pretrained_by_workflow=False, **changes)
    monkeypatch.setitem(BACKBONES, key, spec)
    return key


def _source_vit(seed=0):
    torch.manual_seed(seed)
    return create_backbone("mini_vit", pretrained=False)


def test_mae_checkpoint_pools_like_the_vpt_code(monkeypatch, tmp_path):
    """`{'model': encoder}` with its final norm: loaded with the norm unused and a fresh fc_norm; the pooled
    feature of VPT-deep is fc_norm(mean of every token after CLS, prompts included), as the VPT code's MAE."""
    key = _mini_entry(monkeypatch, "mini_mae", loader="mae", timm_args={"global_pool": "avg"})
    source = _source_vit()
    state = source.state_dict()
    torch.save({"model": state, "epoch": 799}, tmp_path / "mae.pth")
    mae = create_backbone(key, tmp_path / "mae.pth")
    for name, value in mae.state_dict().items():
        expected = {"fc_norm.weight": torch.ones(96), "fc_norm.bias": torch.zeros(96)}.get(
            name, state.get(name)
        )
        assert torch.equal(value, expected), name
    assert not any(name.startswith("norm.") for name in mae.state_dict())
    model = get_strategy("vpt_deep").build(mae, 5, prompt_length=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
    assert tokens.shape[1] == 1 + 3 + 16
    ln = torch.nn.functional.layer_norm(tokens[:, 1:].mean(1), (96,), eps=1e-6)
    torch.testing.assert_close(pooled, ln, rtol=0, atol=1e-6)
    assert not torch.allclose(pooled, tokens[:, 0], atol=1e-3)  # not the CLS token
    torch.save({"model": {**state, "extra.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(LayoutError, match=r"other\.pth: not a MAE checkpoint.*extra\.weight"):
        create_backbone(key, tmp_path / "other.pth")


@pytest.mark.parametrize("layout", ["linear_probe", "pretraining"])
def test_mocov3_checkpoint_is_remapped_and_its_position_embedding_never_trains(monkeypatch, tmp_path, layout):
    key = _mini_entry(monkeypatch, "mini_moco", loader="mocov3", fixed=("pos_embed",))
    state = _source_vit().state_dict()
    if layout == "linear_probe":  # main_lincls.py: the DDP model with its 1000-class head
        saved = {f"module.{k}": v for k, v in state.items()}
        saved.update({"module.head.weight": torch.randn(1000, 96), "module.head.bias": torch.zeros(1000)})
    else:  # main_moco.py: base and momentum encoders (projection MLP as head) and the predictor
        other = _source_vit(1).state_dict()
        saved = {f"module.base_encoder.{k}": v for k, v in state.items()}
        saved.update({f"module.momentum_encoder.{k}": v for k, v in other.items()})
        saved.update(
            {
                "module.base_encoder.head.0.weight": torch.randn(8, 96),
                "module.predictor.0.weight": torch.randn(8, 8),
            }
        )
    torch.save({"epoch": 300, "arch": "vit_base", "state_dict": saved}, tmp_path / "moco.pth.tar")
    moco = create_backbone(key, tmp_path / "moco.pth.tar")
    for name, value in moco.state_dict().items():
        assert torch.equal(value, state[name]), name
    for strategy in ("full", "mixed", "bias", "partial"):
        model = get_strategy(strategy).build(create_backbone(key, tmp_path / "moco.pth.tar"), 5)
        tuned = {n for n, p in model.named_parameters() if p.requires_grad}
        assert "backbone.pos_embed" not in tuned and ("backbone.cls_token" in tuned) == (
            strategy in ("full", "mixed")
        )
    saved = {k: v for k, v in saved.items() if "blocks.3." not in k}
    torch.save({"state_dict": saved}, tmp_path / "short.pth.tar")
    with pytest.raises(
        LayoutError, match=r"short\.pth\.tar: not a MoCo v3 checkpoint.*missing \['blocks\.3\."
    ):
        create_backbone(key, tmp_path / "short.pth.tar")


def test_a_sidetuned_average_pooling_backbone_pools_every_backbone_token(monkeypatch):
    """The side feature travels as an extra token: the backbone's own pooling must not see it or lose one."""
    key = _mini_entry(monkeypatch, "mini_avg", timm_args={"global_pool": "avg"})
    model = get_strategy("sidetune").build(create_backbone(key, pretrained=False), 5, side_width=16).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        a = torch.sigmoid(model.alpha)
        backbone = model.backbone.fc_norm(tokens[:, 1:-1].mean(1))
        torch.testing.assert_close(
            model.forward_head(tokens, pre_logits=True), a * backbone + (1 - a) * tokens[:, -1]
        )


def test_an_extra_backbone_on_the_paper_schedule_gets_its_epochs_batches_and_prompt_lengths():
    from vptft.study import backbone_view

    config = validate_config(
        _paper_config(
            backbones={"swin_b_in21k": {"schedule": "paper"}, "vit_l16_in21k": {"schedule": "paper"}}
        )
        | {
            "tables": {
                "table7": {"groups": ["natural"], "backbone": "swin_b_in21k"},
                "table9": {"groups": ["natural"], "backbone": "vit_l16_in21k"},
            }
        }
    )
    swin, large, main = (
        backbone_view(config, key) for key in ("swin_b_in21k", "vit_l16_in21k", "vit_b16_in21k")
    )
    assert (
        swin["backbone"] == "swin_b_in21k"
        and swin["train"]["epochs"] == 100
        and large["train"]["epochs"] == 50
    )
    vpt = swin["strategies"]["vpt_deep"]
    assert (vpt["batch_size"], vpt["batch_size_long_prompts"], vpt["grid"]["prompt_length"]) == (
        80,
        None,
        [1, 5, 10, 50],
    )
    assert (
        swin["strategies"]["linear"]["batch_size"] == 1024 and swin["strategies"]["lora"]["batch_size"] == 128
    )
    assert (
        large["strategies"]["vpt_deep"]["batch_size"],
        large["strategies"]["vpt_deep"]["batch_size_long_prompts"],
    ) == (64, 32)
    assert large["strategies"]["vpt_deep"]["grid"]["prompt_length"] == [1, 5, 10, 50, 100, 200]
    assert main["strategies"] == config["strategies"] and main["train"] == config["train"]
    assert config["strategies"]["vpt_deep"]["grid"]["prompt_length"] == [
        1,
        5,
        10,
        50,
        100,
        200,
    ]  # not changed


def test_a_strategy_without_a_form_on_a_backbone_it_trains_on_is_refused():
    tables = {
        "table7": {
            "groups": ["natural"],
            "backbone": "swin_b_in21k",
            "strategies": ["vpt_prefix", "vpt_deep"],
        }
    }
    config = _paper_config(backbones={"swin_b_in21k": {}}, tables=tables)
    config["strategies"]["vpt_prefix"] = {"grid": {"lr": [0.1], "wd": [0.0]}}
    config["strategies"]["vpt_deep"]["grid"]["pooling"] = ["backbone", "cls"]
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert str(err.value).splitlines()[1:] == [
        "  $.strategies.vpt_prefix: key/value prompts have no swin form here (swin_b_in21k); it trains on backbone 'swin_b_in21k'",
        "  $.strategies.vpt_deep: pooling 'cls': swin_b_in21k has no CLS token; it trains on backbone 'swin_b_in21k'",
    ]
    config["strategies"]["vpt_deep"]["grid"]["pooling"] = ["backbone"]
    validate_config({**config, "tables": {"table7": {**tables["table7"], "strategies": ["vpt_deep"]}}})
