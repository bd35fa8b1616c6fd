"""CLIP's image-text matching as a strategy's head: the class names through a text template and CLIP's text tower,
logits = exp(logit scale) x cosine(image feature in the joint embedding, class text feature). No weight of it is
new: zero-shot CLIP is this head on the frozen image tower; CoOp learns context vectors in place of the
template's words; Adapt / VPT-prefix may prompt the text tower through it.
"""

from __future__ import annotations

import torch
from torch import nn

from vptft.backbones.clip import PLACEHOLDER, TextTower
from vptft.strategies.base import TunedModel


def text_tower_of(backbone) -> TextTower:
    tower = getattr(backbone, "clip_text", None)
    if tower is None:
        raise TypeError(
            f"{type(backbone).__name__} has no text tower: CLIP's image-text head needs a CLIP backbone "
            "(registry family 'clip')"
        )
    return tower


class TextHead(nn.Module):
    """Class text features from `template.format(name)` (or CoOp's `X X ... X name.` with `context_length`
    learned vectors in place of the X's), matched with the image feature. The text tower stays frozen; while
    nothing on the text side trains, the class features are computed once per device."""

    bias = None  # no classifier bias (the engine exempts a classifier's bias from weight decay)

    def __init__(self, text: TextTower, class_names: list[str], template: str, context_length: int = 0):
        super().__init__()
        self.text = text
        for param in text.parameters():
            param.requires_grad_(False)
        names = [name.replace("_", " ") for name in class_names]
        if context_length:
            texts = [f"{' '.join([PLACEHOLDER] * context_length)} {name}." for name in names]
            self.context = nn.Parameter(torch.empty(context_length, text.width).normal_(0.0, 0.02))
        else:
            texts = [template.format(name) for name in names]
            self.context = None
        self.texts = texts
        self.register_buffer("tokens", text.tokenize(texts), persistent=False)
        self._frozen: torch.Tensor | None = None

    def class_features(self, prefixes=None, keep=None) -> torch.Tensor:
        if self.context is None and prefixes is None:
            if self._frozen is None or self._frozen.device != self.tokens.device:
                with torch.no_grad():
                    self._frozen = self.text.encode(self.tokens)
            return self._frozen
        return self.text.encode(self.tokens, self.context, prefixes, keep)

    def forward(self, pooled: torch.Tensor, prefixes=None, keep=None) -> torch.Tensor:
        return self.text.logits(self.text.project_image(pooled), self.class_features(prefixes, keep))


def text_head(backbone, class_names: list[str], template: str, n_ctx: int = 0) -> TextHead:
    """CLIP's image-text head of a CLIP backbone (with CoOp's `n_ctx` learned context vectors)."""
    return TextHead(text_tower_of(backbone), class_names, template, n_ctx)


def build_with_head(backbone, num_classes, head_init, head):
    """The frozen image tower read by `head`: zero-shot CLIP (nothing trains), CoOp (its context trains)."""
    return TunedModel(backbone, num_classes, head_init, head=head)
