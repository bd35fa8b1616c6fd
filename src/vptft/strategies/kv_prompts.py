"""Prompts that join only the keys and values of self-attention, at every block: VPT-prefix (VPT paper: cheaper
at test time, the sequence does not grow) and Adapt (prompts pruned by saliency to a total budget).

A prompt token of block i passes through that block's norm and key/value projections like a sequence token but
produces no output. Adapt gates each token with a binary mask: starting from all-ones, every `prune_every`
minibatches after `warmup_epochs` the `prune_tokens` active tokens with the lowest saliency accumulated over
those minibatches are masked out (removed from the attention), until `target_length` tokens remain over all
blocks; the per-block context lengths that result are recorded in metrics.json.
"""

from __future__ import annotations

import torch
from torch import nn

from vptft.strategies.base import TunedModel
from vptft.strategies.prompts import prompt_init_bound
from vptft.strategies.tokens import token_interface


class KVPromptModel(TunedModel):
    def __init__(self, backbone, num_classes, head_init, prompt_length, prompt_dropout):
        super().__init__(backbone, num_classes, head_init)
        self.tokens = token_interface(backbone)
        t = self.tokens
        if not t.kv_prefix:
            raise TypeError(f"key/value prompts have no form on {type(backbone).__name__} here (ViT only)")
        bound = prompt_init_bound(t.patch_size, t.dim)
        self.prompts = nn.Parameter(torch.empty(t.depth, prompt_length, t.dim).uniform_(-bound, bound))
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        self.register_buffer("keep", torch.ones(t.depth, prompt_length, dtype=torch.bool))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens.embed(x)
        for i, block in enumerate(self.tokens.blocks):
            prefix = self.prompt_dropout(self.prompts[i].expand(x.shape[0], -1, -1)).to(x.dtype)
            keep = None if bool(self.keep[i].all()) else self.keep[i]
            x = self.tokens.block_with_kv_prefix(block, x, prefix, keep)
        return self.tokens.norm(x)


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
    ):
        super().__init__(backbone, num_classes, head_init, context_length, prompt_dropout)
        self.target_length, self.saliency = target_length, saliency
        self.prune_every, self.prune_tokens, self.warmup_epochs = prune_every, prune_tokens, warmup_epochs
        # saliency accumulated since the last pruning step, and the minibatches it covers (resumable state)
        self.register_buffer("score", torch.zeros(self.keep.shape, dtype=torch.float64))
        self.register_buffer("batches", torch.zeros((), dtype=torch.int64))
        # the pruning history (Adapt's Figure 3): the epoch each token was pruned in, -1 while it is active
        self.register_buffer("pruned_epoch", torch.full(self.keep.shape, -1, dtype=torch.int64))

    def after_backward(self, epoch: int) -> None:
        if (
            epoch < self.warmup_epochs
            or int(self.keep.sum()) <= self.target_length
            or self.prompts.grad is None
        ):
            return
        with torch.no_grad():
            self.score += SALIENCY[self.saliency](self.prompts, self.prompts.grad).double()
        self.batches += 1
        if int(self.batches) % self.prune_every == 0:
            self.prune(epoch)

    def prune(self, epoch: int) -> None:
        """Mask out the lowest-saliency active tokens (at most prune_tokens, never below target_length), noting
        the epoch in the history."""
        with torch.no_grad():
            n = min(self.prune_tokens, int(self.keep.sum()) - self.target_length)
            if n > 0:
                ranked = self.score.masked_fill(~self.keep, float("inf")).flatten().argsort(stable=True)
                self.keep.view(-1)[ranked[:n]] = False
                self.pruned_epoch.view(-1)[ranked[:n]] = epoch
            self.score.zero_()

    def stored_parameters(self) -> int:
        return super().stored_parameters() - int((~self.keep).sum()) * self.prompts.shape[-1]

    def summary(self) -> dict:
        return {
            "context_lengths": self.keep.sum(1).tolist(),
            "active_tokens": int(self.keep.sum()),
            "target_reached": int(self.keep.sum()) == self.target_length,
            "pruned_epoch": self.pruned_epoch.tolist(),  # layer x token: the epoch it was pruned in, -1 kept
        }


def build_prefix(backbone, num_classes, head_init, **options):
    return KVPromptModel(backbone, num_classes, head_init, **options)


def build_adapt(backbone, num_classes, head_init, **options):
    return AdaptModel(backbone, num_classes, head_init, **options)
