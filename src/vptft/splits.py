"""Split manifests: which records of a task's data each split of a regime uses (indices, not pixels).

Regimes (docs/protocol.md#regimes):
- `vtab1k`: train = the first n_train records of the train split, val = n_val records from the task's val slice,
  trainval = train + val (the final runs), test = the task's test slice. n_train / n_val are per-benchmark config
  values (paper 800/200; the mini benchmark's analogue: docs/protocol.md#mini-benchmark-analogues).
- `scale<n>` (data scaling): n train and n / ratio val records (paper 4:1) drawn from the task's non-test records
  in one seeded order, train from its front and val from its back, so a larger set contains every smaller one;
  a size the task cannot supply is capped at what it has (same ratio) and the manifest says so (`capped`).
- `fewshot<k>_draw<i>` / `fewshot<k>_prototype`: k records per class for train and k for val. A draw takes the
  first ones of each class in a seeded order (draw i: seed + i); the prototype rule takes, per class, the records
  whose backbone feature is nearest the class's mean feature over the non-test pool (train the k nearest, val
  the next k). A class without enough records is reported (`missing_classes`), never silently dropped.
- `fgvc` (the VPT paper's FGVC protocol): train / val = a seeded split of the task's train split, val =
  ceil(val_fraction x its records) (10 %), or the task's own val split where it has one (Flowers); the final
  runs train on train only (`final_split`), as the public code does for FGVC.
- `fraction<pct>`: the first pct % of the fgvc train part in one seeded order (so a larger fraction contains
  every smaller one), the fgvc val part as val; final runs on train only.
- `coop<k>_draw<i>` (CoOp's few-shot protocol, on its 11 data sets only): k records per class for train and
  min(k, val_per_class_max) for val (CoOp: 4), by the fewshot draw rule.
Test is always the task's test slice, untouched by every regime.
"""

from __future__ import annotations

import math
import re
import zlib

import numpy as np

from vptft import tasks as task_registry
from vptft.io import read_json, write_json

SPLITS = ("train", "val", "trainval", "test")
SCALE_RE = re.compile(r"^scale(\d+)$")
FEWSHOT_RE = re.compile(r"^fewshot(\d+)_(?:draw(\d+)|(prototype))$")
FRACTION_RE = re.compile(r"^fraction(\d+)$")
COOP_RE = re.compile(r"^coop(\d+)_draw(\d+)$")
FAMILIES = ("vtab1k", "scaling", "fewshot", "fgvc", "fraction", "coop")
FGVC_FAMILIES = ("fgvc", "fraction")  # the families of fine-grained tasks (and only of them)


def family_regimes(family: str, regimes: dict) -> list[str]:
    """The regime names of one family: vtab1k; scale<n> per size; fewshot<k>_draw<i> / fewshot<k>_prototype."""
    entry = regimes.get(family)
    if entry is None:
        return []
    if family in ("vtab1k", "fgvc"):
        return [family]
    if family == "fraction":
        return [f"fraction{pct}" for pct in entry["percent"]]
    if family == "scaling":
        return [f"scale{n}" for n in entry["n_train"]]
    if family == "coop":
        return [f"coop{k}_draw{i}" for k in entry["shots"] for i in range(entry["draws"])]
    selections = [f"draw{i}" for i in range(entry["draws"])] + (["prototype"] if entry["prototype"] else [])
    return [f"fewshot{k}_{selection}" for k in entry["shots"] for selection in selections]


def regime_names(regimes: dict) -> list[str]:
    """Every regime name a config defines."""
    return [name for family in FAMILIES for name in family_regimes(family, regimes)]


def family_of(regime: str) -> str:
    if regime in ("vtab1k", "fgvc"):
        return regime
    if FRACTION_RE.match(regime):
        return "fraction"
    if SCALE_RE.match(regime):
        return "scaling"
    if FEWSHOT_RE.match(regime):
        return "fewshot"
    if COOP_RE.match(regime):
        return "coop"
    raise ValueError(f"regime {regime!r} belongs to no family ({', '.join(FAMILIES)})")


def _fgvc_spec(regimes: dict) -> dict:
    fgvc = regimes.get("fgvc") or {}
    return {
        "kind": "fgvc",
        "val_fraction": fgvc.get("val_fraction", 0.1),
        "seed": fgvc.get("seed", 0),
        "final_split": fgvc.get("final_split", "train"),
    }


