"""What every strategy's builder must honour (the head init it is given, the registry's `trains_backbone`) and the
numbers of the strategies' own parts: the adapter's residual bottleneck, the key/value prompts' init range, the
side network's layers and blend, Partial-k's fc_norm, Adapt's pruning bookkeeping and the key/value block."""

import copy
import math

import pytest
import torch
from torch import nn

from vptft.backbones.factory import create_backbone
from vptft.strategies import STRATEGIES, get_strategy
from vptft.strategies.backbone_tuning import Adapter
from vptft.strategies.base import make_head, tuned_parameters
from vptft.strategies.prompts import prompt_init_bound
from vptft.strategies.sidetune import side_network
from vptft.strategies.tokens import ViTTokens

# the strategies a ViT runs (CLIP's image-text-head ones, zero-shot and CoOp: tests/test_clip.py)
IMAGE_HEAD_STRATEGIES = [name for name, spec in STRATEGIES.items() if not spec.text_head]

C = 5
# Small options where a strategy has required or large ones (ft_then_pt and mixed take the prompt options).
OPTIONS = {
    "vpt_shallow": {"prompt_length": 2},
    "vpt_deep": {"prompt_length": 2},
    "mixed": {"prompt_length": 2},
    "ft_then_pt": {"prompt_length": 2},
    "mlp": {"k": 2},
    "sidetune": {"side_width": 8},
    "lora": {"rank": 2, "alpha": 4.0},
    "vpt_prefix": {"prompt_length": 2},
    "adapt": {"context_length": 2, "target_length": 4},
}
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def build(name, backbone, **options):
    torch.manual_seed(1)
    return get_strategy(name).build(copy.deepcopy(backbone), C, **{**OPTIONS.get(name, {}), **options})


def adapt(backbone, **options):
    defaults = dict(context_length=4, target_length=6, prune_every=2, prune_tokens=1, warmup_epochs=0)
    return build("adapt", backbone, head_init="zero", **{**defaults, **options})


@pytest.mark.parametrize("name", IMAGE_HEAD_STRATEGIES)
def test_every_strategy_builds_its_classifier_with_the_head_init_it_is_given(mini_vit, name):
    """The config's train.head_init reaches every builder: a dropped argument silently gives the default."""
    zero = build(name, mini_vit, head_init="zero").classifier
    assert not zero.weight.any() and not zero.bias.any()
    vpt = build(name, mini_vit, head_init="vpt").classifier
    assert vpt.bias.eq(-math.log(99)).all() and vpt.weight.std() > 0.1


@pytest.mark.parametrize("name", IMAGE_HEAD_STRATEGIES)
def test_the_backbone_trains_in_train_mode_exactly_where_the_registry_says(mini_vit, name):
    """`trains_backbone` decides whether the backbone's dropout is on while training (VPT code: off for a frozen
    backbone, on where its weights train)."""
    spec = get_strategy(name)
    model = build(name, mini_vit).train()
    assert model.trains_backbone is spec.trains_backbone
    assert {m.training for m in model.backbone.modules()} == {spec.trains_backbone}
    assert not any(m.training for m in model.eval().backbone.modules())


def test_adapter_adds_its_bottleneck_output_to_the_ffn_output():
    torch.manual_seed(0)
    mlp = nn.Linear(6, 6)
    adapter = Adapter(mlp, 6, reduction=2, init="zero_up")
    nn.init.normal_(adapter.up.weight)
    nn.init.normal_(adapter.up.bias)
    x = torch.randn(4, 6)
    with torch.no_grad():
        h = mlp(x)
        torch.testing.assert_close(adapter(x), h + adapter.up(nn.functional.gelu(adapter.down(h))))


