"""Where strategies meet a backbone family: its token embedding, blocks, final norm and pooling, the weights
Partial / Adapter / LoRA tune, the layer GradCAM reads and the patch grid.

Every strategy and analysis is written once against this interface (the registry in vptft.backbones holds the
facts the workflow plans with); a new backbone family (e.g. Swin) adds its own class here instead of a copy of
every strategy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer, window_partition, window_reverse
from timm.models.vision_transformer import VisionTransformer
from torch import nn


class ViTTokens:
    """The token-insertion point of a timm VisionTransformer: [prefix (CLS), prompts, patches]."""

    kv_prefix = True  # key/value prompts (VPT-prefix, Adapt) have a form here
    lora_targets = ("qkv",)  # the attention projections LoRA adapts

    def __init__(self, vit: VisionTransformer):
        self.vit = vit
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.dim = vit.embed_dim
        self.depth = len(vit.blocks)
        self.block_dims = [vit.embed_dim] * self.depth  # token width at each block's input
        self.patch_size = vit.patch_embed.patch_size[0]
        self.num_patches = vit.patch_embed.num_patches

    @property
    def blocks(self):
        return self.vit.blocks

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's final-normed tokens (B, N, D)."""
        return self.vit.forward_features(x)

    def forward_prompted(self, x: torch.Tensor, prompts_at, location: str, proj: nn.Module | None = None):
        """Final-normed [prefix, prompts, patches] of an image batch. Before block i, `prompts_at(i, x)` gives the
        block's prompts (B, p, D) or None: inserted after the prefix at the first prompted block, replacing the
        previous block's outputs at those positions at the later ones (None: they flow on); `location="add"`
        adds them to the tokens instead (one per token, CLS included, as the VPT code). `proj`: a patch
        projection replacing the backbone's (the concat-channel ablation's, for an image with extra channels)."""
        x = self.embed(x, proj)
        n, p = self.num_prefix_tokens, 0
        for i, block in enumerate(self.vit.blocks):
            prompts = prompts_at(i, x)
            if prompts is not None:
                if location == "add":
                    x = x + prompts
                else:
                    x = torch.cat([x[:, :n], prompts, x[:, n + p :]], dim=1)
                    p = prompts.shape[1]
            x = block(x)
        return self.norm(x)

    def last_cls(self, x: torch.Tensor) -> torch.Tensor:
        """The CLS token the last block outputs, before the final norm (B, D): what the VPT code averages per
        class for its class-prototype prompt init ('final-cls')."""
        return self.vit.blocks(self.embed(x))[:, 0]

    def embed(self, x: torch.Tensor, proj: nn.Module | None = None) -> torch.Tensor:
        """Image -> [prefix (CLS), patches] after the position embedding, its dropout and the pre-norm."""
        vit = self.vit
        tokens = vit.patch_embed(x) if proj is None else self.patchify(x, proj)
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(tokens)))

    def patchify(self, pixels: torch.Tensor, proj: nn.Module | None = None) -> torch.Tensor:
        """Pixels (B, C, H, W) -> patch tokens (B, N, D) through the patch embedding's projection (or `proj`) and
        norm, without position embedding: how pixel-space prompts become tokens."""
        patch_embed = self.vit.patch_embed
        x = (proj or patch_embed.proj)(pixels).flatten(2).transpose(1, 2)
        return patch_embed.norm(x)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's own feature of its final-normed tokens, through timm's `forward_head`: the CLS token, or
        (MAE's `global_pool='avg'`) the mean of every token after the prefix, prompts included, through
        `fc_norm`, as the VPT code pools MAE."""
        return self.vit.forward_head(x, pre_logits=True)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(rows, columns) of the patch grid."""
        return tuple(self.vit.patch_embed.grid_size)

    @property
    def cam_layer(self) -> nn.Module:
        """The last block's first norm: its patch tokens still reach the CLS token through the last attention."""
        return self.vit.blocks[-1].norm1

    def last_blocks(self, k: int) -> tuple[str, ...]:
        """Parameter-name prefixes of Partial-k: the last k blocks, the final norm and fc_norm where it exists."""
        return tuple(f"blocks.{i}." for i in range(self.depth - k, self.depth)) + ("norm.", "fc_norm.")

    def wrap_mlps(self, wrap) -> None:
        """Replace every block's FFN `mlp` by `wrap(mlp, width)` (adapters)."""
        for block in self.vit.blocks:
            block.mlp = wrap(block.mlp, self.dim)

    @staticmethod
    def block_with_kv_prefix(block, x: torch.Tensor, prefix: torch.Tensor, keep: torch.Tensor | None = None):
        """One block where `prefix` tokens (B, p, D) join only the keys and values of self-attention (queries and
        outputs are the sequence's own); `keep` (p,) bool drops prefix tokens from the attention entirely. The
        rest is timm's Attention: its q / k norms, output norm and output gate (where the model has them)."""
        attn = block.attn
        b, n, _ = x.shape
        heads = attn.num_heads
        head_dim = getattr(attn, "head_dim", x.shape[-1] // heads)  # older timm: no head_dim, width = dim

        def project(tokens):
            qkv = attn.qkv(tokens).reshape(b, tokens.shape[1], 3, heads, head_dim)
            return qkv.permute(2, 0, 3, 1, 4).unbind(0)

        normed = block.norm1(x)
        gate = getattr(attn, "gate", None)
        gate = gate(normed).sigmoid() if gate is not None else None
        q, k, v = project(normed)
        _, pk, pv = project(block.norm1(prefix))
        q, k, pk = attn.q_norm(q), attn.k_norm(k), attn.k_norm(pk)
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        mask = None
        if keep is not None:
            mask = torch.cat([keep.to(x.device), torch.ones(n, dtype=torch.bool, device=x.device)])[
                None, None, None
            ]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=attn.attn_drop.p if attn.training else 0.0
        )
        out = getattr(attn, "norm", torch.nn.Identity())(out.transpose(1, 2).reshape(b, n, heads * head_dim))
        if gate is not None:
            out = out * gate
        x = x + block.drop_path1(block.ls1(attn.proj_drop(attn.proj(out))))
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


class SwinTokens:
    """The token-insertion point of a timm SwinTransformer, as the VPT code prompts Swin: a block's prompts
    (B, p, C) are copied into every attention window, attend to and from its patches (relative-position bias and
    shift mask zero-padded for them) and leave it as their average over the windows; they pass the residual
    and the MLP like patch tokens; patch merging gives them their channels copied four times through the
    merge's norm and linear layer; the final norm runs over all tokens, and the pooled feature is their mean,
    prompts included. Tokens travel flat as [prompts, patches] (B, p + H * W, C); timm's blocks are NHWC.

    One deviation: the VPT code pairs windows with prompts and averages prompt outputs window-major while its
    windows are batch-major, so with several images per batch a prompt mixes the images' windows; here each
    image's prompts see only its own windows (the same where prompts are fresh at every block, as VPT-deep)."""

    num_prefix_tokens = 0
    kv_prefix = False
    lora_targets = ("qkv",)

    def __init__(self, swin: SwinTransformer):
        self.swin = swin
        self.stage_blocks = [list(stage.blocks) for stage in swin.layers]
        self.depth = sum(map(len, self.stage_blocks))
        self.block_dims = [block.dim for blocks in self.stage_blocks for block in blocks]
        self.dim = self.block_dims[0]
        self.patch_size = swin.patch_embed.patch_size[0]
        self.num_patches = swin.patch_embed.num_patches

    @property
    def blocks(self):
        return [block for blocks in self.stage_blocks for block in blocks]

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.swin.patch_embed.grid_size)

    @property
    def cam_layer(self) -> nn.Module:
        raise TypeError(
            "GradCAM here reads a ViT's patch tokens; a Swin backbone has no such layer in this workflow"
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.swin.forward_features(x).flatten(1, 2)

    def last_cls(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("Swin has no CLS token: the class-prototype prompt init averages a ViT's CLS outputs")

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.swin.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of every final-normed token, prompts included (without prompts: timm's average pooling)."""
        return x.mean(1)

    def last_blocks(self, k: int) -> tuple[str, ...]:
        names = [
            f"layers.{s}.blocks.{j}."
            for s, blocks in enumerate(self.stage_blocks)
            for j in range(len(blocks))
        ]
        return tuple(names[len(names) - k :]) + ("norm.",)

    def wrap_mlps(self, wrap) -> None:
        for block in self.blocks:
            block.mlp = wrap(block.mlp, block.dim)

    def forward_prompted(self, x: torch.Tensor, prompts_at, location: str, proj: nn.Module | None = None):
        """As ViTTokens.forward_prompted, through Swin's stages (prompts at the front; `add` has no Swin form)."""
        if location != "prepend":
            raise ValueError(
                f"prompt location {location!r} has no Swin form (prepend only, as in the VPT code)"
            )
        x = self.swin.patch_embed(x)
        b, h, w, c = x.shape
        x, p, i = x.reshape(b, h * w, c), 0, 0
        for stage, blocks in zip(self.swin.layers, self.stage_blocks):
            if not isinstance(stage.downsample, nn.Identity):
                x, (h, w) = self._merge(stage.downsample, x, p, (h, w))
            for block in blocks:
                prompts = prompts_at(i, x)
                if prompts is not None:
                    x, p = torch.cat([prompts, x[:, p:]], dim=1), prompts.shape[1]
                x = (
                    self._block(block, x, p, (h, w))
                    if p
                    else block(x.reshape(b, h, w, -1)).reshape(b, h * w, -1)
                )
                i += 1
        return self.norm(x)

    @staticmethod
    def _merge(merge, x: torch.Tensor, p: int, hw: tuple[int, int]):
        """timm's PatchMerging on the patches; the prompts' channels copied four times through its norm and
        linear layer (the VPT code's PromptedPatchMerging without prompt upsampling)."""
        b, _, c = x.shape
        patches = merge(x[:, p:].reshape(b, *hw, c))
        out = patches.flatten(1, 2)
        if p:
            out = torch.cat([merge.reduction(merge.norm(x[:, :p].repeat(1, 1, 4))), out], dim=1)
        return out, tuple(patches.shape[1:3])

    @staticmethod
    def _block(block, x: torch.Tensor, p: int, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        b, _, c = x.shape
        (wh, ww), shift = block.window_size, block.shift_size
        if h % wh or w % ww:
            raise ValueError(
                f"a {h}x{w} token grid is not a multiple of the {wh}x{ww} window (no padding here)"
            )
        shortcut, x = x, block.norm1(x)
        prompts, patches = x[:, :p], x[:, p:].reshape(b, h, w, c)
        if any(shift):
            patches = torch.roll(patches, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = window_partition(patches, (wh, ww)).reshape(
            -1, wh * ww, c
        )  # (B * nW, area, C), batch-major
        n_windows = windows.shape[0] // b
        prompts = prompts[:, None].expand(b, n_windows, p, c).reshape(b * n_windows, p, c)
        out = _prompted_window_attention(block.attn, torch.cat([prompts, windows], dim=1), block.attn_mask, p)
        prompts = out[:, :p].reshape(b, n_windows, p, c).mean(1)
        patches = window_reverse(out[:, p:].reshape(-1, wh, ww, c), (wh, ww), h, w)
        if any(shift):
            patches = torch.roll(patches, shifts=shift, dims=(1, 2))
        x = shortcut + block.drop_path1(torch.cat([prompts, patches.reshape(b, h * w, c)], dim=1))
        return x + block.drop_path2(block.mlp(block.norm2(x)))


def _prompted_window_attention(attn, x: torch.Tensor, mask: torch.Tensor | None, p: int) -> torch.Tensor:
    """timm's WindowAttention over [prompts, window tokens], its relative-position bias and shift mask
    zero-padded for the p prompt positions (prompts attend to and from every token of the window)."""
    batch, n, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = F.pad(attn._get_rel_pos_bias(), (p, 0, p, 0))  # (1, heads, n, n)
    if mask is not None:  # (nW, area, area): window w of every image
        n_windows = mask.shape[0]
        bias = (bias + F.pad(mask, (p, 0, p, 0))[:, None]).repeat(batch // n_windows, 1, 1, 1)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias.to(q.dtype), dropout_p=attn.attn_drop.p if attn.training else 0.0
    )
    return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(batch, n, -1)))


def token_interface(backbone) -> ViTTokens | SwinTokens:
    """The token-insertion point of `backbone`'s family."""
    if isinstance(backbone, VisionTransformer):
        return ViTTokens(backbone)
    if isinstance(backbone, SwinTransformer):
        return SwinTokens(backbone)
    raise TypeError(
        f"{type(backbone).__name__}: no token-insertion point for this backbone family; "
        "add one in vptft/strategies/tokens.py"
    )