def regime_spec(regime: str, regimes: dict) -> dict:
    """The sizes of one named regime, from the config's `regimes` section."""
    if regime not in regime_names(regimes):
        raise ValueError(
            f"regime {regime!r} is not configured; configured regimes: {', '.join(regime_names(regimes))}"
        )
    if regime == "vtab1k":
        return {
            "kind": "vtab1k",
            "n_train": regimes["vtab1k"]["n_train"],
            "n_val": regimes["vtab1k"]["n_val"],
        }
    if regime == "fgvc":
        return _fgvc_spec(regimes)
    if match := FRACTION_RE.match(regime):
        return {**_fgvc_spec(regimes), "kind": "fraction", "percent": int(match.group(1))}
    if match := SCALE_RE.match(regime):
        n, scaling = int(match.group(1)), regimes["scaling"]
        return {
            "kind": "scaling",
            "n_train": n,
            "n_val": n // scaling["ratio"],
            "ratio": scaling["ratio"],
            "seed": scaling["seed"],
        }
    if match := COOP_RE.match(regime):
        k, draw, coop = int(match.group(1)), int(match.group(2)), regimes["coop"]
        cap = coop.get("val_per_class_max", 4)  # the schema's default (CoOp's)
        return {
            "kind": "fewshot",
            "per_class": k,
            "val_per_class": k if cap is None else min(k, cap),
            "selection": "draw",
            "seed": coop.get("seed", 0) + draw,
            "final_split": coop.get("final_split", "train"),  # CoOp trains on the k shots only
        }
    k, draw, prototype = FEWSHOT_RE.match(regime).groups()
    fewshot = regimes["fewshot"]
    if prototype:
        return {"kind": "fewshot", "per_class": int(k), "selection": "prototype"}
    return {"kind": "fewshot", "per_class": int(k), "selection": "draw", "seed": fewshot["seed"] + int(draw)}


def _test_range(task, split_sizes) -> tuple[str, int, int]:
    stop = task.test_stop if task.test_stop is not None else split_sizes[task.test_split]
    return task.test_split, task.test_start, stop


def _vtab1k(task, split_sizes: dict, n_train: int, n_val: int) -> dict:
    def block(split, start, n):
        available = split_sizes.get(split, 0) - start
        if n > available:
            raise ValueError(
                f"task {task.name}: needs {n} records from {split}[{start}:] but only "
                f"{max(available, 0)} exist; lower the regime size in the config"
            )
        return list(range(start, start + n))

    train = block(task.train_split, 0, n_train)
    val = block(task.val_split, task.val_start, n_val)
    if task.train_split == task.val_split and task.val_start < n_train:
        raise ValueError(
            f"task {task.name}: train[:{n_train}] overlaps the val slice starting at {task.val_start}"
        )
    return {"train": {task.train_split: train}, "val": {task.val_split: val}}


def non_test_pool(task, split_sizes: dict) -> list[tuple[str, int]]:
    """Every (split, index) of the task's train and val splits that is not in its test slice."""
    test_split, test_start, test_stop = _test_range(task, split_sizes)
    pool = []
    for split in dict.fromkeys((task.train_split, task.val_split)):
        pool += [
            (split, i)
            for i in range(split_sizes[split])
            if not (split == test_split and test_start <= i < test_stop)
        ]
    return pool


def pool_size(task, split_sizes: dict) -> int:
    """len(non_test_pool(task, split_sizes)), by arithmetic."""
    test_split, test_start, test_stop = _test_range(task, split_sizes)
    splits = dict.fromkeys((task.train_split, task.val_split))
    overlap = max(0, min(test_stop, split_sizes[test_split]) - test_start) if test_split in splits else 0
    return sum(split_sizes[split] for split in splits) - overlap


def capped_sizes(n_train: int, n_val: int, available: int, ratio: int) -> tuple[int, int] | None:
    """The train and val sizes a scaling regime gets where the task has fewer than n_train + n_val records (the
    same train:val ratio over all it has); None where it has enough."""
    if n_train + n_val <= available:
        return None
    n_val = available // (ratio + 1)
    return available - n_val, n_val


def _seeded_order(task, pool: list, seed: int) -> list:
    rng = np.random.default_rng([seed, zlib.crc32(task.name.encode())])
    return [pool[i] for i in rng.permutation(len(pool))]


def fgvc_parts(task, split_sizes: dict, val_fraction: float, seed: int) -> tuple[list, list]:
    """The fgvc regime's train and val records ((split, index) lists, train in one seeded order): the task's own
    val split where it has one, else a seeded ceil(val_fraction) share of its train split."""
    n = split_sizes[task.train_split]
    if task.val_split != task.train_split:
        train = [(task.train_split, i) for i in range(n)]
        return _seeded_order(task, train, seed), [
            (task.val_split, i) for i in range(split_sizes[task.val_split])
        ]
    order = _seeded_order(task, [(task.train_split, i) for i in range(n)], seed)
    n_val = math.ceil(val_fraction * n - 1e-9)
    return order[n_val:], sorted(order[:n_val])


def _fgvc(task, split_sizes: dict, spec: dict) -> dict:
    train, val = fgvc_parts(task, split_sizes, spec["val_fraction"], spec["seed"])
    if spec["kind"] == "fraction":
        train = train[: max(1, round(spec["percent"] / 100 * len(train)))]
    return {"train": _group(sorted(train)), "val": _group(val)}


def _group(records) -> dict:
    out: dict = {}
    for split, index in records:
        out.setdefault(split, []).append(index)
    return out


