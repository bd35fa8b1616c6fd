"""The five FGVC tasks of the VPT paper (CUB-200-2011, NABirds, Oxford Flowers, Stanford Dogs, Stanford Cars):
TFDS builders where TFDS has one, NABirds from its manual download (docs/protocol.md#fgvc).

The tasks have no VTAB slices: the `fgvc` regime splits each task's train split 90/10 (seeded) into train and val,
except Flowers, whose official val split is used (vptft.splits). Training images are augmented as the public VPT
code does for FGVC (Task.preprocessing "fgvc": resize 256, random crop 224 + flip; vptft.data).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from vptft.tasks import Task, decode_files
from vptft.tasks import vtab as tfds_tasks
from vptft.tasks.tfds_prepare import manual_dir

# (train, val, test) records per task in the VPT paper's data table (its Table 7): train + val is the data set's
# train split (val = ceil(10 %) of it) except Flowers (official val); prepared data is checked against the totals
PAPER_SIZES = {
    "cub200": (5394, 600, 5794),
    "nabirds": (21536, 2393, 24633),
    "oxford_flowers": (1020, 1020, 6149),
    "stanford_dogs": (10800, 1200, 8580),
    "stanford_cars": (7329, 815, 8041),
}
# Split sizes of the TFDS builders (the TFDS catalog; NABirds: its own train/test list)
SPLIT_SIZES = {
    "cub200": {"train": 5994, "test": 5794},
    "nabirds": {"train": 23929, "test": 24633},
    "oxford_flowers": {"train": 1020, "validation": 1020, "test": 6149},
    "stanford_dogs": {"train": 12000, "test": 8580},
    "stanford_cars": {"train": 8144, "test": 8041},
}
NABIRDS_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "images")
NABIRDS_HOW = (
    "NABirds has no TFDS builder: register at https://dl.allaboutbirds.org/nabirds, download nabirds.tar.gz and "
    "extract it into {manual_dir}, so that {manual_dir}/nabirds/images.txt, image_class_labels.txt, "
    "train_test_split.txt and images/ exist"
)


def _fgvc(name, classes, builder, val_split="train"):
    return Task(
        name=name,
        benchmark="fgvc",
        group="fgvc",
        num_classes=classes,
        train_split="train",
        val_split=val_split,  # "train": val is drawn from train (90/10) by the fgvc regime
        val_start=0,
        test_split="test",
        preprocessing="fgvc",
        extra={"builder": builder, "label": tfds_tasks.label_field("label"), "image": "image"}
        | ({"label_key": "label"} if builder else {}),
    )


TASKS = [
    _fgvc("cub200", 200, "caltech_birds2011:0.2.*"),
    _fgvc("nabirds", 555, None),
    _fgvc("oxford_flowers", 102, "oxford_flowers102:2.*.*", val_split="validation"),
    _fgvc("stanford_dogs", 120, "stanford_dogs:0.2.*"),
    _fgvc("stanford_cars", 196, "cars196:2.*.*"),
]


def size_problems(task: Task, split_sizes: dict) -> list[str]:
    """How prepared split sizes differ from the VPT paper's data table (empty where they agree)."""
    train, val, test = PAPER_SIZES[task.name]
    expected = {"test": test}
    if task.val_split == task.train_split:
        expected["train"] = train + val
    else:
        expected |= {"train": train, task.val_split: val}
    return [
        f"{split}: {split_sizes.get(split)} records, the VPT paper's table has {n}"
        for split, n in expected.items()
        if split_sizes.get(split) != n
    ]


# ------------------------------------------------------------------------------------------- NABirds folder
def nabirds_dir(data_dir) -> Path:
    return manual_dir(data_dir) / "nabirds"


def _columns(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def nabirds_index(data_dir) -> dict:
    """{split: (image paths, labels)} from the official lists; labels number the classes that have images, in
    ascending class-id order (the data set's ids skip the inner nodes of its taxonomy)."""
    root = nabirds_dir(data_dir)
    missing = [name for name in NABIRDS_FILES if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"nabirds: {', '.join(str(root / m) for m in missing)} not found. "
            + NABIRDS_HOW.format(manual_dir=manual_dir(data_dir))
        )
    paths = dict(_columns(root / "images.txt"))
    classes = {image: int(c) for image, c in _columns(root / "image_class_labels.txt")}
    is_train = {image: flag == "1" for image, flag in _columns(root / "train_test_split.txt")}
    label_of = {c: i for i, c in enumerate(sorted(set(classes.values())))}
    index: dict = {"train": ([], []), "test": ([], [])}
    for image in sorted(paths):  # the lists' image ids, sorted: a fixed record order
        split = index["train" if is_train[image] else "test"]
        split[0].append(str(root / "images" / paths[image]))
        split[1].append(label_of[classes[image]])
    return index


# ------------------------------------------------------------------------------------------ task interface
def prepare(task: Task, data_dir) -> dict:
    """TFDS download_and_prepare (as for VTAB), or NABirds' lists read from its manual folder; split sizes that
    differ from the VPT paper's data table are reported, not refused (a newer data set version may differ)."""
    if task.extra["builder"]:
        info = tfds_tasks.prepare(task, data_dir)
    else:
        index = nabirds_index(data_dir)
        info = {
            "task": task.name,
            "source": f"manual folder {nabirds_dir(data_dir)}",
            "path": str(nabirds_dir(data_dir)),
            "split_sizes": {split: len(labels) for split, (_, labels) in index.items()},
        }
    problems = size_problems(task, info["split_sizes"])
    for problem in problems:
        print(f"[fgvc] {task.name}: {problem}", file=sys.stderr)
    return info | {"size_problems": problems}


def class_names(task: Task, data_dir) -> list[str]:
    if task.extra["builder"]:
        return tfds_tasks.class_names(task, data_dir)
    return []


def load_labels(task: Task, split: str, data_dir, indices=None):
    if task.extra["builder"]:
        return tfds_tasks.load_labels(task, split, data_dir, indices)
    labels = np.asarray(nabirds_index(data_dir)[split][1], dtype=np.int64)
    return labels if indices is None else labels[np.asarray(indices, dtype=np.int64)]


def load_images(task: Task, split: str, indices, data_dir):
    if task.extra["builder"]:
        return tfds_tasks.load_images(task, split, indices, data_dir)
    paths, labels = nabirds_index(data_dir)[split]
    indices = np.asarray(indices, dtype=np.int64)
    return decode_files([paths[i] for i in indices]), np.asarray(labels, dtype=np.int64)[indices]
