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


DECODE_CHUNK = 1024  # records decoded at full size before they are resized


def resize_size(size) -> tuple[int, int]:
    """The FGVC transforms' resize before the crop: 256 for a 224 crop (the public VPT code), scaled alike."""
    return tuple(round(s * 256 / 224) for s in size)


def to_square_uint8_tensor(images, side: int) -> torch.Tensor:
    """uint8 HxWx3 images -> uint8 (N, 3, side, side): the shorter side resized to `side` (aspect kept,
    bilinear with antialiasing, as torchvision's Resize(int)), then the centre square of the longer side.

    Every crop the FGVC transforms take lies in the image's centre square here, so the eval centre crop equals
    the public code's; the train random crops range over the square, not the whole longer side
    (docs/protocol.md#fgvc)."""
    out = []
    for image in images if isinstance(images, list) else list(images):
        x = torch.as_tensor(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        h, w = x.shape[-2:]
        scale = side / min(h, w)
        new = (max(side, round(h * scale)), max(side, round(w * scale)))
        if (h, w) != new:
            x = F.interpolate(x, size=new, mode="bilinear", align_corners=False, antialias=True)
        top, left = (new[0] - side) // 2, (new[1] - side) // 2
        out.append(x[..., top : top + side, left : left + side].round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out) if out else torch.zeros((0, 3, side, side), dtype=torch.uint8)


def decoded_size(task, size) -> tuple[int, int]:
    """The size a task's images are decoded to for a backbone input of `size` (larger where they are cropped)."""
    return resize_size(size) if task.preprocessing == "fgvc" else tuple(size)


def load_split(manifest: dict, split: str, data_dir: str, size) -> SplitData:
    """The records of `split` (train / val / trainval / test) of a manifest, decoded for a backbone input of
    `size`: resized to it, or (FGVC preprocessing) to the square its crops are taken from."""
    task = task_registry.get_task(manifest["task"])
    images, labels = [], []
    for source_split, indices in manifest["splits"][split].items():
        for start in range(
            0, len(indices), DECODE_CHUNK
        ):  # full-size images of one chunk in memory at a time
            x, y = task_registry.load_images(
                task, source_split, indices[start : start + DECODE_CHUNK], data_dir
            )
            if task.preprocessing == "fgvc":
                images.append(to_square_uint8_tensor(x, decoded_size(task, size)[0]))
            else:
                images.append(to_uint8_tensor(x, size))
            labels.append(torch.as_tensor(y, dtype=torch.int64))
    if not images:  # an empty split
        return SplitData(
            torch.zeros((0, 3, *decoded_size(task, size)), dtype=torch.uint8), torch.zeros(0).long()
        )
    return SplitData(torch.cat(images), torch.cat(labels))


def centre_crop(x: torch.Tensor, size) -> torch.Tensor:
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def random_crop_flip(x: torch.Tensor, size, generator: torch.Generator) -> torch.Tensor:
    """A random `size` crop of each image, mirrored left-right with probability 1/2 (the public VPT code's FGVC
    training transforms after its resize); `generator` (on the CPU) makes the draws reproducible."""
    n, (h, w) = len(x), x.shape[-2:]
    tops = torch.randint(0, h - size[0] + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(0, w - size[1] + 1, (n,), generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    crops = []
    for image, top, left, flip in zip(x, tops, lefts, flips):
        crop = image[:, top : top + size[0], left : left + size[1]]
        crops.append(crop.flip(-1) if flip else crop)
    return torch.stack(crops) if crops else x[..., : size[0], : size[1]]


class Normalize(torch.nn.Module):
    """uint8 (N, 3, H, W) -> float, scaled to [0, 1] and normalised with the configured mean / std.

    crop: the backbone's input size where the images are decoded larger (FGVC preprocessing): a random crop and
    flip when called with a `generator` (training), the centre crop otherwise."""

    def __init__(self, mean, std, crop=None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)
        self.crop = tuple(crop) if crop is not None else None

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.crop is not None and tuple(x.shape[-2:]) != self.crop:
            x = centre_crop(x, self.crop) if generator is None else random_crop_flip(x, self.crop, generator)
        return (x.float() - self.mean) / self.std