def _scaling(task, split_sizes: dict, n_train: int, n_val: int, ratio: int, seed: int) -> dict:
    pool = non_test_pool(task, split_sizes)
    capped = None
    if used := capped_sizes(n_train, n_val, len(pool), ratio):  # capped by what the task has
        capped = {"requested": [n_train, n_val], "available": len(pool), "used": list(used)}
        n_train, n_val = used
    order = _seeded_order(task, pool, seed)
    return {"train": _group(order[:n_train]), "val": _group(order[len(order) - n_val :]), "capped": capped}


def _fewshot(task, order: list, labels: dict, per_class: int, val_per_class: int | None = None) -> dict:
    """The first per_class records of each class in `order` for train, the next val_per_class (default
    per_class) for val."""
    val_per_class = per_class if val_per_class is None else val_per_class
    total = per_class + val_per_class
    picked: dict = {"train": [], "val": []}
    seen = np.zeros(task.num_classes, dtype=int)
    for split, index in order:
        label = int(labels[split][index])
        if seen[label] < total:
            picked["train" if seen[label] < per_class else "val"].append((split, index))
            seen[label] += 1
        if (seen == total).all():
            break
    return {
        "train": _group(picked["train"]),
        "val": _group(picked["val"]),
        "missing_classes": {
            "train": [c for c in range(task.num_classes) if seen[c] < per_class],
            "val": [c for c in range(task.num_classes) if seen[c] < total],
        },
    }


def prototype_order(pool: list, labels: dict, features, num_classes: int) -> list:
    """The pool ordered, within each class, by distance of each record's feature to its class's mean feature
    (`features`: (len(pool), D), rows in pool order); records of different classes keep no mutual order."""
    y = np.array([int(labels[split][index]) for split, index in pool])
    features = np.asarray(features, dtype=np.float64)
    distance = np.zeros(len(pool))
    for c in range(num_classes):
        rows = np.flatnonzero(y == c)
        if len(rows):
            distance[rows] = np.linalg.norm(features[rows] - features[rows].mean(axis=0), axis=1)
    return [pool[i] for i in np.lexsort((np.arange(len(pool)), distance))]


def build_manifest(
    task_name: str, regime: str, spec: dict, data_info: dict, data_dir: str, pool_features=None
) -> dict:
    """The manifest of one task and regime, with per-split class counts and a content hash.

    `pool_features(task, pool)` -> (len(pool), D) backbone features: needed only by the prototype selection.
    """
    task = task_registry.get_task(task_name)
    sizes = data_info["split_sizes"]
    if spec["kind"] == "vtab1k":
        parts = _vtab1k(task, sizes, spec["n_train"], spec["n_val"])
    elif spec["kind"] == "scaling":
        parts = _scaling(task, sizes, spec["n_train"], spec["n_val"], spec["ratio"], spec["seed"])
    elif spec["kind"] in ("fgvc", "fraction"):
        parts = _fgvc(task, sizes, spec)
    elif spec["kind"] == "fewshot":
        pool = non_test_pool(task, sizes)
        labels = {
            name: task_registry.load_labels(task, name, data_dir)
            for name in dict.fromkeys(split for split, _ in pool)
        }
        if spec["selection"] == "prototype":
            if pool_features is None:
                raise ValueError(
                    f"{regime}: the prototype selection needs the backbone's features of the pool"
                )
            order = prototype_order(pool, labels, pool_features(task, pool), task.num_classes)
        else:
            order = _seeded_order(task, pool, spec["seed"])
        parts = _fewshot(task, order, labels, spec["per_class"], spec.get("val_per_class"))
    else:
        raise ValueError(f"unknown regime kind {spec['kind']!r}")
    test_split, test_start, test_stop = _test_range(task, sizes)
    splits = {
        "train": parts.pop("train"),
        "val": parts.pop("val"),
        "test": {test_split: list(range(test_start, test_stop))},
    }
    trainval: dict = {}
    for part in (splits["train"], splits["val"]):
        for split, indices in part.items():
            trainval.setdefault(split, []).extend(indices)
    splits["trainval"] = trainval
    class_counts = {}
    for name in ("train", "val", "test"):  # trainval's labels are train's and val's: not read again
        part = splits[name]
        y = np.concatenate(
            [task_registry.load_labels(task, src, data_dir, idx) for src, idx in part.items()]
            or [np.zeros(0, np.int64)]
        )
        if len(y) and (y.min() < 0 or y.max() >= task.num_classes):
            raise ValueError(f"task {task.name}: label outside 0..{task.num_classes - 1} in split {name}")
        class_counts[name] = np.bincount(y, minlength=task.num_classes).tolist()
    class_counts["trainval"] = [a + b for a, b in zip(class_counts["train"], class_counts["val"])]
    return {
        "task": task.name,
        "regime": regime,
        "spec": spec,
        "num_classes": task.num_classes,
        "data": {"source": data_info["source"], "split_sizes": sizes},
        "splits": splits,
        "class_counts": class_counts,
        **parts,
    }


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
