"""The VPT paper's Figures 9 and 21: t-SNE of the feature each final model's head reads, on test images.

No training: each strategy's first-seed final run is rebuilt from its tuned parameters (attribution.load_trained)
and its pre-logits of a seeded sample of test images embedded in 2-D by scikit-learn's t-SNE (PCA init, fixed
random state), so the same runs give the same maps."""

from __future__ import annotations

import numpy as np
import torch

from vptft.io import atomic_path


@torch.no_grad()
def features(model, images: torch.Tensor, normalize, device, batch_size: int = 256) -> np.ndarray:
    """The feature the head reads (pre-logits), float64 (N, D), in batches."""
    from vptft.engine import pre_logits

    chunks = [
        pre_logits(model, normalize(images[i : i + batch_size].to(device))).double().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).numpy()


def embed(feats: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """2-D t-SNE of the features (perplexity capped below a third of the points, as t-SNE requires)."""
    from sklearn.manifold import TSNE

    perplexity = min(perplexity, (len(feats) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(feats)


def tsne_maps(spec: dict, manifest_path, backbone_path, runs: dict[str, str], out_npz) -> dict:
    """t-SNE maps of each strategy's run in `runs` (strategy -> run dir) on `spec.tsne.n_images` test images of
    `spec.task` drawn with `spec.tsne.seed`; writes out_npz (index, labels, strategies, emb_<s>, top1_<s>: the
    top-1 on those images) and returns {strategy: top-1}."""
    from vptft.attribution import load_run_of
    from vptft.backbones.factory import input_config
    from vptft.data import Normalize, load_split
    from vptft.engine import pick_device
    from vptft.splits import read_manifest

    cfg = spec["tsne"]
    manifest = read_manifest(manifest_path)
    device = pick_device(spec["device"])
    arrays, top1, test, normalize, index = {}, {}, None, None, None
    for strategy, run_dir in runs.items():
        model, _ = load_run_of(
            run_dir, spec["task"], strategy, manifest["num_classes"], backbone_path, spec["backbone"], device
        )
        if test is None:  # decoded once, for every strategy
            input_cfg = input_config(model.backbone, spec["normalization"])
            normalize = Normalize(input_cfg["mean"], input_cfg["std"], input_cfg.get("size")).to(device)
            test = load_split(manifest, "test", spec["data_dir"], input_cfg["size"])
            order = np.random.default_rng(cfg["seed"]).permutation(len(test.labels))
            index = np.sort(order[: cfg["n_images"]])
        images = test.images[torch.as_tensor(index)]
        with torch.no_grad():
            predicted = model(normalize(images.to(device))).argmax(1).cpu()
        labels = test.labels[torch.as_tensor(index)]
        top1[strategy] = 100.0 * (predicted == labels).float().mean().item()
        arrays[f"emb_{strategy}"] = embed(
            features(model, images, normalize, device), cfg["perplexity"], cfg["seed"]
        )
        arrays[f"top1_{strategy}"] = np.array(top1[strategy])
        del model
    arrays.update(
        index=index, labels=test.labels[torch.as_tensor(index)].numpy(), strategies=np.array(list(runs))
    )
    with atomic_path(out_npz) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return top1
