"""The training loop shared by every strategy: warm-up + cosine schedule (stepped per epoch, as the VPT code
does), per-epoch train / eval loss and top-1, last-epoch metrics, resumable checkpoints of the tuned parameters.

The engine knows the strategy contract (vptft.strategies.base.TunedModel: trainable parameters require grad,
`forward_features` / `forward_head(pre_logits=True)` / `head` for frozen-feature strategies, `classifier`,
`after_backward`), never a particular strategy; plain timm models (pre-training) train through it too.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vptft.data import Normalize, SplitData
from vptft.io import atomic_path
from vptft.schedule import epochs_for, eval_epochs, lr_factor  # noqa: F401 (the engine's schedule)
from vptft.strategies.base import tuned_state_dict

EVAL_BATCH = 256


@dataclass
class FitConfig:
    optimizer: str  # "sgd" | "adamw"
    lr: float  # base lr; scaled by batch / lr_scale_batch when that is set
    weight_decay: float
    epochs: int
    warmup_epochs: int
    batch_size: int
    seed: int
    lr_scale_batch: int | None = 256
    eval_epochs: set[int] | None = None  # epochs (0-based) with an eval pass; None = every epoch
    momentum: float = 0.9
    optimizer_behavior: str = "plain"  # "vpt_code" (the public VPT code's rules) or "plain" (torch defaults)
    precision: str = "fp32"  # "tf32": TF32 matmuls on CUDA (the VPT code on A100s); "bf16": autocast on CUDA
    compile: bool = False  # torch.compile the training forward (a speed option; same arithmetic up to fusion)
    checkpoint_interval_s: float = (
        0.0  # seconds between checkpoints at epoch ends (0: every epoch); + on SIGTERM
    )
    extra: dict = field(default_factory=dict)

    @property
    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / self.lr_scale_batch if self.lr_scale_batch else self.lr


OPTIMIZER_BEHAVIORS = ("vpt_code", "plain")
VPT_CODE_ADAMW_DECAY = 0.01  # the VPT code's AdamW decay, whatever the grid says (when the grid's wd > 0)


def _model_groups(model: torch.nn.Module) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """Trainable parameters by the model's own groups (head / backbone / added) where it declares them."""
    if hasattr(model, "param_groups"):
        return {group: list(params.items()) for group, params in model.param_groups().items() if params}
    return {"all": [(n, p) for n, p in model.named_parameters() if p.requires_grad]}


def make_optimizer(model: torch.nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """The optimiser of `model`'s trainable parameters, one torch param group per model group and decay.

    "vpt_code" does what the public VPT code does (it produced the published numbers): AdamW with decay fixed at
    0.01 on every parameter whose name has no "bias" and eps 1e-6 when the grid's wd > 0, plain SGD (momentum
    0.9, no decay) at the same lr when it is 0; SGD with the grid's wd on everything but the classifier's bias.
    "plain": the grid's wd on every trainable parameter, torch's defaults otherwise.
    """
    if cfg.optimizer_behavior not in OPTIMIZER_BEHAVIORS:
        raise ValueError(
            f"unknown optimizer behavior {cfg.optimizer_behavior!r}; one of {OPTIMIZER_BEHAVIORS}"
        )
    if cfg.optimizer not in ("sgd", "adamw"):
        raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd or adamw)")
    lr, wd, vpt_code = cfg.scaled_lr, cfg.weight_decay, cfg.optimizer_behavior == "vpt_code"
    classifier = getattr(model, "classifier", None)
    classifier_bias = id(classifier.bias) if classifier is not None and classifier.bias is not None else None

    def decay_of(name, param):
        if not vpt_code:
            return wd
        if cfg.optimizer == "adamw":
            return 0.0 if "bias" in name or wd == 0 else VPT_CODE_ADAMW_DECAY
        return 0.0 if id(param) == classifier_bias else wd

    groups = []
    for group, named in _model_groups(model).items():
        by_decay: dict[float, list] = {}
        for name, param in named:
            by_decay.setdefault(decay_of(name, param), []).append(param)
        groups += [
            {"params": params, "weight_decay": decay, "group": group} for decay, params in by_decay.items()
        ]
    if cfg.optimizer == "adamw" and not (vpt_code and wd == 0):  # the VPT code falls through to SGD at wd = 0
        # on the CPU the fused kernel: the default (foreach) takes its square root from MKL's vector math
        # library, whose bits differ between Intel and AMD CPUs (vptft.reproducibility)
        on_cpu = all(p.device.type == "cpu" for group in groups for p in group["params"])
        return torch.optim.AdamW(
            groups, lr=lr, eps=1e-6 if vpt_code else 1e-8, betas=(0.9, 0.999), fused=on_cpu or None
        )
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)


