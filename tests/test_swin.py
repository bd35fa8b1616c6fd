"""VPT on Swin through the Swin token interface, checked against a reference written here from the VPT code's
prompted Swin (its block, window attention and patch merging, in its own layout: blocks then merging, flat
tokens, explicit softmax), on a random 2-stage Swin in float64."""

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer

from vptft.strategies import get_strategy
from vptft.strategies.base import tuned_state_dict
from vptft.strategies.prompts import expected_swin_tuned_parameters, prompt_init_bound
from vptft.strategies.tokens import token_interface

P, DIMS, DEPTHS, HEADS, WINDOW, GRID = 3, (16, 32), (2, 2), (2, 4), 4, 16


def _swin(seed=0, img_size=32, **kwargs):
    torch.manual_seed(seed)
    model = SwinTransformer(
        img_size=img_size,
        patch_size=2,
        window_size=WINDOW,
        embed_dim=DIMS[0],
        depths=DEPTHS,
        num_heads=HEADS,
        num_classes=0,
        drop_path_rate=0.0,
        **kwargs,
    )
    with torch.no_grad():  # non-zero biases and norm affines, so a misplaced one shows
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def _relative_index(ws):
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def _shift_mask(h, w, ws, shift):
    img = torch.zeros(1, h, w, 1, dtype=torch.float64)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    windows = _partition(img, ws).reshape(-1, ws * ws)
    mask = windows[:, None, :] - windows[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _partition(x, ws):
    b, h, w, c = x.shape
    return x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def _reverse(windows, ws, h, w):
    b = windows.shape[0] // (h * w // ws // ws)
    return windows.view(b, h // ws, w // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def _ln(x, norm):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _reference_attention(attn, x, mask, p):
    """The VPT code's PromptedWindowAttention: scaled q k^T, zero-padded bias and mask, softmax."""
    b_, n, c = x.shape
    heads = attn.num_heads
    qkv = (
        F.linear(x, attn.qkv.weight, attn.qkv.bias)
        .reshape(b_, n, 3, heads, c // heads)
        .permute(2, 0, 3, 1, 4)
    )
    q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
    scores = q @ k.transpose(-2, -1)
    ws = attn.window_size[0]
    bias = (
        attn.relative_position_bias_table[_relative_index(ws).view(-1)]
        .view(ws * ws, ws * ws, -1)
        .permute(2, 0, 1)
    )
    bias = torch.cat([torch.zeros(heads, p, ws * ws, dtype=x.dtype), bias], dim=1)
    bias = torch.cat([torch.zeros(heads, ws * ws + p, p, dtype=x.dtype), bias], dim=2)
    scores = scores + bias[None]
    if mask is not None:
        nw = mask.shape[0]
        mask = torch.cat([torch.zeros(nw, p, ws * ws, dtype=x.dtype), mask], dim=1)
        mask = torch.cat([torch.zeros(nw, ws * ws + p, p, dtype=x.dtype), mask], dim=2)
        scores = (scores.view(b_ // nw, nw, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b_, n, c)
    return F.linear(out, attn.proj.weight, attn.proj.bias)


def _reference_block(block, x, p, h, w):
    """The VPT code's PromptedSwinTransformerBlock (batch of one: its window-major prompt pairing is exact)."""
    b, _, c = x.shape
    ws, shift = WINDOW, block.shift_size[0]
    shortcut, x = x, _ln(x, block.norm1)
    prompts, x = x[:, :p], x[:, p:].view(b, h, w, c)
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))
    windows = _partition(x, ws).view(-1, ws * ws, c)
    nw = windows.shape[0] // b
    if p:
        windows = torch.cat([prompts[None].expand(nw, -1, -1, -1).reshape(-1, p, c), windows], dim=1)
    out = _reference_attention(block.attn, windows, _shift_mask(h, w, ws, shift) if shift else None, p)
    prompts = out[:, :p].view(-1, b, p, c).mean(0) if p else prompts
    x = _reverse(out[:, p:].reshape(-1, ws, ws, c), ws, h, w)
    if shift:
        x = torch.roll(x, (shift, shift), (1, 2))
    x = shortcut + torch.cat([prompts, x.reshape(b, h * w, c)], dim=1)
    mlp = block.mlp
    hidden = F.gelu(F.linear(_ln(x, block.norm2), mlp.fc1.weight, mlp.fc1.bias))
    return x + F.linear(hidden, mlp.fc2.weight, mlp.fc2.bias)


def _reference_merge(merge, x, p, h, w):
    """The VPT code's PromptedPatchMerging: x0..x3 concatenated, prompts' channels copied four times."""
    b, _, c = x.shape
    prompts, x = x[:, :p], x[:, p:].view(b, h, w, c)
    x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1).view(
        b, -1, 4 * c
    )
    x = torch.cat([torch.cat([prompts] * 4, dim=-1), x], dim=1)
    return F.linear(_ln(x, merge.norm), merge.reduction.weight)


def _reference_vpt(swin, prompts, images):
    """Features of the VPT code's PromptedSwinTransformer: `prompts` maps a block index to the prompts that
    replace the previous ones before it (block 0: prepended after the patch embedding; blocks before the first
    prompted one run unprompted), final norm, mean over all tokens."""
    emb = swin.patch_embed
    x = _ln(F.conv2d(images, emb.proj.weight, emb.proj.bias, stride=2).flatten(2).transpose(1, 2), emb.norm)
    h = w = GRID
    i = p = 0
    for s, stage in enumerate(swin.layers):
        if s:
            x, h, w = _reference_merge(stage.downsample, x, p, h, w), h // 2, w // 2
        for block in stage.blocks:
            if i in prompts:
                x, p = torch.cat([prompts[i].expand(len(images), -1, -1), x[:, p:]], dim=1), P
            x = _reference_block(block, x, p, h, w)
            i += 1
    return _ln(x, swin.norm).mean(1)


@pytest.mark.parametrize("deep", [True, False])
def test_prompted_swin_equals_the_vpt_code_reference(deep):
    model = (
        get_strategy("vpt_deep" if deep else "vpt_shallow").build(_swin(), 5, prompt_length=P).double().eval()
    )
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    prompts = {i: model.prompts[i] for i in range(len(model.prompted))} if deep else {0: model.prompts[0]}
    with torch.no_grad():
        ours = model.forward_head(model.forward_features(images), pre_logits=True)
        reference = _reference_vpt(model.backbone, prompts, images)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-10)
    assert ours.abs().mean() > 0.1


def test_blocks_before_the_first_prompted_one_run_as_timms_and_prompts_start_later():
    """`layers: '2:4'`: stage 1 runs unprompted (timm's own blocks), prompts join at stage 2's first block."""
    model = get_strategy("vpt_deep").build(_swin(), 5, prompt_length=P, layers="2:4").double().eval()
    assert model.prompted == [2, 3]
    images = torch.randn(
        1, 3, 32, 32, dtype=torch.float64
    )  # the reference pairs windows exactly for one image
    prompts = {block: model.prompts[k] for k, block in enumerate(model.prompted)}
    with torch.no_grad():
        ours = model.forward_head(model.forward_features(images), pre_logits=True)
        reference = _reference_vpt(model.backbone, prompts, images)
        unprompted = _reference_vpt(model.backbone, {}, images)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-10)
    assert (ours - unprompted).abs().max() > 1e-3


