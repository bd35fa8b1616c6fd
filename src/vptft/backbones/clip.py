"""CLIP as two towers: the image tower is the registry entry's timm ViT (so every image-side strategy drives it
through the ViT token interface), the text tower and the joint embedding are open_clip's modules, kept here.

A CLIP checkpoint is one open_clip state dict (`visual.*` for the image tower, `token_embedding`, `transformer`,
`ln_final`, `text_projection`, `logit_scale` for the rest): timm's own converter maps its image tower onto the
ViT, open_clip's `CLIP` module reads the rest. The workflow's mini CLIP is pre-trained as an open_clip `CLIP` and
saved in that layout, so it loads exactly as a downloaded file does.

`TextTower.encode` is the text transformer with two insertion points the prompt strategies use: learned context
vectors in place of the template's placeholder words (CoOp) and key/value prompts at every block (Adapt, VPT-
prefix), each prompt token gated by a keep mask.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from vptft.backbones import ClipTowers
from vptft.backbones.checkpoints import LayoutError, _check, _read

PLACEHOLDER = "X"  # the word CoOp's learned context vectors replace in the tokenized template
NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size")  # ints in OpenAI's converted files


def open_clip_model(towers: ClipTowers, image_size: int, depth: int, width: int) -> CLIP:
    """open_clip's `CLIP` module of this configuration (random weights)."""
    return CLIP(**towers.open_clip_config(image_size, depth, width))


class TextTower(nn.Module):
    """open_clip's text transformer, final norm and projection, with the image tower's projection and the logit
    scale: everything CLIP's image-text matching needs besides the image tower's pooled feature."""

    def __init__(self, clip: CLIP, context_length: int):
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.image_projection = clip.visual.proj  # (image width, embed dim)
        self.logit_scale = clip.logit_scale
        self.context_length = context_length
        self.width = clip.token_embedding.embedding_dim
        self.register_buffer("causal_mask", clip.attn_mask, persistent=False)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.resblocks

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """CLIP's BPE tokens (SOT ... EOT, zero-padded), refused where a text does not fit the context."""
        lengths = (open_clip.tokenize(texts, context_length=1024) != 0).sum(1)  # SOT ... EOT, untruncated
        cut = [text for text, n in zip(texts, lengths.tolist()) if n > self.context_length]
        if cut:
            raise ValueError(f"{cut[0]!r} does not fit CLIP's {self.context_length}-token text context")
        tokens = open_clip.tokenize(texts, context_length=self.context_length)
        return tokens

    def encode(
        self,
        tokens: torch.Tensor,
        context: torch.Tensor | None = None,
        prefixes: list[torch.Tensor | None] | None = None,
        keep: list[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Projected text features (n, embed) of `tokens` (n, L). `context` (c, width) replaces the embeddings of
        positions 1..c (CoOp's placeholder words); `prefixes[i]` (p, width) are block i's key/value prompts,
        `keep[i]` (p,) bool which of them attend."""
        x = self.token_embedding(tokens)
        if context is not None:
            x = torch.cat([x[:, :1], context.expand(len(x), -1, -1).to(x.dtype), x[:, 1 + len(context) :]], 1)
        x = x + self.positional_embedding
        for i, block in enumerate(self.blocks):
            prefix = prefixes[i] if prefixes is not None else None
            if prefix is None:
                x = block(x, attn_mask=self.causal_mask)
            else:
                x = _block_with_kv_prefix(block, x, prefix, keep[i] if keep else None, self.causal_mask)
        x = self.ln_final(x)
        pooled = x[torch.arange(len(x), device=x.device), tokens.argmax(-1)]  # the EOT token (highest id)
        return pooled @ self.text_projection

    def project_image(self, pooled: torch.Tensor) -> torch.Tensor:
        """The image tower's pooled feature in the joint embedding."""
        return pooled @ self.image_projection

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """CLIP's image-text matching: the logit scale times the cosine similarity."""
        return (
            self.logit_scale.exp()
            * F.normalize(image_features, dim=-1)
            @ F.normalize(text_features, dim=-1).T
        )


def _block_with_kv_prefix(block, x, prefix, keep, causal_mask):
    """open_clip's residual block with `prefix` (p, width) joining only the keys and values of its attention
    (through the block's first norm, like a sequence token); every text position sees the kept prompts."""
    p, n = len(prefix), x.shape[1]
    normed = block.ln_1(x)
    kv = torch.cat([block.ln_1(prefix).expand(len(x), -1, -1).to(x.dtype), normed], 1)
    prompt_cols = torch.zeros(n, p, dtype=x.dtype, device=x.device)
    if keep is not None:
        prompt_cols = prompt_cols.masked_fill(~keep.to(x.device)[None], float("-inf"))
    mask = torch.cat([prompt_cols, causal_mask.to(x.dtype)], 1)
    out = block.attn(normed, kv, kv, need_weights=False, attn_mask=mask)[0]
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def text_tower(
    towers: ClipTowers, image: VisionTransformer, state: dict | None = None, path: Path | None = None
) -> TextTower:
    """The text tower of a CLIP whose image tower is `image`: random weights, or those of `state` (an open_clip
    state dict read from `path`), refused unless every tensor of the model is there in its shape."""
    size, depth, width = image.patch_embed.img_size[0], len(image.blocks), image.embed_dim
    clip = open_clip_model(towers, size, depth, width)
    if state is not None:
        shapes = {k: v.shape for k, v in clip.state_dict().items()}
        missing = [k for k in shapes if k not in state]
        wrong = [k for k in shapes if k in state and state[k].shape != shapes[k]]
        unexpected = [k for k in state if k not in shapes]
        if missing or wrong or unexpected:
            raise LayoutError(
                f"{path}: not a CLIP checkpoint of this backbone (missing {missing[:5]}, shape differs "
                f"{wrong[:5]}, unexpected {unexpected[:5]})"
            )
        clip.load_state_dict(state)
    tower = TextTower(clip, towers.context_length)
    del clip.visual  # the image tower is the timm ViT; only its projection stays (in the text tower)
    return tower


def load_open_clip(model: VisionTransformer, path: Path, towers: ClipTowers) -> None:
    """An open_clip state dict (`open_clip_model.safetensors` / `open_clip_pytorch_model.bin`, or the workflow's
    own mini CLIP): its image tower into the timm ViT through timm's converter, its text tower attached to the
    model as `model.clip_text` (open_clip's model is built once, for the shape check and the weights)."""
    state = {k: v for k, v in _read(path).items() if k not in NON_WEIGHTS}
    if "visual.class_embedding" not in state or "token_embedding.weight" not in state:
        raise LayoutError(
            f"{path}: not an open_clip CLIP checkpoint (no visual.class_embedding / token_embedding.weight; "
            f"keys start {sorted(state)[:5]})"
        )
    image = {k: v for k, v in checkpoint_filter_fn(state, model).items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(image, strict=False)
    _check(path, "CLIP image tower", missing, unexpected)
    model.clip_text = text_tower(towers, model, state, path)


def attach_text_tower(model: VisionTransformer, towers: ClipTowers) -> None:
    """A randomly initialised text tower (a CLIP backbone built without weights: tests, benches)."""
    model.clip_text = text_tower(towers, model)
