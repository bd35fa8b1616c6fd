"""The embedded mini benchmark: procedurally rendered images (and scikit-learn's digits) that stand in for
ImageNet-21k pre-training and the VTAB-1k downstream tasks, deterministic from a seed, no download needed.

Every image is drawn at 64x64 on coordinates x, y in [-1, 1] and 2x2 average-pooled to 32x32 RGB. Design facts
(what makes a tiny ViT learn, which shifts are large) were calibrated with a prototype: limited rotation,
luminance contrast to the background, shifts that change the rendering
(README.md#the-embedded-mini-benchmark).
Four quadrants: {classification, structured} x {rendered like the source, shifted domain ("sketch", digits)}.
"""

from __future__ import annotations

import functools
import zipfile
import zlib
from pathlib import Path

import numpy as np

from vptft.tasks import Task

RES = 64  # drawing resolution; images are pooled to RES // 2
SIZE = RES // 2
_LIN = (np.arange(RES) + 0.5) / RES * 2 - 1
GX, GY = np.meshgrid(_LIN, -_LIN)  # y up
MAX_TILT = 0.45  # rad; full rotation makes shape classes unlearnable for the mini ViT in budget
SPLIT_SIZES = {"train": 1000, "test": 1000}  # per rendered task; train800 = train[:800], val200 = train[800:]
VAL_START = 800
RENDER_SEED = 1  # downstream tasks; the pre-training set uses seed 0, the FID reference seed 99


# ----------------------------------------------------------------------------------------------- shapes
def _polar(u, v):
    return np.hypot(u, v), np.arctan2(v, u)


def _ngon(n):
    def mask(u, v):
        r, phi = _polar(u, v)
        sector = 2 * np.pi / n
        return r <= np.cos(np.pi / n) / np.cos((phi + np.pi / 2) % sector - np.pi / n)

    return mask


def _star(points, inner):
    def mask(u, v):
        r, phi = _polar(u, v)
        t = ((phi + np.pi / 2) % (2 * np.pi / points)) / (2 * np.pi / points)
        return r <= 1 - (1 - inner) * (1 - np.abs(2 * t - 1))

    return mask


def _heart(u, v):
    x, y = u * 1.15, v * 1.15 + 0.15
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 < 0


def _arrow(u, v):
    shaft = (np.abs(v) < 0.2) & (u > -1) & (u < 0.2)
    head = (u >= 0.2) & (u < 1) & (np.abs(v) < 0.75 * (1 - u) / 0.8)
    return shaft | head


def _teardrop(u, v):
    disc = np.hypot(u, v + 0.3) < 0.6
    tip = (v > -0.3) & (v < 0.95) & (np.abs(u) < 0.6 * (0.95 - v) / 1.25)
    return disc | tip


def _pointer(u, v):
    return (u > -0.9) & (u < 0.9) & (np.abs(v) < 0.38 * (0.9 - u) / 1.8)


SOURCE_SHAPES = {
    "circle": lambda u, v: np.hypot(u, v) < 1,
    "ellipse": lambda u, v: np.hypot(u, v / 0.5) < 1,
    "triangle": _ngon(3),
    "square": _ngon(4),
    "pentagon": _ngon(5),
    "hexagon": _ngon(6),
    "star5": _star(5, 0.42),
    "cross": lambda u, v: ((np.abs(u) < 0.3) & (np.abs(v) < 1)) | ((np.abs(v) < 0.3) & (np.abs(u) < 1)),
    "ring": lambda u, v: (np.hypot(u, v) > 0.55) & (np.hypot(u, v) < 1),
    "crescent": lambda u, v: (np.hypot(u, v) < 1) & (np.hypot(u - 0.5, v) > 0.75),
    "semicircle": lambda u, v: (np.hypot(u, v) < 1) & (v > -0.1),
    "rectangle": lambda u, v: (np.abs(u) < 1) & (np.abs(v) < 0.45),
}
NEW_SHAPES = {  # never seen in pre-training
    "heart": _heart,
    "arrow": _arrow,
    "l_shape": lambda u, v: (
        ((u > -0.8) & (u < -0.3) & (np.abs(v) < 0.85)) | ((np.abs(u) < 0.8) & (v > -0.85) & (v < -0.35))
    ),
    "t_shape": lambda u, v: (
        ((v > 0.4) & (v < 0.85) & (np.abs(u) < 0.85)) | ((np.abs(u) < 0.25) & (np.abs(v) < 0.85))
    ),
    "hollow_square": lambda u, v: (
        (np.maximum(np.abs(u), np.abs(v)) > 0.5) & (np.maximum(np.abs(u), np.abs(v)) < 0.85)
    ),
    "star4": _star(4, 0.35),
    "teardrop": _teardrop,
    "trapezoid": lambda u, v: (np.abs(v) < 0.6) & (np.abs(u) < 0.5 + 0.4 * (0.6 - v) / 1.2),
}