def pick_device(requested: str = "auto") -> torch.device:
    """The device this job was given: CUDA when the job sees a GPU (CUDA_VISIBLE_DEVICES), else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


PRECISIONS = ("fp32", "tf32", "bf16")


def set_precision(device: torch.device, precision: str) -> None:
    """The float32 matmul precision of CUDA jobs: "tf32" lets matmuls and convolutions use TF32 tensor cores, as
    the PyTorch the VPT code ran on did by default on A100s; "fp32" keeps full fp32 (today's torch default);
    "bf16" autocasts (see `_autocast`) and keeps fp32 outside it. No effect on the CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {PRECISIONS}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"


def _autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA when asked for; fp32 / tf32 matmuls (set_precision) otherwise."""
    enabled = precision == "bf16" and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def pre_logits(model, x: torch.Tensor) -> torch.Tensor:
    """The feature the head reads (timm's forward_head(..., pre_logits=True))."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def extract_features(model, data: SplitData, normalize: Normalize, device, precision: str) -> SplitData:
    """The frozen pre-logits of every image: computed once, reused by every epoch and grid point."""
    with torch.no_grad():
        model.eval()
        feats = []
        for start in range(0, len(data), EVAL_BATCH):
            with _autocast(device, precision):
                x = normalize(data.images[start : start + EVAL_BATCH].to(device))
                feats.append(pre_logits(model, x).float())
        return SplitData(torch.cat(feats), data.labels.to(device))


def cached_features(
    model, splits: dict[str, SplitData], cache: dict | None, input_cfg: dict, device, precision: str = "fp32"
) -> dict[str, SplitData]:
    """Each split's frozen features, computed once and kept in `cache` (keyed by split name) across calls."""
    cache = cache if cache is not None else {}
    set_precision(device, precision)
    normalize = Normalize(input_cfg["mean"], input_cfg["std"], input_cfg.get("size")).to(device)
    for name, data in splits.items():
        if name not in cache:
            cache[name] = extract_features(model, data, normalize, device, precision)
    return {name: cache[name] for name in splits}


def evaluate(forward, data: SplitData, prepare, device, precision: str) -> dict:
    with torch.no_grad():
        loss, correct = 0.0, 0
        for start in range(0, len(data), EVAL_BATCH):
            with _autocast(device, precision):
                logits = forward(prepare(data.images[start : start + EVAL_BATCH].to(device))).float()
            y = data.labels[start : start + EVAL_BATCH].to(device)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
        return {"loss": loss / max(1, len(data)), "top1": 100.0 * correct / max(1, len(data))}


class _TermSignal:
    """Turns SIGTERM (what SLURM sends before killing a job) into a flag the loop checks after every step."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Terminated(SystemExit):
    """Raised after SIGTERM once the checkpoint is saved; exits with 143 like a process killed by SIGTERM."""

    def __init__(self):
        super().__init__(128 + signal.SIGTERM)


def _save_checkpoint(path: Path, model, optimizer, position: dict) -> int:
    """Write the resume state atomically; return the bytes written (a cost on shared cluster filesystems)."""
    tuned = tuned_state_dict(model)
    with atomic_path(path) as tmp:
        torch.save(
            {"tuned": tuned, "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), **position},
            tmp,
        )
        return Path(tmp).stat().st_size


def _load_checkpoint(path: Path, model, optimizer) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        expected = set(tuned_state_dict(model))
        if set(state["tuned"]) != expected:
            raise ValueError(
                f"it holds {sorted(set(state['tuned']) ^ expected)[:5]} where this model's tuned state "
                "differs"
            )
        model.load_state_dict(state["tuned"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
    except Exception as err:
        raise RuntimeError(
            f"{path}: corrupt or incompatible training checkpoint ({err}); delete it to restart "
            "this run from scratch"
        ) from err
    return state


def crop_seed(seed: int, epoch: int, batch: int) -> int:
    """The seed of one batch's random crops and flips."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + batch


def _running(sums: torch.Tensor) -> dict:
    loss_sum, correct = sums.tolist()
    return {"loss_sum": loss_sum, "correct": round(correct)}


def _evaluated_as_is(forward, train: SplitData, evals: dict, prepare, device, cfg: FitConfig) -> dict:
    """fit's result for a model with nothing to train: one evaluation (epoch 0) of the train and eval sets."""
    t0 = time.perf_counter()
    row = {"epoch": 0, "lr": 0.0}
    for name, data in {"train": train, **evals}.items():
        metrics = evaluate(forward, data, prepare, device, cfg.precision)
        row.update({f"{name}_loss": metrics["loss"], f"{name}_top1": metrics["top1"]})
    return {
        "curves": [row],
        "seconds": time.perf_counter() - t0,
        "epochs": 0,
        "final": {name: {"loss": row[f"{name}_loss"], "top1": row[f"{name}_top1"]} for name in evals},
        "train": {"loss": row["train_loss"], "top1": row["train_top1"]},
        "checkpoints": 0,
        "checkpoint_bytes": 0,
    }


def fit(
    model,
    train: SplitData,
    evals: dict[str, SplitData],
    cfg: FitConfig,
    input_cfg: dict,
    device,
    cache_features: bool = False,
    feature_cache: dict | None = None,
    checkpoint: Path | None = None,
    desc: str = "",
) -> dict:
    """Train `model` on `train`; return per-epoch curves and last-epoch metrics of every eval set.

    cache_features: the model's backbone is frozen and deterministic, so train only `model.head` on features
    computed once (kept in `feature_cache`, keyed by split name, across calls). checkpoint: a file the loop
    resumes from, saved at the end of an epoch once `cfg.checkpoint_interval_s` have passed since the last save
    (a whole ViT-B with AdamW's moments is ~1 GB: every epoch would write ~100 GB per run) and on SIGTERM.
    """
    torch.manual_seed(cfg.seed)
    set_precision(device, cfg.precision)
    model.to(device)
    normalize = Normalize(input_cfg["mean"], input_cfg["std"], input_cfg.get("size")).to(device)
    if cache_features:
        cached = cached_features(
            model, {"train": train, **evals}, feature_cache, input_cfg, device, cfg.precision
        )
        train, evals = cached["train"], {name: cached[name] for name in evals}
        forward, prepare = model.head, (lambda x: x)
    else:
        forward, prepare = model, normalize
    # FGVC preprocessing: images decoded larger than the input are randomly cropped and flipped in training,
    # with draws that depend only on (seed, epoch, batch), so a resumed run crops as a straight one does
    augment = not cache_features and normalize.crop not in (None, tuple(train.images.shape[-2:]))
    if cfg.compile:  # the module itself stays plain: its state dict and the optimiser see the same parameters
        forward = torch.compile(forward)
    train = train.to(device)
    if not any(p.requires_grad for p in model.parameters()):  # zero-shot CLIP: evaluated as it is
        model.eval()
        return _evaluated_as_is(forward, train, evals, prepare, device, cfg)
    optimizer = make_optimizer(model, cfg)
    after_backward = getattr(model, "after_backward", lambda epoch: None)
    generator = torch.Generator().manual_seed(cfg.seed)
    # Where training stands: the next epoch and batch, the shuffling state at that epoch's start, and the
    # running sums of the epoch in progress. Saved after every epoch and on SIGTERM; restored on resume.
    position = {
        "next_epoch": 0,
        "next_batch": 0,
        "generator": generator.get_state(),
        "loss_sum": 0.0,
        "correct": 0,
        "curves": [],
    }
    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and (state := _load_checkpoint(checkpoint, model, optimizer)):
        position = {key: state[key] for key in position}
        print(
            f"[fit] resumed from {checkpoint} at epoch {position['next_epoch'] + 1}, batch "
            f"{position['next_batch']}",
            file=sys.stderr,
            flush=True,
        )
    curves = position["curves"]
    t0 = last_save = time.perf_counter()
    saved = {"checkpoints": 0, "checkpoint_bytes": 0}

    def save(at: dict) -> None:
        nonlocal last_save
        saved["checkpoint_bytes"] += _save_checkpoint(checkpoint, model, optimizer, at)
        saved["checkpoints"] += 1
        last_save = time.perf_counter()

    bar = tqdm(
        range(position["next_epoch"], cfg.epochs),
        desc=desc,
        initial=position["next_epoch"],
        total=cfg.epochs,
        leave=False,
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 10,
        dynamic_ncols=True,
    )
    with _TermSignal() as term:
        for epoch in bar:
            lr = cfg.scaled_lr * lr_factor(epoch, cfg.warmup_epochs, cfg.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            generator.set_state(position["generator"])
            order = torch.randperm(len(train), generator=generator)
            # running loss and correct count of this epoch, on the device: read once an epoch, not every step
            sums = torch.tensor(
                [position["loss_sum"], position["correct"]], dtype=torch.float64, device=device
            )
            starts = range(0, len(train), cfg.batch_size)
            for batch in range(position["next_batch"], len(starts)):
                idx = order[starts[batch] : starts[batch] + cfg.batch_size].to(device)
                x, y = train.images[idx], train.labels[idx]
                if augment:
                    draws = torch.Generator().manual_seed(crop_seed(cfg.seed, epoch, batch))
                    x = normalize(x, generator=draws)
                else:
                    x = prepare(x)
                with _autocast(device, cfg.precision):
                    logits = forward(x).float()
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                after_backward(epoch)
                optimizer.step()
                sums += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double()])
                if term.received:
                    if checkpoint:
                        save({**position, **_running(sums), "next_epoch": epoch, "next_batch": batch + 1})
                    raise Terminated()
            position.update(_running(sums))
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": position["loss_sum"] / len(train),
                "train_top1": 100.0 * position["correct"] / len(train),
            }
            if cfg.eval_epochs is None or epoch in cfg.eval_epochs:
                model.eval()
                for name, data in evals.items():
                    metrics = evaluate(forward, data, prepare, device, cfg.precision)
                    row.update({f"{name}_loss": metrics["loss"], f"{name}_top1": metrics["top1"]})
            curves.append(row)
            position = {
                "next_epoch": epoch + 1,
                "next_batch": 0,
                "generator": generator.get_state(),
                "loss_sum": 0.0,
                "correct": 0,
                "curves": curves,
            }
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_top1']:.1f}", refresh=False)
            due = time.perf_counter() - last_save >= cfg.checkpoint_interval_s
            if checkpoint and (due or epoch + 1 == cfg.epochs):  # a finished run is re-made without training
                save(position)
    bar.close()
    last = curves[-1] if curves else {}
    return {
        "curves": curves,
        "seconds": time.perf_counter() - t0,
        "epochs": cfg.epochs,
        "final": {
            name: {"loss": last.get(f"{name}_loss"), "top1": last.get(f"{name}_top1")} for name in evals
        },
        "train": {"loss": last.get("train_loss"), "top1": last.get("train_top1")},
        **saved,
    }
