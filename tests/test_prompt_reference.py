"""The prompt methods' forward pass, pinned in float64 against a plain re-implementation of the public VPT protocol.

The reference below reads only the backbone's parameter tensors and writes the ViT math out by hand (patch conv,
CLS, position embedding, pre-norm blocks with multi-head attention and an exact-GELU MLP, final norm); it never
calls timm's Block/Attention forward nor the project's prompt code. Protocol (VPT code, Jia et al. 2022):

- VPT: prompts enter after the position embedding, between CLS and the patches, with no position embedding. At
  the first prompted block they are inserted; before every later prompted block the tokens at the prompt
  positions are replaced by that block's prompts; after the last prompted block they flow on. The final norm runs
  over the whole sequence and the head reads the pooled feature (CLS by default).
- location "add": no tokens are inserted; a prompted block's prompt ((1 + num_patches) x D) is added to every
  token, CLS included, at that block's input (the VPT code's prompt has the position embedding's length).
- VPT-prefix: at every block, the prompts pass through that block's norm1 and qkv projection and only their keys
  and values join the attention; Adapt: the same, minus the prompts whose `keep` entry is False.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from vptft.backbones.factory import create_backbone
from vptft.strategies import get_strategy

P, C, BATCH = 3, 5, 2  # prompt length, classes, images
EPS, HEADS, PATCH, DEPTH, PATCHES = 1e-6, 3, 8, 4, 16  # the mini ViT as described (checked below)
TOL = dict(rtol=1e-10, atol=1e-10)
DIFFERS = 1e-3  # a negative control's smallest max-abs difference


# ---------------------------------------------------------------------------------------------- ViT by hand


def layer_norm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * w + b


def linear(x, W, name):
    return x @ W[f"{name}.weight"].T + W[f"{name}.bias"]


def embed(W, images):
    """Patch conv (stride = patch), flatten to tokens, prepend CLS, add the position embedding."""
    x = F.conv2d(images, W["patch_embed.proj.weight"], W["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    cls = W["cls_token"].expand(x.shape[0], -1, -1)
    return torch.cat([cls, x], dim=1) + W["pos_embed"]


def split_heads(t):
    b, n, d = t.shape
    return t.reshape(b, n, HEADS, d // HEADS).transpose(1, 2)  # (b, heads, n, head_dim)


def qkv(W, i, tokens):
    return linear(
        layer_norm(tokens, W[f"blocks.{i}.norm1.weight"], W[f"blocks.{i}.norm1.bias"]),
        W,
        f"blocks.{i}.attn.qkv",
    ).chunk(3, dim=-1)


def block(W, i, x, kv_prompts=None, keep=None):
    """Pre-norm block i. `kv_prompts` (b, p, D) join only the keys and values; `keep` (p,) bool drops some."""
    q, k, v = qkv(W, i, x)
    if kv_prompts is not None:
        _, pk, pv = qkv(W, i, kv_prompts)
        if keep is not None:
            pk, pv = pk[:, keep], pv[:, keep]  # excluded entirely: as if those prompts did not exist
        k, v = torch.cat([pk, k], dim=1), torch.cat([pv, v], dim=1)
    q, k, v = split_heads(q), split_heads(k), split_heads(v)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
    x = x + linear(out, W, f"blocks.{i}.attn.proj")
    h = linear(
        layer_norm(x, W[f"blocks.{i}.norm2.weight"], W[f"blocks.{i}.norm2.bias"]), W, f"blocks.{i}.mlp.fc1"
    )
    h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
    return x + linear(h, W, f"blocks.{i}.mlp.fc2")


def final_norm(W, x):
    return layer_norm(x, W["norm.weight"], W["norm.bias"])


def pool(x, p, pooling):
    """The head's feature from the final-normed [CLS, p prompts, patches]."""
    return {
        "cls": x[:, 0],
        "image_pool": x[:, 1 + p :].mean(1),
        "prompt_pool": x[:, 1 : 1 + p].mean(1),
        "global_pool": x[:, 1:].mean(1),
    }[pooling]


def head(W, feature):
    return linear(feature, W, "head")


# ---------------------------------------------------------------------------------------------- references


def reference_vpt(W, images, prompts, blocks, pooling="cls", prompt_pos=None):
    """VPT with prepended prompts: `prompts[s]` enters block `blocks[s]` (inserted at the first, replacing the
    prompt positions at the later ones). `prompt_pos` (negative control) adds a position embedding to them."""
    x = embed(W, images)
    p = prompts.shape[1]
    for i in range(DEPTH):
        if i in blocks:
            new = prompts[blocks.index(i)].expand(x.shape[0], -1, -1)
            if prompt_pos is not None:
                new = new + prompt_pos
            patches = x[:, 1:] if i == blocks[0] else x[:, 1 + p :]
            x = torch.cat([x[:, :1], new, patches], dim=1)
        x = block(W, i, x)
    return head(W, pool(final_norm(W, x), p, pooling))


