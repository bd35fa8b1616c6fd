"""Load the records a manifest names into uint8 tensors at the backbone's input size, decoded once per job."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vptft import tasks as task_registry


@dataclass
class SplitData:
    images: torch.Tensor  # uint8 (N, 3, H, W) at the backbone's input size
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> SplitData:
        return SplitData(self.images.to(device), self.labels.to(device))


def to_uint8_tensor(images, size) -> torch.Tensor:
    """uint8 HxWx3 images (array or list of differently sized arrays) -> uint8 (N, 3, *size), bilinear resize."""
    out = []
    for image in images if isinstance(images, list) else [images]:
        x = torch.as_tensor(np.ascontiguousarray(image))
        x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(2, 0, 1)[None]
        if tuple(x.shape[-2:]) != tuple(size):  # no aspect keep, as in the VTAB pipeline
            x = (
                F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
                .round()
                .clamp(0, 255)
            )
        out.append(x.to(torch.uint8))
    return torch.cat(out) if out else torch.zeros((0, 3, *size), dtype=torch.uint8)


def load_split(manifest: dict, split: str, data_dir: str, size) -> SplitData:
    """The records of `split` (train / val / trainval / test) of a manifest."""
    task = task_registry.get_task(manifest["task"])
    images, labels = [], []
    for source_split, indices in manifest["splits"][split].items():
        x, y = task_registry.load_images(task, source_split, indices, data_dir)
        images.append(to_uint8_tensor(x, size))
        labels.append(torch.as_tensor(y, dtype=torch.int64))
    return SplitData(torch.cat(images), torch.cat(labels))


class Normalize(torch.nn.Module):
    """uint8 (N, 3, H, W) -> float, scaled to [0, 1] and normalised with the configured mean / std."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std
