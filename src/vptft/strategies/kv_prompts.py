"""Prompts that join only the keys and values of self-attention, at every block: VPT-prefix (VPT paper: cheaper
at test time, the sequence does not grow) and Adapt (prompts pruned by saliency to a total budget).

A prompt token of block i passes through that block's norm and key/value projections like a sequence token but
produces no output. Adapt gates each token with a binary mask: starting from all-ones, every `prune_every`
minibatches after `warmup_epochs` the `prune_tokens` active tokens with the lowest saliency accumulated over
those minibatches are masked out (removed from the attention), until `target_length` tokens remain over all
blocks; the per-block context lengths that result are recorded in metrics.json.

On a CLIP backbone (`towers`: image, text or both) the text tower's blocks get key/value prompts too, read by
CLIP's image-text head; Adapt then ranks the tokens of both towers together (its Algorithm 1: one budget, one
global ranking), so the budget may end up anywhere between the towers.
"""

from __future__ import annotations

import torch
from torch import nn

from vptft.strategies.base import TunedModel
from vptft.strategies.prompts import prompt_init_bound
from vptft.strategies.tokens import token_interface

TOWERS = ("image", "text", "both")


class KVPromptModel(TunedModel):
    """Key/value prompts at every block of the image tower (`prompts`, `keep`) and, on CLIP with `towers` text /
    both, of the text tower (`text_prompts`, `text_keep`); a tower without prompts holds a zero-length set."""

    def __init__(
        self, backbone, num_classes, head_init, prompt_length, prompt_dropout, towers="image", head=None
    ):
        super().__init__(backbone, num_classes, head_init, head=head)
        self.tokens = token_interface(backbone)
        t = self.tokens
        if not t.kv_prefix:
            raise TypeError(f"key/value prompts have no form on {type(backbone).__name__} here (ViT only)")
        if towers != "image" and not hasattr(self.head, "text"):
            raise ValueError(f"towers {towers!r}: text prompts need CLIP's image-text head (head 'text')")
        bound = prompt_init_bound(t.patch_size, t.dim)
        image_length = prompt_length if towers in ("image", "both") else 0
        self.prompts = nn.Parameter(torch.empty(t.depth, image_length, t.dim).uniform_(-bound, bound))
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        self.register_buffer("keep", torch.ones(t.depth, image_length, dtype=torch.bool))
        self.text_prompts = None
        if towers in ("text", "both"):
            text = self.head.text
            bound = prompt_init_bound(t.patch_size, text.width)
            shape = (len(text.blocks), prompt_length, text.width)
            self.text_prompts = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
            self.register_buffer("text_keep", torch.ones(shape[:2], dtype=torch.bool))

    def prompt_sets(self) -> list[tuple[str, nn.Parameter, torch.Tensor]]:
        """(tower, prompts, keep) of every prompted tower, image first."""
        sets = [("image", self.prompts, self.keep)] if self.prompts.shape[1] else []
        if self.text_prompts is not None:
            sets.append(("text", self.text_prompts, self.text_keep))
        return sets

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens.embed(x)
        for i, block in enumerate(self.tokens.blocks):
            if not self.prompts.shape[1]:
                x = block(x)
                continue
            prefix = self.prompt_dropout(self.prompts[i].expand(x.shape[0], -1, -1)).to(x.dtype)
            keep = None if bool(self.keep[i].all()) else self.keep[i]
            x = self.tokens.block_with_kv_prefix(block, x, prefix, keep)
        return self.tokens.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.backbone.forward_head(x, pre_logits=True)
        if pre_logits:
            return x
        if self.text_prompts is None:
            return self.head(x)
        prefixes = list(self.prompt_dropout(self.text_prompts))
        keep = [None if bool(k.all()) else k for k in self.text_keep]
        return self.head(x, prefixes, keep)


SALIENCY = {
    "snip": lambda p, g: (g * p).abs().sum(-1),  # |dL/dP * P|, summed over a token's features
    "grad_norm": lambda p, g: g.norm(dim=-1),
    "l2": lambda p, g: p.norm(dim=-1),
}