def test_each_image_sees_only_its_own_windows():
    """Several images per batch: each gets what it gets alone (the VPT code mixes the batch's windows here)."""
    model = get_strategy("vpt_shallow").build(_swin(), 5, prompt_length=P).double().eval()
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        batch = model(images)
        alone = torch.cat([model(image[None]) for image in images])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-12)


def test_token_shapes_at_every_stage_and_tuned_count_in_closed_form():
    model = get_strategy("vpt_deep").build(_swin(), 5, prompt_length=P)
    tokens = token_interface(model.backbone)
    seen = []
    for block in tokens.blocks:
        block.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
        block.norm1.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    model(torch.randn(2, 3, 32, 32))
    # prompted blocks are run by the interface (only their norm1 is called): [prompts, patches] at the stage width
    assert seen == [(2, P + 256, 16), (2, P + 256, 16), (2, P + 64, 32), (2, P + 64, 32)]
    tuned = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (
        tuned
        == expected_swin_tuned_parameters(P, list(DIMS), list(DEPTHS), 5, deep=True)
        == P * 96 + 32 * 5 + 5
    )
    shallow = get_strategy("vpt_shallow").build(_swin(), 5, prompt_length=P)
    assert sum(p.numel() for p in shallow.parameters() if p.requires_grad) == P * 16 + 32 * 5 + 5
    assert expected_swin_tuned_parameters(P, list(DIMS), list(DEPTHS), 5, deep=False) == P * 16 + 32 * 5 + 5
    assert expected_swin_tuned_parameters(1, [128, 256, 512, 1024], [2, 2, 18, 2], 0, deep=True) == 12032
    assert expected_swin_tuned_parameters(1, [128, 256, 512, 1024], [2, 2, 18, 2], 10, deep=False) == (
        128 + 1024 * 10 + 10
    )