@pytest.mark.parametrize("init", ["zero_both", "zero_up"])
def test_adapter_init_decides_what_gets_a_gradient(init):
    """The VPT code zero-initialises both projections: GELU(0) = 0, so only the up-projection's bias gets a
    gradient (a bias on the FFN output, forever); zero_up starts the same function with a live bottleneck."""
    torch.manual_seed(0)
    mlp = nn.Linear(6, 6)
    adapter = Adapter(mlp, 6, reduction=2, init=init)
    x = torch.randn(4, 6)
    torch.testing.assert_close(adapter(x), mlp(x))  # unchanged at init
    adapter(x).pow(2).sum().backward()
    grads = {name: p.grad.abs().sum().item() for name, p in adapter.named_parameters() if "mlp" not in name}
    assert grads["up.bias"] > 0 and grads["down.weight"] == grads["down.bias"] == 0
    assert (grads["up.weight"] > 0) == (init == "zero_up")
    assert (adapter.down.weight.abs().sum() > 0) == (init == "zero_up")


def test_mlp_head_is_the_vpt_codes(mini_vit):
    """Mlp-3: [Linear, ReLU, BatchNorm1d, Dropout(0.1)] x 2 + the head; kaiming-normal fan-out hidden weights;
    batch statistics and dropout in training, running statistics and no dropout in evaluation."""
    model = build("mlp", mini_vit, k=3)
    kinds = [type(m).__name__ for m in model.head]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Dropout"] * 2 + ["Linear"]
    assert all(m.p == 0.1 for m in model.head if isinstance(m, nn.Dropout))
    std = model.head[0].weight.std().item()
    assert abs(std - (2 / 96) ** 0.5) < 0.01  # kaiming normal, fan_out = 96
    model.train()
    torch.manual_seed(0)
    first = model(X)
    assert not torch.allclose(first, model(X))  # dropout
    model.eval()
    assert torch.equal(model(X), model(X))


def test_adapter_bottleneck_is_at_least_one_wide(mini_vit):
    """r >= D gives width D // r = 0: the adapter keeps one bottleneck unit instead of failing."""
    model = build("adapter", mini_vit, reduction=200)
    adapters = [block.mlp for block in model.backbone.blocks]
    assert all(a.down.out_features == 1 and a.up.in_features == 1 for a in adapters)
    with torch.no_grad():
        for p in model.param_groups()["added"].values():
            p.normal_()
        assert model(X).shape == (2, C)


@pytest.mark.parametrize("name", ["vpt_prefix", "adapt"])
def test_key_value_prompts_start_uniform_over_the_vpt_init_range(mini_vit, name):
    model = build(name, mini_vit, **({"prompt_length": 8} if name == "vpt_prefix" else {"context_length": 8}))
    bound = prompt_init_bound(8, 96)  # mini ViT: patch 8, width 96
    prompts = model.prompts.detach()
    assert prompts.abs().max() <= bound
    assert prompts.min() < -0.9 * bound and prompts.max() > 0.9 * bound  # both signs, the whole range


def test_side_network_halves_the_image_four_times_from_width_over_8_channels():
    net = side_network(out_dim=10, width=8)
    x, maps = torch.randn(2, 3, 32, 32), []
    for layer in net:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            assert layer.kernel_size == (3, 3)
            maps.append(tuple(x.shape[1:]))
    assert maps == [(1, 16, 16), (2, 8, 8), (4, 4, 4), (8, 2, 2)]  # 3x3 convs, stride 2, padding 1
    assert x.shape == (2, 10)


def test_sidetune_blends_the_backbones_own_pooled_feature_of_its_tokens():
    """Through the backbone's own pooling (here MAE's average of the tokens after CLS, through fc_norm) of exactly
    the backbone's tokens (not the appended side token), as a pre-logits feature even where the backbone still
    has a classifier of its own."""
    torch.manual_seed(0)
    backbone = create_backbone("mini_vit_mae", pretrained=False)
    backbone.reset_classifier(7)
    model = get_strategy("sidetune").build(backbone, C, side_width=8).eval()
    with torch.no_grad():
        model.alpha.fill_(0.3)
        a = torch.sigmoid(torch.tensor(0.3))
        feature = model.forward_head(model.forward_features(X), pre_logits=True)
        tokens = backbone.forward_features(X)
        pooled = backbone.fc_norm(tokens[:, 1:].mean(1))
        torch.testing.assert_close(feature, a * pooled + (1 - a) * model.side(X))