class AdaptModel(KVPromptModel):
    def __init__(
        self,
        backbone,
        num_classes,
        head_init,
        context_length,
        target_length,
        saliency,
        prune_every,
        prune_tokens,
        warmup_epochs,
        prompt_dropout,
        towers="image",
        head=None,
    ):
        super().__init__(backbone, num_classes, head_init, context_length, prompt_dropout, towers, head)
        self.target_length, self.saliency = target_length, saliency
        self.prune_every, self.prune_tokens, self.warmup_epochs = prune_every, prune_tokens, warmup_epochs
        # per tower: saliency accumulated since the last pruning step and the pruning history (Adapt's Figure
        # 3: the epoch each token was pruned in, -1 while it is active); the minibatches covered (resumable)
        for prefix, keep in self._keeps():
            self.register_buffer(f"{prefix}score", torch.zeros(keep.shape, dtype=torch.float64))
            self.register_buffer(f"{prefix}pruned_epoch", torch.full(keep.shape, -1, dtype=torch.int64))
        self.register_buffer("batches", torch.zeros((), dtype=torch.int64))

    def _keeps(self) -> list[tuple[str, torch.Tensor]]:
        """(buffer-name prefix, keep mask) of each tower that has prompts: '' image, 'text_' text."""
        return [("" if tower == "image" else "text_", keep) for tower, _, keep in self.prompt_sets()]

    def active_tokens(self) -> int:
        return sum(int(keep.sum()) for _, _, keep in self.prompt_sets())

    def after_backward(self, epoch: int) -> None:
        sets = self.prompt_sets()
        if epoch < self.warmup_epochs or self.active_tokens() <= self.target_length:
            return
        if any(prompts.grad is None for _, prompts, _ in sets):
            return
        with torch.no_grad():
            for (prefix, _), (_, prompts, _) in zip(self._keeps(), sets):
                getattr(self, f"{prefix}score").add_(SALIENCY[self.saliency](prompts, prompts.grad).double())
        self.batches += 1
        if int(self.batches) % self.prune_every == 0:
            self.prune(epoch)

    def prune(self, epoch: int) -> None:
        """Mask out the lowest-saliency active tokens over every prompted tower together (at most prune_tokens,
        never below target_length), noting the epoch in the history."""
        keeps = self._keeps()
        with torch.no_grad():
            n = min(self.prune_tokens, self.active_tokens() - self.target_length)
            scores = [
                getattr(self, f"{p}score").masked_fill(~keep, float("inf")).flatten() for p, keep in keeps
            ]
            if n > 0:
                ranked = torch.cat(scores).argsort(stable=True)[:n]
                start = 0
                for (prefix, keep), score in zip(keeps, scores):
                    mine = ranked[(ranked >= start) & (ranked < start + len(score))] - start
                    keep.view(-1)[mine] = False
                    getattr(self, f"{prefix}pruned_epoch").view(-1)[mine] = epoch
                    start += len(score)
            for prefix, _ in keeps:
                getattr(self, f"{prefix}score").zero_()

    def stored_parameters(self) -> int:
        pruned = sum(int((~keep).sum()) * prompts.shape[-1] for _, prompts, keep in self.prompt_sets())
        return super().stored_parameters() - pruned

    def summary(self) -> dict:
        towers = {tower: keep for tower, _, keep in self.prompt_sets()}
        out = {
            "active_tokens": self.active_tokens(),
            "target_reached": self.active_tokens() == self.target_length,
        }
        if "image" in towers:
            out["context_lengths"] = self.keep.sum(1).tolist()
            out["pruned_epoch"] = (
                self.pruned_epoch.tolist()
            )  # layer x token: the epoch it was pruned in, -1 kept
        if "text" in towers:
            out["text_context_lengths"] = self.text_keep.sum(1).tolist()
            out["text_pruned_epoch"] = self.text_pruned_epoch.tolist()
        return out


def build_prefix(backbone, num_classes, head_init, **options):
    return KVPromptModel(backbone, num_classes, head_init, **options)


def build_adapt(backbone, num_classes, head_init, **options):
    return AdaptModel(backbone, num_classes, head_init, **options)
