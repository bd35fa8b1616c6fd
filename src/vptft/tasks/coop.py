"""The 11 data sets of CoOp's few-shot benchmark, on which Adapt reports its CLIP results (docs/protocol.md#coop):
TFDS builders where TFDS has one, FGVC-Aircraft from its manual download. Each task has CoOp's caption template
and class names as CLIP reads them; the `coop` regime family draws its few-shot train / val sets from the task's
non-test records, and test is the data set's test split.

Deviations from CoOp's own split files (`split_zhou_*.json`, which TFDS does not have): the train / val pool and
test split are TFDS's (EuroSAT: VTAB's slices of its one split; Food-101 and ImageNet: their validation split as
test, as CoOp does for ImageNet); Caltech101 keeps TFDS's 102 labels where CoOp drops two.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vptft.tasks import COOP_GROUP, Task, decode_files
from vptft.tasks import vtab as tfds_tasks
from vptft.tasks.tfds_prepare import manual_dir

# CoOp's class names where TFDS's differ in more than underscores (EuroSAT's are CamelCase land-cover codes)
EUROSAT_NAMES = (
    "Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
    "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake",
)  # fmt: skip
CALTECH101_NAMES = {
    "airplanes": "airplane",
    "faces": "face",
    "leopards": "leopard",
    "motorbikes": "motorbike",
}
IMAGENET_NAMES_FILE = "imagenet_classnames.txt"
# Records in each task's test split (the TFDS catalog; EuroSAT: train[21600:]): what a test pass costs (vptft.cost)
TEST_SIZES = {
    "coop_caltech101": 6084,
    "coop_dtd": 1880,
    "coop_eurosat": 5400,
    "coop_fgvc_aircraft": 3333,
    "coop_food101": 25250,
    "coop_imagenet": 50000,
    "coop_oxford_flowers": 6149,
    "coop_oxford_pets": 3669,
    "coop_stanford_cars": 8041,
    "coop_sun397": 21750,
    "coop_ucf101": 3783,
}
IMAGENET_HOW = (
    "TFDS names ImageNet's classes by WordNet id; CLIP reads words: put the 1,000 class names CoOp uses (its "
    "`classnames.txt`, one 'n01440764 tench' line per class, in label order) at {path}"
)
AIRCRAFT_DIR = "fgvc-aircraft-2013b"
AIRCRAFT_SPLITS = {"train": "train", "val": "val", "test": "test"}
AIRCRAFT_HOW = (
    "FGVC-Aircraft has no TFDS builder: download fgvc-aircraft-2013b.tar.gz from "
    "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ and extract it into {manual_dir}, so that "
    "{manual_dir}/fgvc-aircraft-2013b/data/variants.txt, images_variant_{{train,val,test}}.txt and images/ exist"
)


def _coop(name, classes, builder, template, test=("test", 0), val="train", image="image", **extra):
    test_split, test_start = test
    return Task(
        name=name,
        benchmark="coop",
        group=COOP_GROUP,
        num_classes=classes,
        train_split="train",
        val_split=val,
        val_start=0,
        test_split=test_split,
        test_start=test_start,
        prompt_template=template,
        extra={
            "builder": builder,
            "label": tfds_tasks.label_field("label"),
            "image": image,
            "label_key": "label",
        }
        | extra,
    )


# CoOp's per-data-set caption templates (its CUSTOM_TEMPLATES)
TASKS = [
    _coop("coop_caltech101", 102, "caltech101:3.*.*", "a photo of a {}."),
    _coop("coop_dtd", 47, "dtd:3.*.*", "{} texture.", val="validation"),
    _coop("coop_eurosat", 10, "eurosat/rgb:2.*.*", "a centered satellite photo of {}.", test=("train", 21600),
          names=EUROSAT_NAMES),
    _coop("coop_fgvc_aircraft", 100, None, "a photo of a {}, a type of aircraft.", val="val"),
    _coop("coop_food101", 101, "food101:2.*.*", "a photo of {}, a type of food.", test=("validation", 0)),
    _coop("coop_imagenet", 1000, "imagenet2012:5.*.*", "a photo of a {}.", test=("validation", 0),
          names_file=IMAGENET_NAMES_FILE),
    _coop("coop_oxford_flowers", 102, "oxford_flowers102:2.*.*", "a photo of a {}, a type of flower.",
          val="validation"),
    _coop("coop_oxford_pets", 37, "oxford_iiit_pet:4.*.*", "a photo of a {}, a type of pet."),
    _coop("coop_stanford_cars", 196, "cars196:2.*.*", "a photo of a {}."),
    _coop("coop_sun397", 397, "sun397/tfds:4.*.*", "a photo of a {}.", val="validation"),
    # videos: one image per clip, its middle frame (CoOp's UCF101 images are middle frames)
    _coop("coop_ucf101", 101, "ucf101/ucf101_1_256:2.*.*", "a photo of a person doing {}.", image="video"),
]  # fmt: skip


# ------------------------------------------------------------------------------------- FGVC-Aircraft folder
def aircraft_dir(data_dir) -> Path:
    return manual_dir(data_dir) / AIRCRAFT_DIR / "data"


def aircraft_index(data_dir) -> dict:
    """{split: (image paths, labels)} from the official variant lists; labels number `variants.txt` in order."""
    root = aircraft_dir(data_dir)
    lists = {split: root / f"images_variant_{name}.txt" for split, name in AIRCRAFT_SPLITS.items()}
    missing = [p for p in [root / "variants.txt", root / "images", *lists.values()] if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"coop_fgvc_aircraft: {', '.join(map(str, missing))} not found. "
            + AIRCRAFT_HOW.format(manual_dir=manual_dir(data_dir))
        )
    variants = [line.strip() for line in (root / "variants.txt").read_text().splitlines() if line.strip()]
    label_of = {name: i for i, name in enumerate(variants)}
    index = {}
    for split, path in lists.items():
        rows = [line.split(" ", 1) for line in path.read_text().splitlines() if line.strip()]
        index[split] = ([str(root / "images" / f"{image}.jpg") for image, _ in rows],
                        [label_of[variant.strip()] for _, variant in rows])  # fmt: skip
    return index


# ------------------------------------------------------------------------------------------ task interface
def prepare(task: Task, data_dir) -> dict:
    """TFDS download_and_prepare (as for VTAB), or FGVC-Aircraft's lists read from its manual folder."""
    if task.extra["builder"]:
        info = tfds_tasks.prepare(task, data_dir)
        if task.extra.get("names_file"):  # checked now, not when the first CLIP job reads the names
            class_names(task, data_dir)
        return info
    index = aircraft_index(data_dir)
    return {
        "task": task.name,
        "source": f"manual folder {aircraft_dir(data_dir)}",
        "path": str(aircraft_dir(data_dir)),
        "split_sizes": {split: len(labels) for split, (_, labels) in index.items()},
    }


