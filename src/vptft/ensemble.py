"""The VPT paper's Figure 15: the five seeds' models of one strategy on one task as an ensemble.

No training: each seed's final run is rebuilt from its tuned parameters (attribution.load_trained), its test
class probabilities computed, and the ensemble predicts the class of their mean (the paper averages the runs'
predictions). Beside it: each seed's own test top-1, their mean and the best seed - the three numbers the
figure sets the ensemble against."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from vptft.io import atomic_path


@torch.no_grad()
def probabilities(model, images: torch.Tensor, normalize, device, batch_size: int = 256) -> torch.Tensor:
    """Softmax class probabilities (N, C) of uint8 images, in batches."""
    chunks = [
        model(normalize(images[i : i + batch_size].to(device))).float().softmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def top1(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (probs.argmax(1) == labels).float().mean().item() if len(labels) else 0.0


def seed_ensemble(spec: dict, manifest_path, backbone_path, run_dirs: list[str], out_csv) -> list[dict]:
    """Rows (task, strategy, member: seed<s> / ensemble, seeds, test_top1) for the final runs in `run_dirs`
    (one strategy on one task, two or more seeds); written to out_csv. A seed whose rebuilt model misses the
    test top-1 its run recorded is an error: the ensemble would not be of the runs the tables report."""
    from vptft.attribution import load_run_of
    from vptft.backbones.factory import input_config
    from vptft.data import Normalize, load_split
    from vptft.engine import pick_device
    from vptft.splits import read_manifest

    if len(run_dirs) < 2:
        raise ValueError(f"an ensemble needs two or more seeds' runs; got {run_dirs}")
    manifest = read_manifest(manifest_path)
    device = pick_device(spec["device"])
    test, normalize, members = None, None, []
    for run_dir in map(Path, run_dirs):
        model, metrics = load_run_of(
            run_dir,
            spec["task"],
            spec["strategy"],
            manifest["num_classes"],
            backbone_path,
            spec["backbone"],
            device,
        )
        if test is None:  # decoded once, for every seed
            input_cfg = input_config(model.backbone, spec["normalization"])
            normalize = Normalize(input_cfg["mean"], input_cfg["std"], input_cfg.get("size")).to(device)
            test = load_split(manifest, "test", spec["data_dir"], input_cfg["size"])
        probs = probabilities(model, test.images, normalize, device)
        ours, recorded = top1(probs, test.labels), float(metrics["test_top1"])
        if abs(ours - recorded) > spec.get("tolerance", 1.0):
            raise ValueError(
                f"{run_dir}: the rebuilt model scores {ours:.2f} % test top-1, the run recorded {recorded:.2f} %"
            )
        members.append((metrics["seed"], probs, ours))
        del model
    rows = [{"member": f"seed{seed}", "seeds": 1, "test_top1": score} for seed, _, score in members]
    mean_probs = torch.stack([probs for _, probs, _ in members]).mean(0)
    rows.append({"member": "ensemble", "seeds": len(members), "test_top1": top1(mean_probs, test.labels)})
    rows = [{"task": spec["task"], "strategy": spec["strategy"], **row} for row in rows]
    with atomic_path(out_csv) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return rows
