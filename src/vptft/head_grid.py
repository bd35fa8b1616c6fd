"""Train a grid of linear heads in lockstep on cached features.

Linear probing's sweep trains the same head on the same cached features under many (lr, wd) points, each with the
same seed, batch order and schedule. Run one after another, the grid costs far more than the one feature pass
it reads (each step is a tiny matmul wrapped in Python); stacked, every step is one batched matmul and one
SGD update for all points. Each point keeps the lr, decay rules and momentum its own optimiser would have
(`engine.make_optimizer`), so the arithmetic is the sequential loop's up to float rounding (a test compares them).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from vptft.data import SplitData
from vptft.engine import EVAL_BATCH, FitConfig, _autocast, make_optimizer, set_precision
from vptft.schedule import lr_factor

SHARED_FIELDS = ("epochs", "warmup_epochs", "batch_size", "seed", "eval_epochs", "precision")


def can_stack(heads: list, cfgs: list[FitConfig]) -> bool:
    """Whether these heads can train together: plain linear layers of one shape under SGD, one schedule and
    batch order."""
    return (
        len(heads) > 1
        and all(type(head) is nn.Linear and head.bias is not None for head in heads)
        and len({tuple(head.weight.shape) for head in heads}) == 1
        and all(cfg.optimizer == "sgd" for cfg in cfgs)
        and all(getattr(cfg, f) == getattr(cfgs[0], f) for cfg in cfgs for f in SHARED_FIELDS)
    )


class StackedSGD:
    """torch.optim.SGD (momentum, no dampening, no Nesterov) on the stacked heads: point g's weight and bias get
    the lr and the decays that its own optimiser (`engine.make_optimizer`, where the config's rules live) holds,
    so one update serves the whole grid."""

    def __init__(self, models: list, cfgs: list[FitConfig], weight: torch.Tensor, bias: torch.Tensor):
        decays, momenta = [], set()
        for model, cfg in zip(models, cfgs):
            optimizer = make_optimizer(model, cfg)
            groups = optimizer.param_groups
            if not isinstance(optimizer, torch.optim.SGD) or any(
                g["dampening"] or g["nesterov"] for g in groups
            ):
                raise ValueError(
                    f"{type(optimizer).__name__}: only plain momentum SGD heads train in lockstep"
                )
            decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
            if set(decay) != {id(model.head.weight), id(model.head.bias)}:
                raise ValueError("only the head may train when heads train in lockstep")
            decays.append((decay[id(model.head.weight)], decay[id(model.head.bias)]))
            momenta |= {g["momentum"] for g in groups}
        if len(momenta) != 1:
            raise ValueError(f"one momentum for the whole grid, not {sorted(momenta)}")
        (self.momentum,) = momenta
        to = {"device": weight.device, "dtype": weight.dtype}
        self.params = (weight, bias)
        self.decays = (
            torch.tensor([w for w, _ in decays], **to).view(-1, 1, 1),
            torch.tensor([b for _, b in decays], **to).view(-1, 1),
        )
        self.buffers: list[torch.Tensor | None] = [None, None]

    def step(self, lrs: list[float]) -> None:
        with torch.no_grad():
            for i, (param, decay) in enumerate(zip(self.params, self.decays)):
                d_p = param.grad + decay * param
                if self.buffers[i] is None:
                    self.buffers[i] = d_p.clone()
                else:
                    self.buffers[i].mul_(self.momentum).add_(d_p)
                lr = torch.tensor(lrs, device=param.device, dtype=param.dtype).view(
                    -1, *[1] * (param.dim() - 1)
                )
                param.sub_(lr * self.buffers[i])
                param.grad = None


def _logits(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[points, images, classes]: every head on the same features."""
    return torch.einsum("nd,gcd->gnc", x, weight) + bias[:, None, :]


def _evaluate(weight, bias, data: SplitData, device, precision) -> list[dict]:
    with torch.no_grad():
        points = len(weight)
        loss = torch.zeros(points, dtype=torch.float64, device=device)
        correct = torch.zeros(points, dtype=torch.float64, device=device)
        for start in range(0, len(data), EVAL_BATCH):
            with _autocast(device, precision):
                logits = _logits(weight, bias, data.images[start : start + EVAL_BATCH]).float()
            y = data.labels[start : start + EVAL_BATCH]
            per_image = F.cross_entropy(logits.transpose(1, 2), y.expand(points, -1), reduction="none")
            loss += per_image.sum(1).double()
            correct += (logits.argmax(2) == y).sum(1).double()
        n = max(1, len(data))
        return [{"loss": l / n, "top1": 100.0 * c / n} for l, c in zip(loss.tolist(), correct.tolist())]


def fit_heads(
    models: list, cfgs: list[FitConfig], train: SplitData, evals: dict[str, SplitData], device
) -> list[dict]:
    """Train `model.head` of every model on cached `train` features; one result per model, shaped like
    `engine.fit`'s (curves, seconds, epochs, final, train). Features are on `device` already."""
    if not can_stack([m.head for m in models], cfgs):
        raise ValueError("these heads cannot train in lockstep (see can_stack)")
    cfg0 = cfgs[0]
    torch.manual_seed(cfg0.seed)
    set_precision(device, cfg0.precision)
    heads = [model.head.to(device) for model in models]
    weight = torch.stack([head.weight.detach() for head in heads]).requires_grad_()
    bias = torch.stack([head.bias.detach() for head in heads]).requires_grad_()
    optimizer = StackedSGD(models, cfgs, weight, bias)
    generator = torch.Generator().manual_seed(cfg0.seed)
    points = len(heads)
    curves: list[list[dict]] = [[] for _ in heads]
    t0 = time.perf_counter()
    for epoch in range(cfg0.epochs):
        lrs = [cfg.scaled_lr * lr_factor(epoch, cfg.warmup_epochs, cfg.epochs) for cfg in cfgs]
        order = torch.randperm(len(train), generator=generator)
        sums = torch.zeros(2, points, dtype=torch.float64, device=device)
        for start in range(0, len(train), cfg0.batch_size):
            idx = order[start : start + cfg0.batch_size].to(device)
            x, y = train.images[idx], train.labels[idx]
            with _autocast(device, cfg0.precision):
                logits = _logits(weight, bias, x).float()
            per_image = F.cross_entropy(logits.transpose(1, 2), y.expand(points, -1), reduction="none")
            loss = per_image.mean(1)  # each point's own mean loss; their sum has each point's gradient
            loss.sum().backward()
            optimizer.step(lrs)
            sums += torch.stack([loss.detach().double() * len(y), (logits.argmax(2) == y).sum(1).double()])
        loss_sums, correct = sums.tolist()
        evaluated = cfg0.eval_epochs is None or epoch in cfg0.eval_epochs
        metrics = (
            {name: _evaluate(weight, bias, data, device, cfg0.precision) for name, data in evals.items()}
            if evaluated
            else {}
        )
        for g in range(points):
            row = {
                "epoch": epoch + 1,
                "lr": lrs[g],
                "train_loss": loss_sums[g] / len(train),
                "train_top1": 100.0 * correct[g] / len(train),
            }
            if evaluated:
                for name, per_point in metrics.items():
                    row.update({f"{name}_loss": per_point[g]["loss"], f"{name}_top1": per_point[g]["top1"]})
            curves[g].append(row)
    with torch.no_grad():  # each model keeps its trained head
        for g, head in enumerate(heads):
            head.weight.copy_(weight[g])
            head.bias.copy_(bias[g])
    seconds = (time.perf_counter() - t0) / points
    results = []
    for rows in curves:
        last = rows[-1] if rows else {}
        results.append(
            {
                "curves": rows,
                "seconds": seconds,
                "epochs": cfg0.epochs,
                "final": {
                    name: {"loss": last.get(f"{name}_loss"), "top1": last.get(f"{name}_top1")}
                    for name in evals
                },
                "train": {"loss": last.get("train_loss"), "top1": last.get("train_top1")},
                "checkpoints": 0,
                "checkpoint_bytes": 0,
            }
        )
    return results