# The fine-grained group: 12 kinds of star that differ only in their number of points and the depth of their
# notches (many similar classes of one object, as FGVC's species of bird), drawn larger than the other shapes
FINE_STARS = {
    f"star{points}_{round(inner * 10)}": _star(points, inner)
    for points in (4, 5, 6, 7)
    for inner in (0.3, 0.5, 0.7)
}


def _local(cx, cy, scale, angle):
    """Object-local coordinates of every pixel for an object at (cx, cy), radius `scale`, rotated by `angle`."""
    dx, dy = GX - cx, GY - cy
    c, s = np.cos(angle), np.sin(angle)
    return (c * dx + s * dy) / scale, (-s * dx + c * dy) / scale


# ------------------------------------------------------------------------------------------- rendering
def _luma(c):
    return float(np.dot(c, [0.299, 0.587, 0.114]))


def _background(rng):
    colour = rng.uniform(0.1, 0.8, 3)
    img = np.broadcast_to(colour, (RES, RES, 3)).copy()
    for _ in range(3):  # smooth low-frequency colour noise, never aligned with the patch grid
        k = rng.uniform(0.5, 2.0) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
        wave = np.sin(np.pi * (k[0] * GX + k[1] * GY) + rng.uniform(0, 2 * np.pi))
        img += 0.06 * wave[..., None] * rng.uniform(-1, 1, 3)
    return img


def _fg_colour(rng, bg_luma):
    return 0.45 * rng.uniform(0, 1, 3) + (0.0 if bg_luma > 0.45 else 0.55)


def _texture(rng, u, v, c1, c2):
    kind = rng.integers(5)
    if kind == 0:
        return np.broadcast_to(c1, u.shape + (3,))
    freq = rng.uniform(2.5, 6) * np.pi / 2
    a = rng.uniform(0, np.pi)
    t = np.cos(a) * u + np.sin(a) * v
    if kind == 1:  # stripes
        sel = np.sin(freq * t) > 0
    elif kind == 2:  # checker
        sel = (np.sin(freq * u) > 0) ^ (np.sin(freq * v) > 0)
    elif kind == 3:  # dots
        sel = (np.sin(freq * u) * np.sin(freq * v)) > 0.5
    else:  # gradient
        w = np.clip((t + 1) / 2, 0, 1)[..., None]
        return (1 - w) * c1 + w * c2
    return np.where(sel[..., None], c1, c2)


def _clutter_mask(rng):
    if rng.random() < 0.5:  # thin line segment
        p, q = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2)
        d = q - p
        t = np.clip(((GX - p[0]) * d[0] + (GY - p[1]) * d[1]) / max(d @ d, 1e-6), 0, 1)
        return np.hypot(GX - p[0] - t * d[0], GY - p[1] - t * d[1]) < 0.025
    c = rng.uniform(-1, 1, 2)
    return np.hypot(GX - c[0], GY - c[1]) < rng.uniform(0.04, 0.08)


class _Canvas:
    """One image in a style: 'src' (textured colour objects) or 'sketch' (dark outlines on grey paper)."""

    def __init__(self, rng, style):
        self.rng, self.style = rng, style
        if style == "src":
            self.img = _background(rng)
        else:
            self.img = np.broadcast_to(rng.uniform(0.8, 1.0), (RES, RES, 3)).copy()
        self.bg_luma = _luma(self.img.mean(axis=(0, 1)))

    def clutter(self, n):
        for _ in range(n):
            mask = _clutter_mask(self.rng)
            colour = (
                self.rng.uniform(0, 1, 3) if self.style == "src" else np.full(3, self.rng.uniform(0, 0.3))
            )
            self.img[mask] = colour

    def draw(self, shape, cx, cy, scale, angle):
        u, v = _local(cx, cy, scale, angle)
        mask = shape(u, v)
        if self.style == "src":
            c1, c2 = _fg_colour(self.rng, self.bg_luma), _fg_colour(self.rng, self.bg_luma)
            self.img[mask] = _texture(self.rng, u, v, c1, c2)[mask]
        else:
            from scipy.ndimage import binary_erosion

            outline = mask & ~binary_erosion(mask, iterations=2)
            self.img[outline] = self.rng.uniform(0.0, 0.3)

    def finish(self):
        img = self.img
        if self.style == "sketch":
            img = img + self.rng.normal(0, 0.03, img.shape)
        img = img.reshape(SIZE, 2, SIZE, 2, 3).mean(axis=(1, 3))
        return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _invnoise(rng, img):
    """The mild shift: colours inverted, channel order reversed, Gaussian noise."""
    x = 1 - img[..., ::-1].astype(np.float64) / 255 + rng.normal(0, 0.12, img.shape)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _single_object(rng, shapes, label, style):
    canvas = _Canvas(rng, style)
    canvas.clutter(rng.integers(0, 4))
    canvas.draw(
        shapes[label], *rng.uniform(-0.45, 0.45, 2), rng.uniform(0.3, 0.6), rng.uniform(-MAX_TILT, MAX_TILT)
    )
    return canvas.finish()


