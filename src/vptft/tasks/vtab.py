"""The 19 VTAB-1k tasks as the VPT code defines them (google-research/task_adaptation): TFDS builder and
version, split slices, label rules (docs/protocol.md#vtab-1k-tasks-and-splits).

Images are read through `tfds.data_source` (random access, no TensorFlow at train time) and decoded once per job.
"""

from __future__ import annotations

import numpy as np

from vptft.tasks import Task
from vptft.tasks.tfds_prepare import (
    check_ready,
    explain_failure,
    family,
    manual_dir,
    no_tfds_litter,
    tfds_builder,
    tfds_dir,
)

CLEVR_DISTANCE_THRESHOLDS = [0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0]
KITTI_DISTANCE_THRESHOLDS = [-100.0, 8.0, 20.0, 999.0]


def threshold_label(value: float, thresholds) -> int:
    """Largest i with thresholds[i] < value (the task_adaptation binning rule)."""
    return int(np.max(np.nonzero(np.asarray(thresholds) < value)[0]))


def clevr_count(record) -> int:
    return len(record["objects"]["size"]) - 3


def clevr_distance(record) -> int:
    return threshold_label(
        np.min(np.asarray(record["objects"]["pixel_coords"])[:, 2]), CLEVR_DISTANCE_THRESHOLDS
    )


def kitti_distance(record) -> int:
    objects = record["objects"]
    vehicles = np.asarray(objects["type"]) < 3  # car, van, truck
    z = np.concatenate([np.asarray(objects["location"])[vehicles, 2], [1000.0]])
    return threshold_label(np.min(z), KITTI_DISTANCE_THRESHOLDS)


def binned(key: str, original: int, bins: int = 16):
    return lambda record: int(np.floor(int(record[key]) / (original / bins)))


def label_field(key: str):
    return lambda record: int(record[key])


def _vtab(name, group, builder, classes, val, test, label=None, image="image"):
    val_split, val_start = val
    test_split, test_start = test
    return Task(
        name=name,
        benchmark="vtab",
        group=group,
        num_classes=classes,
        train_split="train",
        val_split=val_split,
        val_start=val_start,
        test_split=test_split,
        test_start=test_start,
        # label_key: the label is the data set's own class label (its names are the classes' names)
        extra={"builder": builder, "label": label or label_field("label"), "image": image}
        | ({"label_key": "label"} if label is None else {}),
    )


# Records in each task's VTAB-1k test slice (the VPT paper's data table): what a test pass costs (vptft.cost)
TEST_SIZES = {
    "cifar100": 10000,
    "caltech101": 6084,
    "dtd": 1880,
    "oxford_flowers102": 6149,
    "oxford_iiit_pet": 3669,
    "svhn": 26032,
    "sun397": 21750,
    "patch_camelyon": 32768,
    "eurosat": 5400,
    "resisc45": 6300,
    "diabetic_retinopathy": 42670,
    "clevr_count": 15000,
    "clevr_distance": 15000,
    "dmlab": 22735,
    "kitti_distance": 711,
    "dsprites_location": 73728,
    "dsprites_orientation": 73728,
    "smallnorb_azimuth": 12150,
    "smallnorb_elevation": 12150,
}

# Split sizes of the TFDS versions VTAB uses (the TFDS catalog), by builder family: what the scaling regimes can
# draw from, known before anything is downloaded (vptft.cost prices a capped size as the splits will cap it)
TFDS_SPLIT_SIZES = {
    "cifar100": {"train": 50000, "test": 10000},
    "caltech101": {"train": 3060, "test": 6084},
    "dtd": {"train": 1880, "validation": 1880, "test": 1880},
    "oxford_flowers102": {"train": 1020, "validation": 1020, "test": 6149},
    "oxford_iiit_pet": {"train": 3680, "test": 3669},
    "svhn_cropped": {"train": 73257, "test": 26032, "extra": 531131},
    "sun397": {"train": 76128, "validation": 10875, "test": 21750},
    "patch_camelyon": {"train": 262144, "validation": 32768, "test": 32768},
    "eurosat": {"train": 27000},
    "resisc45": {"train": 31500},
    "diabetic_retinopathy_detection": {"train": 35126, "validation": 10906, "test": 42670},
    "clevr": {"train": 70000, "validation": 15000, "test": 15000},
    "dmlab": {"train": 65550, "validation": 22628, "test": 22735},
    "kitti": {"train": 6347, "validation": 423, "test": 711},
    "dsprites": {"train": 737280},
    "smallnorb": {"train": 24300, "test": 24300},
}