def test_prompts_start_uniform_within_the_vpt_codes_bound_from_the_patch_size_and_embedding_width():
    bound = prompt_init_bound(2, DIMS[0])  # one bound for every stage's prompts, as the VPT code
    for layers in ("all", "2:4"):  # prompts of several widths (one tensor each), or of one (one tensor)
        model = get_strategy("vpt_deep").build(_swin(), 5, prompt_length=P, layers=layers)
        tokens = token_interface(model.backbone)
        assert (tokens.patch_size, tokens.dim) == (2, DIMS[0])
        values = torch.cat([prompts.flatten() for prompts in model.prompts])
        assert -bound <= values.min() < -0.9 * bound and 0.9 * bound < values.max() <= bound


def test_tuned_state_holds_the_prompts_and_head_not_the_backbones_buffers():
    swin = _swin()
    swin.register_buffer("running_stat", torch.ones(3))  # a backbone's own saved buffer (as BatchNorm's)
    model = get_strategy("vpt_deep").build(swin, 5, prompt_length=P)
    assert "backbone.running_stat" in model.state_dict()
    assert set(tuned_state_dict(model)) == {n for n, p in model.named_parameters() if p.requires_grad}


def test_a_grid_that_is_not_a_multiple_of_the_window_is_refused():
    model = get_strategy("vpt_shallow").build(_swin(img_size=(32, 40)), 5, prompt_length=P).eval()
    with pytest.raises(ValueError, match="a 8x10 token grid is not a multiple of the 4x4 window"):
        model(torch.randn(1, 3, 32, 40))


def test_attention_dropout_applies_in_training_only():
    """Mixed trains the backbone (train mode): its prompted attention drops; evaluated, it is the reference."""
    model = get_strategy("mixed").build(_swin(attn_drop_rate=0.5), 5, prompt_length=P).double()
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        prompts = {i: model.prompts[i] for i in range(len(model.prompted))}
        reference = _reference_vpt(model.backbone, prompts, images)
        torch.testing.assert_close(
            model.forward_head(model.forward_features(images), pre_logits=True), reference
        )
        model.train()
        assert not torch.equal(model(images), model(images))


STRATEGY_TUNED = {  # what trains on Swin besides the head (VPT paper Table 2's protocols)
    "full": lambda name: name.startswith("backbone."),
    "linear": lambda name: False,
    "bias": lambda name: name.startswith("backbone.") and name.endswith("bias"),
    "partial": lambda name: name.startswith(("backbone.layers.1.blocks.1.", "backbone.norm.")),
    "adapter": lambda name: ".mlp.down." in name or ".mlp.up." in name,
    "lora": lambda name: "lora_" in name,
    "vpt_deep": lambda name: name.startswith("prompts."),
    "vpt_shallow": lambda name: name == "prompts",
    "mixed": lambda name: name.startswith(("backbone.", "prompts.")),
    "sidetune": lambda name: name.startswith(("side.", "alpha")),
}


@pytest.mark.parametrize("strategy", list(STRATEGY_TUNED))
def test_exactly_the_declared_parameters_train_on_swin_and_frozen_ones_stay_bit_identical(strategy):
    torch.manual_seed(0)
    options = {"prompt_length": P} if strategy.startswith(("vpt", "mixed")) else {}
    model = get_strategy(strategy).build(_swin(), 5, **options)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuned = {n for n, p in model.named_parameters() if p.requires_grad}
    assert tuned == {n for n in before if n.startswith("head.") or STRATEGY_TUNED[strategy](n)}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n not in tuned)
    own = [n for n in tuned if not n.startswith("head.")]
    assert (strategy == "linear") == (not own)
    assert strategy == "linear" or any(not torch.equal(before[n], after[n]) for n in own)


def test_what_has_no_swin_form_is_refused():
    with pytest.raises(TypeError, match="key/value prompts have no form on SwinTransformer"):
        get_strategy("vpt_prefix").build(_swin(), 5)
    with pytest.raises(ValueError, match="SwinTransformer has no CLS token"):
        get_strategy("vpt_deep").build(_swin(), 5, pooling="cls")
    model = get_strategy("vpt_deep").build(_swin(), 5, location="add")
    with pytest.raises(ValueError, match="prompt location 'add' has no Swin form"):
        model(torch.randn(1, 3, 32, 32))
