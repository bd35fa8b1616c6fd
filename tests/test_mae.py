"""The mini benchmark's masked autoencoding: its targets, that it learns, and that its checkpoint loads as the
VPT code loads MAE (final norm unused, a fresh fc_norm)."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_PRETRAIN
from vptft.backbones.factory import create_backbone
from vptft.mae import MaskedAutoencoder, knn_top1
from vptft.pretrain import run_pretrain

CFG = TINY_PRETRAIN


def test_targets_are_the_patches_the_patch_embedding_reads(mini_vit):
    mae = MaskedAutoencoder(mini_vit)
    images = torch.randn(2, 3, 32, 32)
    weight = mini_vit.patch_embed.proj.weight  # (D, 3, p, p) -> (D, p * p * 3) in the targets' order
    flat = weight.permute(0, 2, 3, 1).reshape(len(weight), -1)
    expected = mini_vit.patch_embed(images)
    torch.testing.assert_close(mae.patches(images) @ flat.T + mini_vit.patch_embed.proj.bias, expected)


def test_masked_autoencoding_learns_and_its_checkpoint_loads_as_mae(tmp_path):
    report = run_pretrain(CFG, "mini_vit_mae", tmp_path, device="cpu")
    losses = [row["heldout_loss"] for row in report["curves"]]
    assert losses[-1] < losses[0] < 1.5 and report["heldout_reconstruction_loss"] == losses[-1]
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert "norm.weight" in saved and not any(k.startswith(("head.", "fc_norm.")) for k in saved)
    backbone = create_backbone("mini_vit_mae", tmp_path / "model.safetensors")
    assert isinstance(backbone.norm, torch.nn.Identity)
    assert torch.equal(backbone.fc_norm.weight, torch.ones(96)) and torch.equal(
        backbone.fc_norm.bias, torch.zeros(96)
    )
    assert torch.equal(backbone.blocks[3].mlp.fc2.weight, saved["blocks.3.mlp.fc2.weight"])


def test_a_failed_masked_autoencoding_writes_nothing(tmp_path):
    with pytest.raises(
        RuntimeError, match="reconstruction loss .* above pretrain.max_reconstruction_loss = 0.01"
    ):
        run_pretrain(
            {**CFG, "epochs": 1, "max_reconstruction_loss": 0.01}, "mini_vit_mae", tmp_path, device="cpu"
        )
    assert not list(tmp_path.iterdir())


def test_knn_votes_by_cosine_neighbours():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    assert knn_top1(train, labels, torch.tensor([[5.0, 0.2], [0.2, 3.0]]), torch.tensor([0, 1]), k=2) == 100.0
    assert knn_top1(train, labels, torch.tensor([[5.0, 0.2], [0.2, 3.0]]), torch.tensor([1, 0]), k=2) == 0.0


@pytest.mark.parametrize("base", ["mini_vit_mae", "mini_vit_moco"])
def test_a_self_supervised_entry_of_another_width_pretrains_and_loads_at_that_width(
    base, tmp_path, monkeypatch
):
    """A new registry entry that only changes timm_args (as mini_vit_s does for the supervised objective) gets a
    checkpoint of its own width from either self-supervised pretrain job, which loads back through its loader."""
    from dataclasses import replace

    from vptft.backbones import BACKBONES

    spec = replace(
        BACKBONES[base],
        key=f"{base}_narrow",
        dim=48,
        timm_args={**BACKBONES[base].timm_args, "embed_dim": 48},
    )
    monkeypatch.setitem(BACKBONES, spec.key, spec)
    loose = {"epochs": 1, "max_reconstruction_loss": 100.0, "min_knn_top1": 0.0}
    run_pretrain({**CFG, **loose}, spec.key, tmp_path, device="cpu")
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert {tuple(v.shape) for k, v in saved.items() if k.endswith("blocks.3.mlp.fc2.weight")} == {(48, 192)}
    backbone = create_backbone(spec.key, tmp_path / "model.safetensors")
    assert backbone.num_features == 48
