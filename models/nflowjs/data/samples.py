"""Steps every segmentation dataset here shares: label files to ids, lookup tables, transforms."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from nflowjs.data.transforms import IGNORE_ID


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as uint8 3xHxW RGB (PIL: torchvision's own decoders are deprecated)."""
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def read_label(path: Path) -> torch.Tensor:
    """A single-channel label PNG as int64 HxW (palette PNGs give their stored indices)."""
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image, dtype=np.int64))


def lookup_table(
    mapping: Mapping[int, int], fill: int = IGNORE_ID, dtype: torch.dtype = torch.int64
) -> torch.Tensor:
    """A 256-entry table for 8-bit label ids; ids not in ``mapping`` get ``fill``."""
    table = torch.full((256,), fill, dtype=dtype)
    for raw, value in mapping.items():
        table[raw] = value
    return table


def to_sample(image: torch.Tensor, *masks: torch.Tensor, transform=None) -> tuple:
    """Wrap as tv_tensors so a v2 ``transform`` moves masks with the image; return plain tensors."""
    sample = [tv_tensors.Image(image), *(tv_tensors.Mask(m) for m in masks)]
    if transform is not None:
        sample = transform(*sample)
    return tuple(t.as_subclass(torch.Tensor) for t in sample)


def require_dir(path: Path, layout: str) -> Path:
    """``path`` if it is a folder, else a FileNotFoundError that shows the expected layout."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found: expected the layout {layout}")
    return path


def require_files(paths: list[Path], what: str) -> None:
    """Raise one error naming how many ``what`` files are missing and the first of them."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} {what} files missing, e.g. {missing[0]}")
