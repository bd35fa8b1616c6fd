"""The mini benchmark's contrastive pre-training: MoCo v3's fixed position embedding, the views, the InfoNCE loss,
that it learns, and that its checkpoint loads through the MoCo v3 remap with the embedding frozen."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import TINY_PRETRAIN
from vptft.backbones.factory import create_backbone
from vptft.contrastive import ContrastiveLearner, sincos_position_embedding
from vptft.data import Normalize
from vptft.pretrain import run_pretrain

CFG = TINY_PRETRAIN


def _mocov3_sincos(grid: int, dim: int) -> torch.Tensor:
    """MoCo v3's build_2d_sincos_position_embedding, written from its description: per token (h, w),
    [sin(w * omega), cos(w * omega), sin(h * omega), cos(h * omega)], omega_k = 1 / 10000^(k / (dim / 4))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    h, w = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    out_w, out_h = w.flatten()[:, None] * omega, h.flatten()[:, None] * omega
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)


def test_position_embedding_is_mocov3s_sincos_up_to_channel_order(mini_vit):
    ours = sincos_position_embedding(mini_vit)
    assert ours.shape == (1, 17, 96) and ours.dtype == torch.float32
    assert torch.equal(ours[0, 0], torch.zeros(96))  # the CLS slot
    ref = _mocov3_sincos(4, 96).float()
    q = 24  # timm stacks [sin h, sin w, cos h, cos w]; MoCo v3 [sin w, cos w, sin h, cos h]
    blocks = [ref[:, 2 * q : 3 * q], ref[:, :q], ref[:, 3 * q :], ref[:, q : 2 * q]]
    torch.testing.assert_close(ours[0, 1:], torch.cat(blocks, dim=1), rtol=0, atol=1e-7)


def test_learner_freezes_the_embedding_and_a_step_leaves_it(mini_vit):
    learner = ContrastiveLearner(mini_vit)
    assert not mini_vit.pos_embed.requires_grad
    before = mini_vit.pos_embed.detach().clone()
    optimizer = torch.optim.AdamW([p for p in learner.parameters() if p.requires_grad], lr=0.1)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    learner.loss(images, Normalize((0.5,) * 3, (0.5,) * 3), torch.Generator().manual_seed(0)).backward()
    optimizer.step()
    assert torch.equal(mini_vit.pos_embed, before)
    assert mini_vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_views_are_seeded_in_range_and_differ(mini_vit):
    learner = ContrastiveLearner(mini_vit)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    a = learner.view(images, torch.Generator().manual_seed(1))
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, learner.view(images, torch.Generator().manual_seed(1)))
    g = torch.Generator().manual_seed(1)
    first, second = learner.view(images, g), learner.view(images, g)
    assert torch.equal(first, a) and (first - second).abs().mean() > 0.05


def test_view_permutes_the_colour_channels():
    """A uniform image stays uniform under crop, flip and resampling: its view is the jittered colour, maybe
    grey, with its channels in a random order - over many draws every channel takes the red value's place."""
    learner = ContrastiveLearner(create_backbone("mini_vit", pretrained=False))
    images = torch.zeros(400, 3, 32, 32, dtype=torch.uint8)
    images[:, 0] = 200  # red
    views = learner.view(images, torch.Generator().manual_seed(0))
    assert torch.allclose(views, views[:, :, :1, :1].expand_as(views), atol=1e-5)
    colours = views[:, :, 0, 0]
    coloured = colours[(colours.max(1).values - colours.min(1).values) > 0.1]  # not grey
    assert 0.55 < len(coloured) / 400 < 0.85  # grayscale p 0.3
    assert set(coloured.argmax(1).tolist()) == {0, 1, 2}


def test_loss_is_infonce_over_both_views(mini_vit, monkeypatch):
    torch.manual_seed(0)
    learner = ContrastiveLearner(mini_vit).eval()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    normalize = Normalize((0.5,) * 3, (0.5,) * 3)
    views = iter([images.float() / 255, images.flip(-1).float() / 255])
    monkeypatch.setattr(learner, "view", lambda x, g: next(views))
    loss = learner.loss(images, normalize, torch.Generator())
    with torch.no_grad():
        z = torch.cat([images, images.flip(-1)]).float()
        z = F.normalize(learner.project(mini_vit((z - 127.5) / 127.5)), dim=1)
    expected = 0.0
    for i in range(12):
        positive = (i + 6) % 12
        others = [j for j in range(12) if j != i]
        logits = torch.stack([z[i] @ z[j] / 0.2 for j in others])
        expected += -(logits[others.index(positive)] - logits.logsumexp(0)) / 12
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_contrastive_pretraining_learns_and_loads_as_mocov3(tmp_path):
    report = run_pretrain(CFG, "mini_vit_moco", tmp_path, device="cpu")
    # 12 steps: the train loss falls by ~0.16, the held-out loss moves by ~0.002 either way with the thread count
    # (a fresh clone's pytest worker saw 4.75906 -> 4.75914), so only the train loss says it learns
    train = [row["train_loss"] for row in report["curves"]]
    assert train[-1] < train[0] - 0.1
    assert report["heldout_contrastive_loss"] == report["curves"][-1]["heldout_loss"] < math.log(2 * 64 - 1)
    assert report["contrastive_loss_of_constant_features"] == pytest.approx(math.log(2 * 64 - 1))
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert saved and all(k.startswith("base_encoder.") for k in saved)  # MoCo v3's pre-training layout
    assert not any(k.startswith("base_encoder.head") or "project" in k for k in saved)
    backbone = create_backbone("mini_vit_moco", tmp_path / "model.safetensors")
    assert not backbone.pos_embed.requires_grad and backbone.fixed_parameters == ("pos_embed",)
    torch.testing.assert_close(backbone.pos_embed, sincos_position_embedding(backbone), rtol=0, atol=0)
    assert torch.equal(backbone.blocks[3].mlp.fc2.weight, saved["base_encoder.blocks.3.mlp.fc2.weight"])


def test_a_contrastive_backbone_without_class_information_writes_nothing(tmp_path):
    with pytest.raises(RuntimeError, match=r"20-NN top-1 .* below pretrain.min_knn_top1 = 100.0%"):
        run_pretrain({**CFG, "epochs": 1, "min_knn_top1": 100.0}, "mini_vit_moco", tmp_path, device="cpu")
    assert not list(tmp_path.iterdir())
