"""The paper's training augmentations on (image, label) pairs, built from torchvision v2.

Shorter side resized to ``base_size`` times a random scale in [0.5, 2], random crop padded with
the mean colour (label padded with ignore), horizontal flip with p = 0.5 (paper section 4.3).
"""

from __future__ import annotations

import random

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IGNORE_ID = 255


class RandomScaleShorterSide(v2.Transform):
    """Resize so the shorter side is ``base_size * s``, s ~ U(scale); labels use nearest."""

    def __init__(self, base_size: int, scale: tuple[float, float] = (0.5, 2.0)):
        super().__init__()
        self.base_size = base_size
        self.scale = scale

    def make_params(self, flat_inputs: list) -> dict:
        return {"shorter": round(self.base_size * random.uniform(*self.scale))}

    def transform(self, inpt, params: dict):
        return TF.resize(inpt, params["shorter"], antialias=True)


def training_transform(
    crop_size: int,
    base_size: int,
    mean_rgb: tuple[float, float, float],
    scale: tuple[float, float] = (0.5, 2.0),
) -> v2.Compose:
    """Augment a (tv_tensors.Image uint8, tv_tensors.Mask) pair; ``mean_rgb`` in [0, 1]."""
    fill = {tv_tensors.Image: [round(255 * m) for m in mean_rgb], tv_tensors.Mask: IGNORE_ID}
    return v2.Compose(
        [
            RandomScaleShorterSide(base_size, scale),
            v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill),
            v2.RandomHorizontalFlip(0.5),
        ]
    )


def to_model_input(image: torch.Tensor) -> torch.Tensor:
    """uint8 CHW -> float32 CHW in [0, 1], the segmenter's input."""
    return image.float().div_(255.0)
