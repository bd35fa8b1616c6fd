"""Split manifests: which records of a task's data each split of a regime uses (indices, not pixels).

`vtab1k` (REFERENCE.md section 4): train = the first n_train records of the train split, val = n_val records from
the task's val slice, trainval = train + val (the final runs), test = the task's test slice. n_train / n_val are
per-benchmark config values (paper 800/200; the mini benchmark uses a smaller analogue, see DESIGN.md).
"""

from __future__ import annotations

import numpy as np

from vptft import tasks as task_registry
from vptft.io import read_json, write_json

SPLITS = ("train", "val", "trainval", "test")


def vtab1k_indices(task: task_registry.Task, split_sizes: dict, n_train: int, n_val: int) -> dict:
    """{split: (source split, indices)} for the vtab1k regime; refuses sizes the task cannot supply."""

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
    test_stop = task.test_stop if task.test_stop is not None else split_sizes[task.test_split]
    test = list(range(task.test_start, test_stop))
    out = {"train": {task.train_split: train}, "val": {task.val_split: val}, "test": {task.test_split: test}}
    trainval = {task.train_split: list(train)}
    trainval.setdefault(task.val_split, []).extend(val)
    out["trainval"] = trainval
    return out


def build_manifest(task_name: str, regime: str, n_train: int, n_val: int, data_info: dict, data_dir: str) -> dict:
    """The manifest of one task and regime, with per-split class counts and a content hash."""
    task = task_registry.get_task(task_name)
    splits = vtab1k_indices(task, data_info["split_sizes"], n_train, n_val)
    labels = {name: task_registry.load_labels(task, name, data_dir) for name in {s for d in splits.values() for s in d}}
    class_counts = {}
    for split, parts in splits.items():
        y = np.concatenate([labels[src][idx] for src, idx in parts.items()])
        if len(y) and (y.min() < 0 or y.max() >= task.num_classes):
            raise ValueError(f"task {task.name}: label outside 0..{task.num_classes - 1} in split {split}")
        class_counts[split] = np.bincount(y, minlength=task.num_classes).tolist()
    return {"task": task.name, "regime": regime, "num_classes": task.num_classes, "n_train": n_train,
            "n_val": n_val, "data": {"source": data_info["source"], "split_sizes": data_info["split_sizes"]},
            "splits": splits, "class_counts": class_counts}


def write_manifest(path, manifest: dict) -> None:
    write_json(path, manifest, with_hash=True)


def read_manifest(path) -> dict:
    """Read a manifest and verify its content hash (a corrupt or hand-edited manifest is refused)."""
    manifest = read_json(path, check_hash=True)
    missing = [s for s in SPLITS if s not in manifest.get("splits", {})]
    if missing:
        raise ValueError(f"{path}: manifest lacks splits {missing}; delete it and rerun the `splits` rule")
    return manifest
