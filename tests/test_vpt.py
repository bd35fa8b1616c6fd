import pytest
import torch

from vptft.backbones.factory import create_backbone
from vptft.strategies import get_strategy
from vptft.strategies.base import parameter_counts, tuned_parameters
from vptft.strategies.prompts import expected_tuned_parameters, prompt_init_bound

P, C = 3, 7


def backbones():
    yield "mini_vit", (32, 32)
    yield "vit_b16_in21k", (224, 224)  # architecture only (no weights needed for these checks)


@pytest.fixture(params=list(backbones()), ids=lambda b: b[0], scope="module")
def backbone(request):
    key, size = request.param
    torch.manual_seed(0)
    return create_backbone(key, pretrained=False), size


def _vpt(backbone, deep=True, p=P):
    torch.manual_seed(1)
    return get_strategy("vpt_deep" if deep else "vpt_shallow").build(backbone, C, prompt_length=p)


def test_only_prompts_and_head_get_gradients_and_frozen_weights_stay_bit_identical(backbone):
    vit, size = backbone
    model = _vpt(vit)
    frozen_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert set(tuned_parameters(model)) == {"prompts", "head.weight", "head.bias"}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    model.train()
    for _ in range(2):
        x, y = torch.randn(2, 3, *size), torch.tensor([0, 1])
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for name, param in model.named_parameters():
            assert (param.grad is not None) == (name in {"prompts", "head.weight", "head.bias"}), name
        optimizer.step()
    assert model.prompts.grad.abs().sum() > 0
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, frozen_before[key]), key


def test_backbone_stays_in_eval_mode_while_prompts_train(backbone):
    model = _vpt(backbone[0])
    model.train()
    assert model.training and model.prompt_dropout.training
    assert not any(m.training for m in model.backbone.modules())


@pytest.mark.parametrize("deep", [True, False])
def test_cls_output_is_invariant_to_permuting_prompts_within_a_layer(backbone, deep):
    vit, size = backbone
    model = _vpt(vit, deep=deep).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        before = model.forward_head(model.forward_features(x), pre_logits=True)
        model.prompts.copy_(model.prompts[:, torch.randperm(P)])
        after = model.forward_head(model.forward_features(x), pre_logits=True)
        model.prompts.copy_(torch.randn_like(model.prompts))
        changed = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(before, changed, atol=1e-3)  # the prompts do matter


@pytest.mark.parametrize("deep", [True, False])
def test_sequence_length_at_every_layer(backbone, deep):
    vit, size = backbone
    model = _vpt(vit, deep=deep).eval()
    lengths = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: lengths.append((i[0].shape[1], o.shape[1])))
        for b in model.backbone.blocks
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, *size))
    for h in hooks:
        h.remove()
    expected = 1 + P + vit.patch_embed.num_patches
    assert lengths == [(expected, expected)] * len(vit.blocks)


def test_deep_prompts_replace_previous_layer_outputs(backbone):
    """Changing layer-1 prompts must not depend on what layer 0 produced at the prompt positions."""
    vit, size = backbone
    model = _vpt(vit).eval()
    seen = []
    hook = model.backbone.blocks[1].register_forward_pre_hook(
        lambda m, i: seen.append(i[0][:, 1 : 1 + P].clone())
    )
    with torch.no_grad():
        model(torch.randn(2, 3, *size))
    hook.remove()
    torch.testing.assert_close(seen[0], model.prompts[1].expand(2, -1, -1))


@pytest.mark.parametrize("deep", [True, False])
def test_tuned_parameter_count_matches_formula(backbone, deep):
    vit, _ = backbone
    model = _vpt(vit, deep=deep, p=10)
    counts = parameter_counts(model)
    assert counts["tuned"] == expected_tuned_parameters(10, vit.embed_dim, len(vit.blocks), C, deep)
    assert counts["total"] == counts["tuned"] + sum(p.numel() for p in vit.parameters())


def test_vit_b16_formula_matches_the_paper_numbers():
    assert expected_tuned_parameters(10, 768, 12, 100, deep=True) == 169_060
    assert expected_tuned_parameters(10, 768, 12, 100, deep=False) == 84_580
    assert prompt_init_bound(16, 768) == pytest.approx(0.0625)


def test_prompt_init_is_uniform_within_bound(mini_vit):
    model = _vpt(mini_vit, p=50)
    bound = prompt_init_bound(8, 96)
    assert model.prompts.abs().max() <= bound and model.prompts.abs().max() > 0.9 * bound