def reference_vpt_add(W, images, prompts, blocks, pooling="cls"):
    """VPT with location "add": `prompts[s]` (1 + num_patches, D) is added to the tokens entering `blocks[s]`."""
    x = embed(W, images)
    for i in range(DEPTH):
        if i in blocks:
            x = x + prompts[blocks.index(i)]
        x = block(W, i, x)
    return head(W, pool(final_norm(W, x), 0, pooling))


def reference_kv(W, images, prompts, keep=None):
    """VPT-prefix / Adapt: block i's prompts join its keys and values only; `keep` (depth, p) masks some out."""
    x = embed(W, images)
    for i in range(DEPTH):
        x = block(W, i, x, prompts[i].expand(x.shape[0], -1, -1), None if keep is None else keep[i])
    return head(W, pool(final_norm(W, x), 0, "cls"))


# ---------------------------------------------------------------------------------------------- fixtures


def randomized_backbone():
    """The mini ViT with every parameter perturbed (biases, norm affines, CLS non-trivial; attention not flat)."""
    torch.manual_seed(0)
    vit = create_backbone("mini_vit", pretrained=False)
    with torch.no_grad():
        for name, param in vit.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.1 * torch.randn_like(param))
    return vit


def build(strategy, **options):
    """The project model in float64/eval, with random prompts and a random non-zero head."""
    model = get_strategy(strategy).build(randomized_backbone(), C, head_init="zero", **options)
    torch.manual_seed(1)
    with torch.no_grad():
        model.prompts.copy_(torch.randn_like(model.prompts))
        model.head.weight.copy_(torch.randn_like(model.head.weight))
        model.head.bias.copy_(torch.randn_like(model.head.bias))
    return model.double().eval()


def weights(model):
    """Backbone and head parameters by name (the reference's only view of the model)."""
    W = {k: v.detach() for k, v in model.backbone.named_parameters()}
    W.update({f"head.{k}": v.detach() for k, v in model.head.named_parameters()})
    return W


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These matmuls are tiny: one thread is far faster than several contending for a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(2)
    return torch.randn(BATCH, 3, 32, 32, dtype=torch.float64)


def logits(model, images):
    with torch.no_grad():
        return model(images)


