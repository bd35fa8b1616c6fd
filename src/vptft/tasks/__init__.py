"""Task registry: a task is a name, its group and task disparity, its class count, where its splits live,
and a loader that yields uint8 HxWx3 images with integer labels. Adding a task is one entry.

Importing this package must stay cheap (no torch, no TensorFlow): the Snakefile validates task names with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GROUPS = ("natural", "specialized", "structured")
FGVC_GROUP = "fgvc"  # the fine-grained tasks (VPT paper's FGVC; the mini benchmark's fine-grained group)
COOP_GROUP = "coop"  # CoOp's 11 few-shot data sets (Adapt's CLIP experiment): the `coop` regime family only


@dataclass(frozen=True)
class Task:
    name: str
    benchmark: str  # "mini", "vtab", "fgvc" or "coop": selects the loader
    group: str  # natural | specialized | structured (VTAB groups; the mini benchmark maps onto them) | fgvc
    num_classes: int
    train_split: str  # the train examples are the first records of this split
    val_split: str  # val examples start at val_start in this split (VTAB's val200 slice)
    val_start: int
    test_split: str
    test_start: int = 0
    test_stop: int | None = None
    domain: str = "source"  # source | shifted: rendered like the pre-training data or not (mini quadrants)
    # vtab: bilinear resize to the input size, no augmentation; fgvc: the public VPT code's FGVC transforms
    # (resize to 256/224 of the input, train random crop + flip, eval centre crop; vptft.data)
    preprocessing: str = "vtab"
    description: str = ""
    # CLIP's image-text head: the caption of each class (CLIP's own ImageNet prompt unless a data set has its own)
    prompt_template: str = "a photo of a {}."
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def fine_grained(self) -> bool:
        """FGVC tasks train in the fgvc regime families only; the others in the VTAB ones."""
        return self.group == FGVC_GROUP

    @property
    def task_disparity(self) -> str:
        """The paper's task disparity: structured tasks differ from the pre-training task (high)."""
        return "high" if self.group == "structured" else "low"


def decode_files(paths) -> list:
    """uint8 HxWx3 arrays of image files (grey or RGBA converted to RGB): the manually downloaded data sets."""
    import numpy as np
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB")))
    return images


def _registry() -> dict[str, Task]:
    from vptft.tasks import coop, fgvc, mini, vtab

    tasks = {}
    for module in (mini, vtab, fgvc, coop):
        for task in module.TASKS:
            if task.name in tasks:
                raise ValueError(f"task {task.name!r} is defined twice")
            tasks[task.name] = task
    return tasks


TASKS: dict[str, Task] = _registry()


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


# The task benchmarks a config's `benchmark` may name: the paper config's real data is VTAB-1k, FGVC and CoOp's
CONFIG_BENCHMARKS = {"mini": ("mini",), "vtab": ("vtab", "fgvc", "coop")}


def tasks_of(benchmark: str) -> list[str]:
    return [name for name, task in TASKS.items() if task.benchmark == benchmark]


def config_tasks(benchmark: str) -> list[str]:
    """The tasks a config whose `benchmark` is this may name."""
    return [name for b in CONFIG_BENCHMARKS.get(benchmark, (benchmark,)) for name in tasks_of(b)]


def _module(task: Task):
    if task.benchmark == "mini":
        from vptft.tasks import mini as module
    elif task.benchmark == "fgvc":
        from vptft.tasks import fgvc as module
    elif task.benchmark == "coop":
        from vptft.tasks import coop as module
    else:
        from vptft.tasks import vtab as module
    return module


def prepare(task: Task, data_dir: str) -> dict:
    """Materialise the task's data under data_dir (render or download); return its info (split sizes, version)."""
    return _module(task).prepare(task, data_dir)


def load_labels(task: Task, split: str, data_dir: str, indices=None):
    """Labels of one split (all records, or those at `indices`) as an int64 array, for building manifests."""
    return _module(task).load_labels(task, split, data_dir, indices)


def class_names(task: Task, data_dir: str) -> list[str]:
    """The name of each label (index = label), or [] where the data set gives none (figures then show indices)."""
    names = list(_module(task).class_names(task, data_dir))
    return names if len(names) == task.num_classes else []


def load_images(task: Task, split: str, indices, data_dir: str):
    """Decoded uint8 images (N, H, W, 3) and int64 labels of the given records of one split."""
    images, labels = _module(task).load_images(task, split, indices, data_dir)
    if len(labels) and (labels.min() < 0 or labels.max() >= task.num_classes):
        raise ValueError(
            f"task {task.name}: label outside 0..{task.num_classes - 1} in split {split!r}; "
            f"the prepared data under {data_dir} does not match the task definition"
        )
    return images, labels