def _fine_object(rng, label, style):
    canvas = _Canvas(rng, style)
    canvas.clutter(rng.integers(0, 3))
    shapes = list(FINE_STARS.values())
    canvas.draw(
        shapes[label], *rng.uniform(-0.25, 0.25, 2), rng.uniform(0.55, 0.75), rng.uniform(-MAX_TILT, MAX_TILT)
    )
    return canvas.finish()


def _count(rng, label, style):
    canvas = _Canvas(rng, style)
    canvas.clutter(rng.integers(0, 2))
    centres = []
    while len(centres) < label + 1:  # rejection sampling with a minimum distance
        c = rng.uniform(-0.8, 0.8, 2)
        if all(np.hypot(*(c - o)) >= 0.38 for o in centres):
            centres.append(c)
    shapes = list(SOURCE_SHAPES.values())
    for c in centres:
        shape = shapes[rng.integers(len(shapes))]
        canvas.draw(shape, c[0], c[1], rng.uniform(0.14, 0.2), rng.uniform(-MAX_TILT, MAX_TILT))
    return canvas.finish()


LOCATION_BINS = np.linspace(-0.75, 0.75, 7)


def _location(rng, label, style):
    canvas = _Canvas(rng, style)
    canvas.clutter(rng.integers(0, 2))
    shapes = list(SOURCE_SHAPES.values())
    cx = rng.uniform(LOCATION_BINS[label], LOCATION_BINS[label + 1])
    canvas.draw(
        shapes[rng.integers(len(shapes))],
        cx,
        rng.uniform(-0.75, 0.75),
        rng.uniform(0.18, 0.28),
        rng.uniform(-MAX_TILT, MAX_TILT),
    )
    return canvas.finish()


def _orientation(rng, label, style):
    canvas = _Canvas(rng, style)
    canvas.clutter(rng.integers(0, 2))
    angle = (label + rng.uniform(0, 1)) * np.pi / 4  # one of 8 45-degree bins over the full circle
    canvas.draw(_pointer, *rng.uniform(-0.3, 0.3, 2), rng.uniform(0.45, 0.65), angle)
    return canvas.finish()


def _renderer(kind, style):
    """A function (rng, label) -> uint8 image for one task kind and style."""
    if kind in ("source", "newshapes"):
        shapes = list((SOURCE_SHAPES if kind == "source" else NEW_SHAPES).values())
        if style == "invnoise":
            return lambda rng, label: _invnoise(rng, _single_object(rng, shapes, label, "src"))
        return lambda rng, label: _single_object(rng, shapes, label, style)
    draw = {"count": _count, "location": _location, "orientation": _orientation, "finestars": _fine_object}[
        kind
    ]
    return lambda rng, label: draw(rng, label, style)


def render(kind: str, style: str, num_classes: int, n: int, seed: int, stream: str):
    """Render n images with uniformly drawn labels; `stream` names the random stream (task name)."""
    rng = np.random.default_rng([seed, zlib.crc32(stream.encode())])
    labels = rng.integers(0, num_classes, n)
    draw = _renderer(kind, style)
    images = (
        np.stack([draw(rng, int(label)) for label in labels]) if n else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    )
    return images, labels.astype(np.int64)


def render_source(n: int, seed: int):
    """The pre-training set (stand-in for ImageNet-21k): the 12 source shapes in the source style."""
    return render("source", "src", len(SOURCE_SHAPES), n, seed, "source-pretrain")


