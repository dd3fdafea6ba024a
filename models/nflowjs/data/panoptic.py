"""COCO panoptic annotations (WildDash 2, BSB Aerial): a json of segments and RGB-encoded PNGs.

The PNG stores each pixel's segment id as ``R + 256 G + 256^2 B`` (0 = no segment); the json's
``annotations[i]["segments_info"]`` gives each segment id its ``category_id``, and
``annotations[i]["image_id"]`` links the PNG to ``images[j]["file_name"]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class PanopticFrame:
    image_file: str  # as named in the json's images
    segments_file: str  # the PNG, as named in the json's annotations
    segment_categories: dict[int, int]  # segment id -> category id


def read_coco_panoptic(json_path: Path) -> tuple[dict[int, str], list[PanopticFrame]]:
    """Category names by id and one frame per annotation, in the json's order."""
    data = json.loads(Path(json_path).read_text())
    categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    image_files = {image["id"]: image["file_name"] for image in data["images"]}
    frames = [
        PanopticFrame(
            image_file=image_files[a["image_id"]],
            segments_file=a["file_name"],
            segment_categories={int(s["id"]): int(s["category_id"]) for s in a["segments_info"]},
        )
        for a in data["annotations"]
    ]
    return categories, frames


def read_segment_ids(path: Path) -> np.ndarray:
    """The segment id of every pixel of an RGB-encoded panoptic PNG (int64 HxW)."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def segments_to_values(
    segment_ids: np.ndarray, value_of: dict[int, int], default: int, dtype=torch.int64
) -> torch.Tensor:
    """Each pixel's ``value_of[segment id]``; ``default`` for ids the json does not list."""
    unique, inverse = np.unique(segment_ids, return_inverse=True)
    values = np.array([value_of.get(int(s), default) for s in unique], dtype=np.int64)
    return torch.from_numpy(values[inverse].reshape(segment_ids.shape)).to(dtype)
