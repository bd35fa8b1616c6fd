"""Fréchet distance between a task's training images and the pre-training data: the x axis of the paper's
Figure 3, which places each downstream task by how far its images lie from what the backbone was trained on.

The distance is pytorch-fid's (`calculate_frechet_distance` on float64 means and covariances) of features from
either the backbone itself (its pooled pre-logits) or pytorch-fid's FID InceptionV3 (pool3, 2048-d). The
Inception weights come from a local file (config key `fid.inception_weights`) or, when that is null, from
pytorch-fid's own download (machines without network must set the file).
The reference set is a fresh sample of the pre-training distribution (the mini benchmark renders one with its
FID seed) or image files from `fid.reference_dir`; FID is averaged over `repeats` reference subsets.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from vptft import engine
from vptft import tasks as task_registry
from vptft.backbones.factory import create_backbone, input_config
from vptft.data import Normalize, centre_crop, load_split, to_uint8_tensor
from vptft.io import image_files, write_json
from vptft.splits import read_manifest

MINI_REFERENCE_SEED = 99  # vptft.tasks.mini: pre-training renders seed 0, downstream tasks seed 1
POOL3_DIM = 2048


# ------------------------------------------------------------------------------------------------ distance
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (N, D) each, from their float64 means and covariances."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D; got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 2:
        raise ValueError(f"FID needs at least 2 samples per set (a covariance); got {len(a)} and {len(b)}")
    try:
        with warnings.catch_warnings():  # pytorch-fid 0.3 passes scipy's deprecated `disp` to sqrtm
            warnings.filterwarnings("ignore", "The `disp` argument", DeprecationWarning)
            return float(
                calculate_frechet_distance(
                    a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
                )
            )
    except ValueError as err:  # pytorch-fid: a large imaginary part of sqrtm (ill-conditioned covariances)
        raise ValueError(
            f"FID of {len(a)} vs {len(b)} samples of {a.shape[1]}-d features failed ({err}); "
            "more samples than feature dimensions make the covariances well-conditioned"
        ) from err


def fid_with_repeats(
    task_feats: np.ndarray, reference_feats: np.ndarray, n_reference: int, repeats: int, seed: int
) -> dict:
    """FID of the task against `repeats` seeded reference subsets of n_reference (disjoint when the pool allows).

    Returns {mean, std (population), values}.
    """
    pool = len(reference_feats)
    if n_reference > pool or repeats < 1:
        raise ValueError(
            f"{repeats} reference subsets of {n_reference} need a pool of at least {n_reference} "
            f"features; it has {pool}"
        )
    rng = np.random.default_rng(seed)
    if n_reference * repeats <= pool:
        order = rng.permutation(pool)
        subsets = [order[i * n_reference : (i + 1) * n_reference] for i in range(repeats)]
    else:
        subsets = [rng.choice(pool, n_reference, replace=False) for _ in range(repeats)]
    values = [frechet_distance(task_feats, reference_feats[idx]) for idx in subsets]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}


# ------------------------------------------------------------------------------------------------ features
@torch.no_grad()
def _batched(model, images_uint8: torch.Tensor, prepare, batch_size: int, device) -> np.ndarray:
    model.eval().to(device)
    feats = [
        model(prepare(images_uint8[start : start + batch_size].to(device))).double().cpu()
        for start in range(0, len(images_uint8), batch_size)
    ]
    return torch.cat(feats).flatten(1).numpy() if feats else np.zeros((0, 0))


def backbone_features(
    backbone, images_uint8: torch.Tensor, input_cfg: dict, device, batch_size: int = 256
) -> np.ndarray:
    """The backbone's pooled pre-logits (what a linear head reads) of uint8 (N, 3, H, W) images, float64 (N, D)."""
    normalize = Normalize(input_cfg["mean"], input_cfg["std"], input_cfg.get("size")).to(device)
    return _batched(_PreLogits(backbone), images_uint8, normalize, batch_size, device)


