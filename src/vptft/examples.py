"""Example images of every task (Han et al.'s Figure 19, the VPT paper's Figure 10): a few train records of
different classes per task, decoded once and resized to one display size, so the figure notebook needs no
data loader."""

from __future__ import annotations

import numpy as np

from vptft import tasks as task_registry
from vptft.data import to_uint8_tensor
from vptft.io import atomic_path
from vptft.splits import read_manifest

CANDIDATES = 64  # the first train records searched for distinct classes


def pick_distinct(labels, n: int) -> list[int]:
    """Positions of the first record of each class in order of appearance, then the next records, `n` in all:
    examples of different classes wherever the records have them."""
    seen, first = set(), []
    for i, label in enumerate(map(int, labels)):
        if label not in seen:
            seen.add(label)
            first.append(i)
    rest = [i for i in range(len(labels)) if i not in first]
    return (first + rest)[:n]


def task_examples(manifest_paths: dict[str, str], data_dir: str, per_task: int, side: int) -> dict:
    """Arrays for an .npz: `images` (tasks, per_task, 3, side, side) uint8, `labels`, `tasks`, `groups` and
    `captions` (class names where the data set gives them). A task with fewer train records shows fewer
    (label -1, a blank image)."""
    names = list(manifest_paths)
    images = np.zeros((len(names), per_task, 3, side, side), dtype=np.uint8)
    labels = np.full((len(names), per_task), -1, dtype=np.int64)
    captions = np.full((len(names), per_task), "", dtype=object)
    for row, name in enumerate(names):
        manifest = read_manifest(manifest_paths[name])
        if manifest["task"] != name:
            raise ValueError(f"{manifest_paths[name]}: the manifest of {manifest['task']!r}, not {name!r}")
        task = task_registry.get_task(name)
        split, indices = next(iter(manifest["splits"]["train"].items()))
        x, y = task_registry.load_images(task, split, list(indices)[:CANDIDATES], data_dir)
        chosen = pick_distinct(y, per_task)
        class_names = task_registry.class_names(task, data_dir)
        decoded = to_uint8_tensor([x[i] for i in chosen], (side, side)).numpy()
        images[row, : len(chosen)] = decoded
        labels[row, : len(chosen)] = [int(y[i]) for i in chosen]
        captions[row, : len(chosen)] = [
            class_names[int(y[i])] if class_names else str(int(y[i])) for i in chosen
        ]
    return {
        "images": images,
        "labels": labels,
        "captions": captions.astype(str),
        "tasks": np.array(names, dtype=str),
        "groups": np.array([task_registry.get_task(n).group for n in names], dtype=str),
    }


def write_examples(path, arrays: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