def caption_name(task: Task, name: str) -> str:
    """A TFDS class name as CoOp's captions spell it: SUN397's '/a/apartment_building/outdoor' -> 'outdoor
    apartment building' (CoOp puts the qualifier first), UCF101's 'ApplyEyeMakeup' -> 'Apply Eye Makeup',
    Caltech101's plurals singular; underscores become spaces."""
    if task.name == "coop_sun397":
        name = " ".join(name.strip("/").split("/")[1:][::-1])
    elif task.name == "coop_ucf101":
        name = " ".join(re.findall(r"[A-Z][^A-Z]*", name)) or name
    elif task.name == "coop_caltech101":
        name = CALTECH101_NAMES.get(name, name)
    return name.replace("_", " ")


def class_names(task: Task, data_dir) -> list[str]:
    """The class names CLIP's captions use: CoOp's where given, else the data set's as CoOp spells them."""
    if task.extra.get("names"):
        return list(task.extra["names"])
    if task.extra.get("names_file"):
        path = manual_dir(data_dir) / task.extra["names_file"]
        if not path.is_file():
            raise FileNotFoundError(f"{task.name}: " + IMAGENET_HOW.format(path=path))
        names = [line.split(" ", 1)[1].strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) != task.num_classes:
            raise ValueError(f"{path}: {len(names)} class names, {task.name} has {task.num_classes} classes")
        return names
    if task.extra["builder"] is None:
        return [
            line.strip()
            for line in (aircraft_dir(data_dir) / "variants.txt").read_text().splitlines()
            if line.strip()
        ]
    return [caption_name(task, name) for name in tfds_tasks.class_names(task, data_dir)]


def load_labels(task: Task, split: str, data_dir, indices=None):
    if task.extra["builder"]:
        return tfds_tasks.load_labels(task, split, data_dir, indices)
    labels = np.asarray(aircraft_index(data_dir)[split][1], dtype=np.int64)
    return labels if indices is None else labels[np.asarray(indices, dtype=np.int64)]


def middle_frame(video) -> np.ndarray:
    """The middle frame of a (T, H, W, 3) clip."""
    video = np.asarray(video)
    return video[len(video) // 2]


def load_images(task: Task, split: str, indices, data_dir):
    if task.extra["builder"] is None:
        paths, labels = aircraft_index(data_dir)[split]
        indices = np.asarray(indices, dtype=np.int64)
        return decode_files([paths[i] for i in indices]), np.asarray(labels, dtype=np.int64)[indices]
    if task.extra["image"] != "video":
        return tfds_tasks.load_images(task, split, indices, data_dir)
    source = tfds_tasks.data_source(task, split, data_dir)
    records = [source[int(i)] for i in indices]
    labels = np.asarray([task.extra["label"](r) for r in records], dtype=np.int64)
    return [middle_frame(r["video"]).astype(np.uint8) for r in records], labels
