"""Split manifests: which records of a task's data each split of a regime uses (indices, not pixels).

Regimes (README, "VTAB-1k data"):
- `vtab1k`: train = the first n_train records of the train split, val = n_val records from the task's val slice,
  trainval = train + val (the final runs), test = the task's test slice. n_train / n_val are per-benchmark config
  values (paper 800/200; the mini benchmark uses a smaller analogue, see the README).
- `scale<n>` (data scaling): n train and n / ratio val records (paper 4:1) drawn from the task's non-test records
  in one seeded order, train from its front and val from its back, so a larger set contains every smaller one;
  a size the task cannot supply is recorded as skipped, with the reason, instead of being shrunk.
- `oneshot`: one record per class for train and one for val, the first ones of each class in the seeded order;
  a class without a record is reported in the manifest (`missing_classes`), never silently dropped.
Test is always the task's test slice, untouched by every regime.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from vptft import tasks as task_registry
from vptft.io import read_json, write_json

SPLITS = ("train", "val", "trainval", "test")
SCALE_RE = re.compile(r"^scale(\d+)$")


def regime_names(regimes: dict) -> list[str]:
    """Every regime name a config defines: vtab1k, scale<n> for each scaling size, oneshot."""
    names = [name for name in ("vtab1k", "oneshot") if name in regimes]
    names += [f"scale{n}" for n in regimes.get("scaling", {}).get("n_train", [])]
    return names


def regime_spec(regime: str, regimes: dict) -> dict:
    """The sizes of one named regime, from the config's `regimes` section."""
    if regime == "vtab1k" and "vtab1k" in regimes:
        return {"kind": "vtab1k", **regimes["vtab1k"]}
    if regime == "oneshot" and "oneshot" in regimes:
        return {"kind": "oneshot", **regimes["oneshot"]}
    match = SCALE_RE.match(regime)
    scaling = regimes.get("scaling", {})
    if match and int(match.group(1)) in scaling.get("n_train", []):
        n = int(match.group(1))
        return {"kind": "scaling", "n_train": n, "n_val": n // scaling["ratio"], "seed": scaling["seed"]}
    raise ValueError(f"regime {regime!r} is not configured; configured regimes: {', '.join(regime_names(regimes))}")


def _test_range(task, split_sizes) -> tuple[str, int, int]:
    stop = task.test_stop if task.test_stop is not None else split_sizes[task.test_split]
    return task.test_split, task.test_start, stop


def _vtab1k(task, split_sizes: dict, n_train: int, n_val: int) -> dict:
    def block(split, start, n):
        available = split_sizes.get(split, 0) - start
        if n > available:
            raise ValueError(f"task {task.name}: needs {n} records from {split}[{start}:] but only "
                             f"{max(available, 0)} exist; lower the regime size in the config")
        return list(range(start, start + n))

    train = block(task.train_split, 0, n_train)
    val = block(task.val_split, task.val_start, n_val)
    if task.train_split == task.val_split and task.val_start < n_train:
        raise ValueError(f"task {task.name}: train[:{n_train}] overlaps the val slice starting at {task.val_start}")
    return {"train": {task.train_split: train}, "val": {task.val_split: val}}


def non_test_pool(task, split_sizes: dict) -> list[tuple[str, int]]:
    """Every (split, index) of the task's train and val splits that is not in its test slice."""
    test_split, test_start, test_stop = _test_range(task, split_sizes)
    pool = []
    for split in dict.fromkeys((task.train_split, task.val_split)):
        pool += [(split, i) for i in range(split_sizes[split]) if not (split == test_split and
                                                                       test_start <= i < test_stop)]
    return pool


def _seeded_order(task, pool: list, seed: int) -> list:
    rng = np.random.default_rng([seed, zlib.crc32(task.name.encode())])
    return [pool[i] for i in rng.permutation(len(pool))]


def _group(records) -> dict:
    out: dict = {}
    for split, index in records:
        out.setdefault(split, []).append(index)
    return out


def _scaling(task, split_sizes: dict, n_train: int, n_val: int, seed: int) -> dict:
    pool = non_test_pool(task, split_sizes)
    if n_train + n_val > len(pool):
        return {"skipped": f"task {task.name} has {len(pool)} non-test records; {n_train} train + {n_val} val "
                           f"need {n_train + n_val}", "train": {}, "val": {}}
    order = _seeded_order(task, pool, seed)
    return {"train": _group(order[:n_train]), "val": _group(order[len(order) - n_val:])}


def _oneshot(task, split_sizes: dict, labels: dict, per_class: int, seed: int) -> dict:
    order = _seeded_order(task, non_test_pool(task, split_sizes), seed)
    picked: dict = {"train": [], "val": []}
    seen = np.zeros(task.num_classes, dtype=int)
    for split, index in order:
        label = int(labels[split][index])
        if seen[label] < 2 * per_class:
            picked["train" if seen[label] < per_class else "val"].append((split, index))
            seen[label] += 1
        if (seen == 2 * per_class).all():
            break
    return {"train": _group(picked["train"]), "val": _group(picked["val"]),
            "missing_classes": {"train": [c for c in range(task.num_classes) if seen[c] < per_class],
                                "val": [c for c in range(task.num_classes) if seen[c] < 2 * per_class]}}


def build_manifest(task_name: str, regime: str, spec: dict, data_info: dict, data_dir: str) -> dict:
    """The manifest of one task and regime, with per-split class counts and a content hash."""
    task = task_registry.get_task(task_name)
    sizes = data_info["split_sizes"]
    if spec["kind"] == "vtab1k":
        parts = _vtab1k(task, sizes, spec["n_train"], spec["n_val"])
    elif spec["kind"] == "scaling":
        parts = _scaling(task, sizes, spec["n_train"], spec["n_val"], spec["seed"])
    elif spec["kind"] == "oneshot":
        pool_splits = dict.fromkeys((task.train_split, task.val_split))
        labels = {name: task_registry.load_labels(task, name, data_dir) for name in pool_splits}
        parts = _oneshot(task, sizes, labels, spec["per_class"], spec["seed"])
    else:
        raise ValueError(f"unknown regime kind {spec['kind']!r}")
    test_split, test_start, test_stop = _test_range(task, sizes)
    splits = {"train": parts.pop("train"), "val": parts.pop("val"),
              "test": {test_split: list(range(test_start, test_stop))}}
    trainval: dict = {}
    for part in (splits["train"], splits["val"]):
        for split, indices in part.items():
            trainval.setdefault(split, []).extend(indices)
    splits["trainval"] = trainval
    class_counts = {}
    for name in ("train", "val", "test"):  # trainval's labels are train's and val's: not read again
        part = splits[name]
        y = np.concatenate([task_registry.load_labels(task, src, data_dir, idx) for src, idx in part.items()]
                           or [np.zeros(0, np.int64)])
        if len(y) and (y.min() < 0 or y.max() >= task.num_classes):
            raise ValueError(f"task {task.name}: label outside 0..{task.num_classes - 1} in split {name}")
        class_counts[name] = np.bincount(y, minlength=task.num_classes).tolist()
    class_counts["trainval"] = [a + b for a, b in zip(class_counts["train"], class_counts["val"])]
    return {"task": task.name, "regime": regime, "spec": spec, "num_classes": task.num_classes,
            "data": {"source": data_info["source"], "split_sizes": sizes}, "splits": splits,
            "class_counts": class_counts, **parts}


def write_manifest(path, manifest: dict) -> None:
    write_json(path, manifest, with_hash=True)


def read_manifest(path) -> dict:
    """Read a manifest and verify its content hash (a corrupt or hand-edited manifest is refused)."""
    manifest = read_json(path, check_hash=True)
    missing = [s for s in SPLITS if s not in manifest.get("splits", {})]
    if missing:
        raise ValueError(f"{path}: manifest lacks splits {missing}; delete it and rerun the `splits` rule")
    if manifest.get("skipped"):
        raise ValueError(f"{path}: this regime was skipped for the task: {manifest['skipped']}")
    return manifest