TASKS = [
    _vtab("cifar100", "natural", "cifar100:3.*.*", 100, ("train", 45000), ("test", 0)),
    _vtab("caltech101", "natural", "caltech101:3.*.*", 102, ("train", 2754), ("test", 0)),
    _vtab("dtd", "natural", "dtd:3.*.*", 47, ("validation", 0), ("test", 0)),
    _vtab("oxford_flowers102", "natural", "oxford_flowers102:2.*.*", 102, ("validation", 0), ("test", 0)),
    # TFDS dropped 3.x (the VPT code's version); 4.0.0 holds the same 3,680 / 3,669 images and 37 labels
    _vtab("oxford_iiit_pet", "natural", "oxford_iiit_pet:4.*.*", 37, ("train", 2944), ("test", 0)),
    _vtab("svhn", "natural", "svhn_cropped:3.*.*", 10, ("train", 65931), ("test", 0)),
    _vtab("sun397", "natural", "sun397/tfds:4.*.*", 397, ("validation", 0), ("test", 0)),
    _vtab("patch_camelyon", "specialized", "patch_camelyon:2.*.*", 2, ("validation", 0), ("test", 0)),
    _vtab("eurosat", "specialized", "eurosat/rgb:2.*.*", 10, ("train", 16200), ("train", 21600)),
    _vtab("resisc45", "specialized", "resisc45:3.*.*", 45, ("train", 18900), ("train", 25200)),
    _vtab(
        "diabetic_retinopathy",
        "specialized",
        "diabetic_retinopathy_detection/btgraham-300:3.*.*",
        5,
        ("validation", 0),
        ("test", 0),
    ),
    _vtab(
        "clevr_count", "structured", "clevr:3.*.*", 8, ("train", 63000), ("validation", 0), label=clevr_count
    ),
    _vtab(
        "clevr_distance",
        "structured",
        "clevr:3.*.*",
        6,
        ("train", 63000),
        ("validation", 0),
        label=clevr_distance,
    ),
    _vtab("dmlab", "structured", "dmlab:2.0.1", 6, ("validation", 0), ("test", 0)),
    _vtab(
        "kitti_distance", "structured", "kitti:3.2.0", 4, ("validation", 0), ("test", 0), label=kitti_distance
    ),
    _vtab(
        "dsprites_location",
        "structured",
        "dsprites:2.*.*",
        16,
        ("train", 589824),
        ("train", 663552),
        label=binned("label_x_position", 32),
    ),
    _vtab(
        "dsprites_orientation",
        "structured",
        "dsprites:2.*.*",
        16,
        ("train", 589824),
        ("train", 663552),
        label=binned("label_orientation", 40),
    ),
    # test[50%:] of smallnorb's 24,300 test records
    _vtab(
        "smallnorb_azimuth",
        "structured",
        "smallnorb:2.*.*",
        18,
        ("test", 0),
        ("test", 12150),
        label=label_field("label_azimuth"),
    ),
    _vtab(
        "smallnorb_elevation",
        "structured",
        "smallnorb:2.*.*",
        9,
        ("test", 0),
        ("test", 12150),
        label=label_field("label_elevation"),
    ),
]


def catalog_split_sizes(task: Task) -> dict:
    return TFDS_SPLIT_SIZES[family(task.extra["builder"])]


def _builder(task: Task, data_dir):
    # array_record, not TFDS's default tfrecord: only it gives the random access tfds.data_source reads with
    return tfds_builder(task.extra["builder"], data_dir=str(tfds_dir(data_dir)), file_format="array_record")


def prepare(task: Task, data_dir) -> dict:
    """Run TFDS download_and_prepare after checking it can succeed; known failures say what to do."""
    import tensorflow_datasets as tfds
    from filelock import FileLock

    spec = task.extra["builder"]
    check_ready(task.name, spec, data_dir)
    builder = _builder(task, data_dir)
    lock = (
        tfds_dir(data_dir) / f".{family(spec)}.lock"
    )  # tasks sharing a builder (clevr, dsprites, smallnorb)
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock):  # prepare it once; the second job finds it prepared
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir(data_dir)))
            )
    except Exception as err:
        message = explain_failure(task.name, spec, data_dir, err)
        if message is None:
            raise
        raise RuntimeError(message) from err
    info = builder.info
    return {
        "task": task.name,
        "source": f"tfds {info.full_name}",
        "path": builder.data_dir,
        "split_sizes": {name: split.num_examples for name, split in info.splits.items()},
        "download_bytes": int(info.download_size),
        "prepared_bytes": int(info.dataset_size),
    }


def data_source(task: Task, split: str, data_dir, decode_images: bool = True):
    import tensorflow_datasets as tfds

    # labels only: leave the image bytes undecoded (a one-shot manifest reads every record's label)
    decoders = None if decode_images else {task.extra["image"]: tfds.decode.SkipDecoding()}
    try:
        with no_tfds_litter():
            return tfds.data_source(
                task.extra["builder"],
                split=split,
                data_dir=str(tfds_dir(data_dir)),
                download=False,
                decoders=decoders,
            )
    except Exception as err:
        raise FileNotFoundError(
            f"{task.name}: TFDS dataset {task.extra['builder']} is not prepared under "
            f"{data_dir}/tfds; run the `download` rule for it ({err})"
        ) from err


def _image(record, key):
    image = np.asarray(record[key])
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:  # dsprites / smallnorb: grey -> 3 channels; dsprites is 0/1
        if image.max() <= 1:
            image = image * 255
        image = np.repeat(image, 3, axis=-1)
    return image.astype(np.uint8)


def class_names(task: Task, data_dir) -> list[str]:
    """The TFDS class names where the task's label is the data set's own; [] for derived labels (counts, bins)."""
    key = task.extra.get("label_key")
    if key is None:
        return []
    try:
        return list(
            data_source(task, task.train_split, data_dir, decode_images=False)
            .dataset_info.features[key]
            .names
        )
    except (AttributeError, KeyError, FileNotFoundError):
        return []


def load_labels(task: Task, split: str, data_dir, indices=None):
    source = data_source(task, split, data_dir, decode_images=False)
    indices = range(len(source)) if indices is None else indices
    return np.asarray([task.extra["label"](source[int(i)]) for i in indices], dtype=np.int64)


def load_images(task: Task, split: str, indices, data_dir):
    source = data_source(task, split, data_dir)
    records = [source[int(i)] for i in indices]
    labels = np.asarray([task.extra["label"](r) for r in records], dtype=np.int64)
    return [_image(r, task.extra["image"]) for r in records], labels