def _digits():
    """scikit-learn's 1,797 real 8x8 handwritten digits, upsampled to 32x32 RGB in a fixed permuted order."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    images = []
    for img in data.images[order]:
        grey = Image.fromarray(np.round(img / 16 * 255).astype(np.uint8))
        images.append(np.asarray(grey.resize((SIZE, SIZE), Image.BILINEAR)))
    images = np.repeat(np.stack(images)[..., None], 3, axis=-1)
    labels = data.target[order].astype(np.int64)
    return {"train": (images[:1000], labels[:1000]), "test": (images[1000:], labels[1000:])}


# ---------------------------------------------------------------------------------------------- tasks
def _task(name, group, domain, kind, style, num_classes, description, preprocessing="vtab"):
    return Task(
        preprocessing=preprocessing,
        name=name,
        benchmark="mini",
        group=group,
        num_classes=num_classes,
        train_split="train",
        val_split="train",
        val_start=VAL_START,
        test_split="test",
        domain=domain,
        description=description,
        extra={"kind": kind, "style": style},
    )


# Groups follow VTAB: "natural" = classification rendered like the source, "specialized" = classification in a
# shifted domain, "structured" = counting / location / orientation (high task disparity).
TASKS = [
    _task("source", "natural", "source", "source", "src", 12, "the 12 pre-training shapes, fresh images"),
    _task("newshapes_src", "natural", "source", "newshapes", "src", 8, "8 unseen shapes, source style"),
    _task(
        "newshapes_invnoise",
        "natural",
        "source",
        "newshapes",
        "invnoise",
        8,
        "8 unseen shapes, colours inverted + noise (mild shift)",
    ),
    _task(
        "newshapes_sketch", "specialized", "shifted", "newshapes", "sketch", 8, "8 unseen shapes as outlines"
    ),
    Task(
        name="digits",
        benchmark="mini",
        group="specialized",
        num_classes=10,
        train_split="train",
        val_split="train",
        val_start=VAL_START,
        test_split="test",
        domain="shifted",
        description="scikit-learn handwritten digits (real images)",
        extra={"kind": "digits"},
    ),
    _task("count_src", "structured", "source", "count", "src", 6, "count 1-6 objects, source style"),
    _task("orient_src", "structured", "source", "orientation", "src", 8, "pointer direction, 8 bins"),
    _task("location_src", "structured", "source", "location", "src", 6, "object x position, 6 bins"),
    _task("count_sketch", "structured", "shifted", "count", "sketch", 6, "count 1-6 outlines"),
    _task("orient_sketch", "structured", "shifted", "orientation", "sketch", 8, "outlined pointer direction"),
    _task("location_sketch", "structured", "shifted", "location", "sketch", 6, "outline x position, 6 bins"),
    # the fine-grained group (FGVC's stand-in): the fgvc regimes' 90/10 split and FGVC's crop + flip
    *(
        _task(
            f"finestars_{style}", "fgvc", domain, "finestars", style, 12, f"12 kinds of star, {what}", "fgvc"
        )
        for style, domain, what in (("src", "source", "source style"), ("sketch", "shifted", "as outlines"))
    ),
]


def class_names(task: Task, data_dir=None) -> list[str]:
    """What each label of a mini task stands for (its renderer's classes)."""
    kind = task.extra["kind"]
    if kind == "digits":
        return [str(i) for i in range(10)]
    if kind in ("source", "newshapes"):
        return list(SOURCE_SHAPES if kind == "source" else NEW_SHAPES)
    if kind == "finestars":
        return list(FINE_STARS)
    if kind == "count":
        return [f"{i + 1} objects" for i in range(task.num_classes)]
    if kind == "orientation":
        step = 360 // task.num_classes
        return [f"{i * step}-{(i + 1) * step} deg" for i in range(task.num_classes)]
    if kind == "location":
        return [f"x bin {i + 1}" for i in range(task.num_classes)]
    return []


def _path(task: Task, data_dir) -> Path:
    return Path(data_dir) / "mini" / f"{task.name}.npz"


def render_task(task: Task) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All splits of a mini task, as {split: (images, labels)}."""
    if task.extra["kind"] == "digits":
        return _digits()
    return {
        split: render(
            task.extra["kind"], task.extra["style"], task.num_classes, n, RENDER_SEED + 1000 * i, task.name
        )
        for i, (split, n) in enumerate(SPLIT_SIZES.items())
    }


def prepare(task: Task, data_dir) -> dict:
    from vptft.io import atomic_path

    splits = render_task(task)
    arrays = {
        f"{split}_{key}": arr
        for split, (images, labels) in splits.items()
        for key, arr in (("images", images), ("labels", labels))
    }
    with atomic_path(_path(task, data_dir)) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return {
        "task": task.name,
        "source": "rendered (vptft.tasks.mini)",
        "path": str(_path(task, data_dir)),
        "split_sizes": {split: len(labels) for split, (_, labels) in splits.items()},
    }


@functools.lru_cache(maxsize=4)
def _read(path: Path, mtime_ns: int) -> dict:
    """The arrays of a prepared task, read once per job (train and val come from the same file)."""
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: unreadable ({err}); delete it and rerun the `download` rule") from None


def _load(task: Task, data_dir):
    path = _path(task, data_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: mini task {task.name!r} is not prepared; run the `download` rule "
            f"(snakemake {path.with_suffix('.json')})"
        )
    return _read(path, path.stat().st_mtime_ns)


def load_labels(task: Task, split: str, data_dir, indices=None):
    labels = _load(task, data_dir)[f"{split}_labels"]
    return labels if indices is None else labels[np.asarray(indices, dtype=np.int64)]


def load_images(task: Task, split: str, indices, data_dir):
    data = _load(task, data_dir)
    indices = np.asarray(indices, dtype=np.int64)
    return data[f"{split}_images"][indices], data[f"{split}_labels"][indices]
