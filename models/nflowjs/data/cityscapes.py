"""Cityscapes fine annotations in the 19 training classes, from cityscapesscripts' label table.

Layout (the official release, ``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``):
``<root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
``<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`` (label ids 0-33).
The id -> trainId map and the class names come from ``cityscapesscripts.helpers.labels``; the
other datasets map onto these 19 names too (``cityscapes_train_id``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from cityscapesscripts.helpers.labels import name2label as _CS_NAME2LABEL
from torch.utils.data import Dataset

from nflowjs.data.samples import (
    lookup_table,
    read_label,
    read_rgb,
    require_dir,
    require_files,
    to_sample,
)
from nflowjs.data.transforms import IGNORE_ID

CITYSCAPES_CLASSES = tuple(
    label.name
    for label in sorted(_CS_LABELS, key=lambda label: label.trainId)
    if 0 <= label.trainId < IGNORE_ID
)
_IMAGE_SUFFIX = "_leftImg8bit.png"
_LAYOUT = (
    "<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
    "<root>/gtFine/<split>/<city>/*_gtFine_labelIds.png (Cityscapes release)"
)


def cityscapes_train_id(name: str) -> int:
    """trainId (0-18) of a Cityscapes label name, IGNORE_ID for the ones not trained on."""
    train_id = _CS_NAME2LABEL[name].trainId
    return train_id if 0 <= train_id < IGNORE_ID else IGNORE_ID


def label_id_to_train_id() -> torch.Tensor:
    """The 256-entry labelIds -> trainIds table (license plate, id -1, never occurs in files)."""
    return lookup_table(
        {label.id: cityscapes_train_id(label.name) for label in _CS_LABELS if label.id >= 0}
    )


class Cityscapes(Dataset):
    """Yields ``(image uint8 3xHxW, label int64 HxW)``: trainIds 0-18 in ``CITYSCAPES_CLASSES``
    order, 255 for every id with trainId 255 (void, parking, guard rail, caravan, ...)."""

    classes = CITYSCAPES_CLASSES

    def __init__(self, root: str | Path, split: str, transform=None):
        self.root = Path(root)
        image_dir = require_dir(self.root / "leftImg8bit" / split, _LAYOUT)
        self.images = sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
        if not self.images:
            raise FileNotFoundError(f"no *{_IMAGE_SUFFIX} under {image_dir}: expected {_LAYOUT}")
        self.labels = [
            self.root
            / "gtFine"
            / split
            / p.parent.name
            / f"{p.name[: -len(_IMAGE_SUFFIX)]}_gtFine_labelIds.png"
            for p in self.images
        ]
        require_files(self.labels, "gtFine labelIds")
        self.transform = transform
        self._train_ids = label_id_to_train_id()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        label = self._train_ids[read_label(self.labels[index])]
        return to_sample(read_rgb(self.images[index]), label, transform=self.transform)
