"""The training schedule's arithmetic, torch-free: the engine runs it, the cost estimate (and the Snakefile,
through it) predicts runs with the same numbers."""

from __future__ import annotations

import math


def lr_factor(epoch: int, warmup_epochs: int, total_epochs: int) -> float:
    """Multiplier of the base lr during `epoch` (0-based): linear warm-up from 0, then half-cosine to 0."""
    if epoch < warmup_epochs:
        return epoch / max(1, warmup_epochs)
    progress = (epoch - warmup_epochs) / max(1, total_epochs - warmup_epochs)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def epochs_for(n_train: int, batch_size: int, epochs: int, min_steps: int = 0) -> int:
    """The configured epochs, raised so that a run takes at least `min_steps` optimiser steps."""
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    return max(epochs, math.ceil(min_steps / steps_per_epoch))


def family_train(train: dict, family_entry: dict | None) -> dict:
    """`train` with a regime family's own `epochs` / `min_steps` where its config entry sets them (the fraction
    family: the same epochs at every fraction, as the VPT paper, rather than the mini benchmark's step floor)."""
    entry = family_entry or {}
    return {**train, **{k: entry[k] for k in ("epochs", "min_steps") if entry.get(k) is not None}}


def eval_epochs(epochs: int, points: int | None) -> set[int] | None:
    """`points` evenly spaced epochs including the last (None: every epoch)."""
    if points is None or points >= epochs:
        return None
    if points == 1:
        return {epochs - 1}
    return {round(i * (epochs - 1) / max(1, points - 1)) for i in range(points)} | {epochs - 1}
