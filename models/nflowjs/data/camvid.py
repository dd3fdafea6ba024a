"""CamVid in the SegNet 11-class layout, optionally with classes held out as anomalies.

Layout: ``<root>/{train,val,test}/images/<seq>_<frame>.jpg`` and ``.../labels/<same stem>.png``
(single-channel uint8: 0-10 the classes below, 11 void). With ``held_out`` (CamVid-OOD: the
paper-style protocol of holding classes out), held-out pixels are ignored in training labels
and form the anomaly class of the OOD ground truth.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from nflowjs.data.samples import (
    lookup_table,
    read_label,
    read_rgb,
    require_dir,
    require_files,
    to_sample,
)

CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign/symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
CAMVID_OOD_HELD_OUT = ("pedestrian", "bicyclist")


class CamVid(Dataset):
    """Yields ``(image uint8 3xHxW, label int64 HxW)``, plus ``ood_mask`` (0/1/255) if asked.

    Labels are the inlier classes renumbered 0..K-1 in ``self.classes`` order, 255 for void and
    held-out classes. ``transform`` (torchvision v2) sees ``(Image, Mask)`` or ``(Image, Mask,
    Mask)``, so geometric augmentations move the OOD mask with the label.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        held_out: tuple[str, ...] = (),
        transform=None,
        with_ood_mask: bool = False,
    ):
        self.root = Path(root)
        unknown = set(held_out) - set(CAMVID_CLASSES)
        if unknown:
            raise ValueError(f"unknown CamVid classes {sorted(unknown)}; known: {CAMVID_CLASSES}")
        layout = "<root>/{train,val,test}/images/*.jpg and .../labels/*.png (SegNet layout)"
        image_dir = require_dir(self.root / split / "images", layout)
        self.images = sorted(image_dir.glob("*.jpg")) + sorted(image_dir.glob("*.png"))
        self.labels = [self.root / split / "labels" / f"{p.stem}.png" for p in self.images]
        require_files(self.labels, "CamVid label")
        self.classes = tuple(c for c in CAMVID_CLASSES if c not in held_out)
        self.held_out = tuple(held_out)
        self.transform = transform
        self.with_ood_mask = with_ood_mask

        # One lookup table maps raw ids to training ids; another marks anomalies (void: 255).
        self._train_ids = lookup_table(
            {
                raw: self.classes.index(name)
                for raw, name in enumerate(CAMVID_CLASSES)
                if name not in held_out
            }
        )
        self._ood = lookup_table(
            {raw: int(name in held_out) for raw, name in enumerate(CAMVID_CLASSES)},
            dtype=torch.uint8,
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        raw = read_label(self.labels[index])
        masks = [self._train_ids[raw], *([self._ood[raw]] if self.with_ood_mask else [])]
        return to_sample(read_rgb(self.images[index]), *masks, transform=self.transform)