def test_partial_trains_fc_norm_where_the_backbone_pools_through_one():
    torch.manual_seed(0)
    backbone = create_backbone("mini_vit_mae", pretrained=False)
    model = get_strategy("partial").build(backbone, C, k=1)
    tuned = set(tuned_parameters(model))
    assert {"backbone.fc_norm.weight", "backbone.fc_norm.bias"} <= tuned
    assert {n.split(".")[2] for n in tuned if n.startswith("backbone.blocks.")} == {"3"}


def test_adapt_summary_says_whether_pruning_reached_the_budget(mini_vit):
    model = adapt(mini_vit, prune_every=1, prune_tokens=5)  # 16 tokens -> 6: two pruning steps
    model.prompts.grad = torch.rand_like(model.prompts)
    assert model.summary()["target_reached"] is False
    model.after_backward(epoch=0)
    assert model.summary()["active_tokens"] == 11 and model.summary()["target_reached"] is False
    model.after_backward(epoch=0)
    assert model.summary()["active_tokens"] == 6 and model.summary()["target_reached"] is True


def test_adapt_stores_its_tuned_parameters_less_the_pruned_tokens(mini_vit):
    model = adapt(mini_vit, prune_every=1, prune_tokens=3)
    tuned = sum(p.numel() for p in tuned_parameters(model).values())
    assert model.stored_parameters() == tuned
    model.prompts.grad = torch.rand_like(model.prompts)
    model.after_backward(epoch=0)
    assert model.stored_parameters() == tuned - 3 * 96  # each pruned token drops its D values


def test_adapt_ranks_tokens_by_saliency_summed_over_the_minibatches_between_pruning_steps(mini_vit):
    model = adapt(mini_vit, saliency="grad_norm", prune_every=2, prune_tokens=1)

    def backward_with_norms(a, b, rest):  # token (0, 0) gets norm a, token (1, 1) norm b, every other `rest`
        grad = torch.zeros_like(model.prompts)
        grad[..., 0] = rest
        grad[0, 0, 0], grad[1, 1, 0] = a, b
        model.prompts.grad = grad
        model.after_backward(epoch=0)

    backward_with_norms(10.0, 4.0, 6.0)
    assert int(model.batches) == 1 and model.keep.all()
    backward_with_norms(1.0, 4.0, 6.0)  # sums: 11, 8, 12 (the last minibatch alone would rank (0, 0) lowest)
    assert (~model.keep).nonzero().tolist() == [[1, 1]]
    assert int(model.batches) == 2 and not model.score.any()


def test_adapt_stops_accumulating_once_at_its_budget_and_without_gradients(mini_vit):
    model = adapt(mini_vit)
    model.after_backward(epoch=0)  # no gradient yet: nothing to rank
    assert int(model.batches) == 0 and not model.score.any()
    with torch.no_grad():
        model.keep.view(-1)[6:] = False  # at target_length 6
    model.prompts.grad = torch.rand_like(model.prompts)
    model.after_backward(epoch=0)
    assert int(model.batches) == 0 and not model.score.any()


def kv_block(mini_vit):
    block = copy.deepcopy(mini_vit.blocks[0])
    x = torch.randn(2, 17, 96, generator=torch.Generator().manual_seed(1))
    prefix = torch.randn(2, 3, 96, generator=torch.Generator().manual_seed(2))
    return block, x, prefix