class _PreLogits(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return engine.pre_logits(self.backbone, x)


def fid_inception_architecture() -> torch.nn.Module:
    """pytorch-fid's FID Inception (torchvision's InceptionV3 with TF's blocks swapped in), without weights."""
    import torchvision
    from pytorch_fid import inception as pf

    net = torchvision.models.inception_v3(
        weights=None, num_classes=1008, aux_logits=False, init_weights=False
    )
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


def load_fid_inception(weights_path) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (pool3 output, input in [0, 1], resized to 299) with weights from a local file
    (or, with none configured, pytorch-fid's download).

    The architecture is built here and loaded strictly; pytorch-fid's own wrapper (block split, resize, scaling
    to [-1, 1]) is then built around it, its downloading builder replaced for that one call.
    """
    from pytorch_fid import inception as pf

    block = [pf.InceptionV3.BLOCK_INDEX_BY_DIM[POOL3_DIM]]
    if not weights_path:  # pytorch-fid's own download (torch hub cache), where the network allows
        try:
            return pf.InceptionV3(block, resize_input=True, normalize_input=True)
        except OSError as err:
            raise ValueError(
                f"pytorch-fid could not download its Inception weights ({err}); set config key "
                "`fid.inception_weights` to a local copy of pt_inception-2015-12-05-6726825d.pth, or "
                "`fid.features: backbone`"
            ) from err
    path = Path(weights_path)
    hint = (
        "set config key `fid.inception_weights` to a local copy of pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth"
    )
    if not path.is_file():
        raise ValueError(f"{path or 'no file'}: FID Inception weights not found; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # before building: fail fast
        net = fid_inception_architecture()
        net.load_state_dict(state, strict=True)
    except Exception as err:  # pickle, zip and key/shape mismatches each raise their own types
        raise ValueError(
            f"{path}: not FID Inception weights ({type(err).__name__}: {str(err)[:300]}); "
            f"delete it and {hint}"
        ) from err
    with mock.patch.object(pf, "fid_inception_v3", lambda: net):
        return pf.InceptionV3(block, resize_input=True, normalize_input=True)


class _Pool3(torch.nn.Module):
    def __init__(self, inception):
        super().__init__()
        self.inception = inception

    def forward(self, x):
        return self.inception(x)[0]


def _pool3_features(inception, images_uint8: torch.Tensor, device, batch_size: int) -> np.ndarray:
    return _batched(_Pool3(inception), images_uint8, lambda x: x.float() / 255, batch_size, device)


def inception_features(images_uint8: torch.Tensor, weights_path, device, batch_size: int = 64) -> np.ndarray:
    """FID Inception pool3 features of uint8 (N, 3, H, W) images, float64 (N, 2048); pytorch-fid resizes."""
    return _pool3_features(load_fid_inception(weights_path), images_uint8, device, batch_size)


# ------------------------------------------------------------------------------------------------ reference
def reference_images(benchmark: str, n: int, seed: int, reference_dir: str | None, size) -> torch.Tensor:
    """n pre-training images as uint8 (n, 3, *size): rendered for the mini benchmark, else files picked with a
    seeded RNG from `reference_dir` (png / jpg / jpeg, searched recursively)."""
    if benchmark == "mini":
        from vptft.tasks.mini import render_source

        return to_uint8_tensor(render_source(n, seed)[0], size)
    if not reference_dir:
        raise ValueError(
            f"benchmark {benchmark!r}: FID needs pre-training images; set config key "
            "`fid.reference_dir` to a folder of them"
        )
    root = Path(reference_dir)
    files = image_files(root)
    if len(files) < n:
        raise ValueError(
            f"{root}: {len(files)} image files (png/jpg/jpeg) where FID needs {n} (analyses.fid.n_reference "
            "x repeats); point `analyses.fid.reference_dir` at a folder with enough pre-training images"
        )
    from PIL import Image

    picked = np.random.default_rng(seed).choice(len(files), n, replace=False)
    images = []
    for i in picked:
        with Image.open(files[i]) as image:
            images.append(np.array(image.convert("RGB")))
    return to_uint8_tensor(images, size)


# ------------------------------------------------------------------------------------------------ the job
def run_fid(spec: dict, manifest_path, backbone_path, out_json) -> dict:
    """FID between one task's training images and the pre-training data; writes and returns the result JSON."""
    t0 = time.perf_counter()
    fid = spec["fid"]
    if fid["features"] not in ("backbone", "inception"):
        raise ValueError(f"fid.features is {fid['features']!r}; one of backbone, inception")
    task = task_registry.get_task(spec["task"])
    device = engine.pick_device(spec["device"])
    manifest = read_manifest(manifest_path)
    use_backbone = fid["features"] == "backbone"
    # the backbone's input size sets the image size of both sets; its weights only matter for its features
    backbone = create_backbone(spec["backbone"], backbone_path, pretrained=use_backbone)
    input_cfg = input_config(backbone, spec["normalization"])
    # FGVC's images are decoded larger than the input: FID sees the centre crop the models are evaluated on
    task_images = centre_crop(
        load_split(manifest, fid["split"], spec["data_dir"], input_cfg["size"]).images, input_cfg["size"]
    )
    n_reference, repeats = fid["n_reference"], fid["repeats"]
    seed = fid["seed"] + (MINI_REFERENCE_SEED if spec["benchmark"] == "mini" else 0)
    reference = reference_images(
        spec["benchmark"], n_reference * repeats, seed, fid.get("reference_dir"), input_cfg["size"]
    )
    if use_backbone:
        features = f"backbone:{spec['backbone']}"

        def extract(images):
            return backbone_features(backbone, images, input_cfg, device)
    else:
        # Inception sees uint8 at the backbone's input size (the size the task trains at), which pytorch-fid
        # resizes to 299; the weights are loaded once for both sets
        inception = load_fid_inception(fid["inception_weights"])
        weights = fid.get("inception_weights")
        features = f"inception:{Path(weights).name if weights else 'pytorch-fid download'}"

        def extract(images):
            return _pool3_features(inception, images, device, 64)

    result = fid_with_repeats(extract(task_images), extract(reference), n_reference, repeats, fid["seed"])
    out = {
        "task": task.name,
        "group": task.group,
        "domain": task.domain,
        "features": features,
        "fid_mean": result["mean"],
        "fid_std": result["std"],
        "fid_values": result["values"],
        "repeats": repeats,
        "n_task": len(task_images),
        "n_reference": n_reference,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_json(out_json, out)
    print(f"[fid] {task.name} ({features}): {out['fid_mean']:.3f} +- {out['fid_std']:.3f}", flush=True)
    return out
