import pytest
import torch
from safetensors.torch import save_file

from vptft.backbones import BACKBONES, create_backbone, input_config
from vptft.config import WORKFLOW_PRETRAINED_BACKBONES, load_schema


def test_registry_matches_schema_and_config_module():
    assert set(load_schema()["properties"]["backbone"]["enum"]) == set(BACKBONES)
    assert WORKFLOW_PRETRAINED_BACKBONES == {k for k, s in BACKBONES.items() if s.pretrained_by_workflow}


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


def test_input_config_reads_the_pretrained_config(mini_vit):
    assert input_config(mini_vit) == {"size": (32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert input_config(mini_vit, "imagenet")["mean"] == (0.485, 0.456, 0.406)
    vit_b = create_backbone("vit_b16_in21k", pretrained=False)
    assert input_config(vit_b)["size"] == (224, 224) and input_config(vit_b)["mean"] == (0.5, 0.5, 0.5)