def test_key_value_block_runs_the_attentions_output_norm(mini_vit):
    """timm's scale_norm attention normalises its output before the projection; with every prefix token
    masked out the block is timm's own block."""
    block, x, prefix = kv_block(mini_vit)
    block.attn.norm = nn.LayerNorm(96)
    nn.init.normal_(block.attn.norm.weight)
    block.eval()
    masked = torch.zeros(3, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(ViTTokens.block_with_kv_prefix(block, x, prefix, masked), block(x))


def test_key_value_block_runs_on_an_attention_without_an_output_norm(mini_vit):
    """Older timm attentions have no `norm`, `gate` or `head_dim` attributes: identity, none, width / heads."""
    block, x, prefix = kv_block(mini_vit)
    block.eval()
    with torch.no_grad():
        expected = block(x)
        del block.attn.norm, block.attn.gate, block.attn.head_dim
        got = ViTTokens.block_with_kv_prefix(block, x, prefix, torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(got, expected)


def test_key_value_block_runs_the_attentions_output_gate(mini_vit):
    """timm's gated attention scales its output by a sigmoid gate of the block's normed input: with every prefix
    token masked out the block is timm's own block, and the gate changes its output."""
    block, x, prefix = kv_block(mini_vit)
    block.eval()
    masked = torch.zeros(3, dtype=torch.bool)
    with torch.no_grad():
        ungated = ViTTokens.block_with_kv_prefix(block, x, prefix, masked)
        block.attn.gate = nn.Linear(96, 96)
        torch.testing.assert_close(ViTTokens.block_with_kv_prefix(block, x, prefix, masked), block(x))
        assert not torch.allclose(block(x), ungated)


def test_key_value_block_runs_an_attention_narrower_than_the_block(mini_vit):
    """timm's attn_head_dim: heads x head_dim need not be the token width (qkv and proj map between them)."""
    from timm.models.vision_transformer import Attention

    block, x, prefix = kv_block(mini_vit)
    torch.manual_seed(0)
    block.attn = Attention(96, num_heads=3, attn_head_dim=16, qkv_bias=True)
    block.eval()
    with torch.no_grad():
        got = ViTTokens.block_with_kv_prefix(block, x, prefix, torch.zeros(3, dtype=torch.bool))
        torch.testing.assert_close(got, block(x))


def test_key_value_block_drops_attention_probabilities_in_training_mode_only(mini_vit):
    block, x, prefix = kv_block(mini_vit)
    block.attn.attn_drop.p = 0.5
    with torch.no_grad():
        block.train()
        first, second = (ViTTokens.block_with_kv_prefix(block, x, prefix) for _ in range(2))
        assert not torch.allclose(first, second)
        block.eval()
        first, second = (ViTTokens.block_with_kv_prefix(block, x, prefix) for _ in range(2))
        assert torch.equal(first, second)


def test_lora_scales_by_alpha_over_rank_without_dropout(mini_vit):
    model = get_strategy("lora").build(mini_vit, 3, rank=4, alpha=16.0)
    layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert layers and all(m.scaling["default"] == 4.0 for m in layers)
    assert all(isinstance(m.lora_dropout["default"], torch.nn.Identity) for m in layers)


def test_a_point_without_a_prompt_length_trains_at_the_short_prompt_batch():
    """The long-prompt batch (VPT Table 8) applies from prompt length 100; a point that leaves the length to its
    default (10) is a short-prompt run."""
    spec = get_strategy("vpt_deep")
    entry = {"batch_size": 128, "batch_size_long_prompts": 64}
    assert spec.batch_size({"lr": 0.1, "wd": 0.0}, entry, 32) == 128
    assert spec.batch_size({"lr": 0.1, "wd": 0.0, "prompt_length": 100}, entry, 32) == 64


def test_the_vpt_head_init_is_kaiming_normal_over_the_classes():
    """The VPT code's head: weights ~ N(0, 2 / num_classes) (fan_out, ReLU gain), bias -log(99)."""
    torch.manual_seed(0)
    head = make_head(768, 50, "vpt")
    assert head.weight.std().item() == pytest.approx(math.sqrt(2 / 50), rel=0.02)
    assert head.weight.mean().abs().item() < 0.01
    torch.testing.assert_close(head.bias, torch.full((50,), -math.log(99)))