def max_diff(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------- the reference itself


def test_backbone_is_the_one_the_reference_describes():
    vit = randomized_backbone()
    norms = [m for m in vit.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * DEPTH + 1 and all(m.eps == EPS for m in norms)
    assert len(vit.blocks) == DEPTH and all(b.attn.num_heads == HEADS for b in vit.blocks)
    assert vit.patch_embed.patch_size == (PATCH, PATCH) and vit.patch_embed.num_patches == PATCHES
    assert vit.num_prefix_tokens == 1 and vit.pos_embed.shape[1] == 1 + PATCHES  # CLS carries a position
    assert all(isinstance(b.mlp.act, torch.nn.GELU) and b.mlp.act.approximate == "none" for b in vit.blocks)


def test_reference_without_prompts_is_timms_vit(images):
    """Sanity of the hand-written ViT (timm only compares here): no prompts = the backbone's own features."""
    vit = randomized_backbone().double().eval()
    W = {k: v.detach() for k, v in vit.named_parameters()}
    x = embed(W, images)
    for i in range(DEPTH):
        x = block(W, i, x)
    with torch.no_grad():
        torch.testing.assert_close(final_norm(W, x), vit.forward_features(images), **TOL)


# ---------------------------------------------------------------------------------------------- VPT (prepend)

VPT_CASES = {  # id: (strategy, options, prompted blocks)
    "deep": ("vpt_deep", {}, [0, 1, 2, 3]),
    "shallow": ("vpt_shallow", {}, [0]),
    "deep_layers_1:3": ("vpt_deep", {"layers": "1:3"}, [1, 2]),
    "shallow_layers_2:3": ("vpt_shallow", {"layers": "2:3"}, [2]),
}


@pytest.mark.parametrize("case", VPT_CASES)
def test_vpt_matches_reference(case, images):
    strategy, options, blocks = VPT_CASES[case]
    model = build(strategy, prompt_length=P, **options)
    assert model.prompts.shape == (len(blocks), P, model.backbone.embed_dim)
    expected = reference_vpt(weights(model), images, model.prompts.detach(), blocks)
    torch.testing.assert_close(logits(model, images), expected, **TOL)


@pytest.mark.parametrize("pooling", ["cls", "image_pool", "prompt_pool", "global_pool"])
@pytest.mark.parametrize("strategy", ["vpt_deep", "vpt_shallow"])
def test_vpt_pooling_matches_reference(strategy, pooling, images):
    model = build(strategy, prompt_length=P, pooling=pooling)
    blocks = [0, 1, 2, 3] if strategy == "vpt_deep" else [0]
    expected = reference_vpt(weights(model), images, model.prompts.detach(), blocks, pooling)
    torch.testing.assert_close(logits(model, images), expected, **TOL)


# ---------------------------------------------------------------------------------------------- VPT (add)

ADD_CASES = {  # id: (strategy, options, prompted blocks)
    "deep": ("vpt_deep", {}, [0, 1, 2, 3]),
    "shallow": ("vpt_shallow", {}, [0]),
    "deep_layers_1:3_global_pool": ("vpt_deep", {"layers": "1:3", "pooling": "global_pool"}, [1, 2]),
    "deep_image_pool": ("vpt_deep", {"pooling": "image_pool"}, [0, 1, 2, 3]),
}


@pytest.mark.parametrize("case", ADD_CASES)
def test_vpt_add_matches_reference(case, images):
    strategy, options, blocks = ADD_CASES[case]
    model = build(strategy, location="add", **options)
    assert model.prompts.shape == (len(blocks), 1 + PATCHES, model.backbone.embed_dim)
    expected = reference_vpt_add(
        weights(model), images, model.prompts.detach(), blocks, options.get("pooling", "cls")
    )
    torch.testing.assert_close(logits(model, images), expected, **TOL)


# ---------------------------------------------------------------------------------------------- key/value prompts


def test_vpt_prefix_matches_reference(images):
    model = build("vpt_prefix", prompt_length=P)
    assert model.prompts.shape == (DEPTH, P, model.backbone.embed_dim)
    expected = reference_kv(weights(model), images, model.prompts.detach())
    torch.testing.assert_close(logits(model, images), expected, **TOL)


def adapt_with_masked_tokens():
    model = build("adapt", context_length=P, target_length=1)
    model.keep[0, 1] = False  # one token out
    model.keep[2] = False  # a whole block's prompts out
    model.keep[3, :2] = False  # block 1 keeps all three
    return model


def test_adapt_with_masked_tokens_matches_reference(images):
    model = adapt_with_masked_tokens()
    expected = reference_kv(weights(model), images, model.prompts.detach(), model.keep.clone())
    torch.testing.assert_close(logits(model, images), expected, **TOL)


# ---------------------------------------------------------------------------------------------- negative controls


def test_shallow_semantics_do_not_match_the_deep_model(images):
    model = build("vpt_deep", prompt_length=P)
    shallow = reference_vpt(weights(model), images, model.prompts.detach()[:1], [0])
    assert max_diff(logits(model, images), shallow) > DIFFERS


def test_prompts_with_a_position_embedding_do_not_match(images):
    model = build("vpt_deep", prompt_length=P)
    W = weights(model)
    positioned = reference_vpt(
        W, images, model.prompts.detach(), [0, 1, 2, 3], prompt_pos=W["pos_embed"][:, 1 : 1 + P]
    )
    assert max_diff(logits(model, images), positioned) > DIFFERS


def test_cls_pooling_does_not_match_an_image_pool_model(images):
    model = build("vpt_deep", prompt_length=P, pooling="image_pool")
    cls = reference_vpt(weights(model), images, model.prompts.detach(), [0, 1, 2, 3], "cls")
    assert max_diff(logits(model, images), cls) > DIFFERS


def test_shifted_layers_do_not_match_a_layers_1_3_model(images):
    model = build("vpt_deep", prompt_length=P, layers="1:3")
    for blocks in ([0, 1], [2, 3]):
        shifted = reference_vpt(weights(model), images, model.prompts.detach(), blocks)
        assert max_diff(logits(model, images), shifted) > DIFFERS, blocks


def test_leaving_cls_out_does_not_match_the_add_model(images):
    """The CLS slot has its own prompt: adding only to the patches (an earlier reading) gives other logits."""
    model = build("vpt_deep", location="add")
    W, prompts = weights(model), model.prompts.detach()
    x = embed(W, images)
    for i in range(DEPTH):
        x = block(W, i, torch.cat([x[:, :1], x[:, 1:] + prompts[i, 1:]], dim=1))
    assert max_diff(logits(model, images), head(W, pool(final_norm(W, x), 0, "cls"))) > DIFFERS


def test_ignoring_the_keep_mask_does_not_match_the_adapt_model(images):
    model = adapt_with_masked_tokens()
    unmasked = reference_kv(weights(model), images, model.prompts.detach())
    assert max_diff(logits(model, images), unmasked) > DIFFERS


def test_prefix_prompts_at_block_0_only_do_not_match_the_prefix_model(images):
    model = build("vpt_prefix", prompt_length=P)
    W, prompts = weights(model), model.prompts.detach()
    x = embed(W, images)
    for i in range(DEPTH):
        x = block(W, i, x, prompts[i].expand(BATCH, -1, -1) if i == 0 else None)
    assert max_diff(logits(model, images), head(W, pool(final_norm(W, x), 0, "cls"))) > DIFFERS


def test_prefix_equals_deep_vpt_read_at_cls(images):
    """A consequence of the protocol, not a control: queries and MLPs are per token, so when every block's prompt
    outputs are discarded (deep, all layers) and the head reads CLS, prompt tokens act only as keys and values."""
    model = build("vpt_prefix", prompt_length=P)
    deep = reference_vpt(weights(model), images, model.prompts.detach(), [0, 1, 2, 3])
    torch.testing.assert_close(logits(model, images), deep, **TOL)
