"""StreetHazards (Hendrycks et al.): CARLA towns, 12 inlier classes, anomalies in the test towns.

Layout (``streethazards_train.tar`` and ``streethazards_test.tar`` extracted side by side):
``<root>/train/images/training/t{1,2,3}/*.png``, ``<root>/train/images/validation/t4/*.png``,
``<root>/test/images/test/t{5,6}/*.png``, each with ``annotations`` in place of ``images``.

Id convention of the annotation PNGs (single channel), checked against two public loaders: the
authors' ``anomaly-seg`` code subtracts 1 on load and calls the result 0 unlabeled ... 12
traffic sign, 13 anomaly (its OOD label is 13 after the shift); the NFlowJS authors' DenseHybrid
loader tests the raw file for 14 (anomaly) and 4 ("other"). So the files hold CARLA's semantic
tag + 1: 1 unlabeled, 2 building, 3 fence, 4 other, 5 pedestrian, 6 pole, 7 road line, 8 road,
9 sidewalk, 10 vegetation, 11 car, 12 wall, 13 traffic sign, 14 anomaly (test towns only).
The files were not inspected here; a 0 (never seen) is treated as void.

The 12 inlier classes follow the NFlowJS authors (DenseHybrid): the 13 raw classes less "other",
which is ignored in training and void in the OOD ground truth. "unlabeled" (CARLA's untagged
background, mostly sky) stays a class. ``ignored`` chooses differently, e.g. ``("unlabeled",)``
for the 12 classes of loaders that drop the background instead.
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

STREETHAZARDS_RAW_CLASSES = (  # file values 1..13
    "unlabeled",
    "building",
    "fence",
    "other",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
)
STREETHAZARDS_ANOMALY_ID = 14
STREETHAZARDS_IGNORED = ("other",)
_SPLITS = {"training": "train", "validation": "train", "test": "test"}
_LAYOUT = (
    "<root>/train/{images,annotations}/{training,validation}/t<N>/*.png and "
    "<root>/test/{images,annotations}/test/t<N>/*.png (StreetHazards tars)"
)


class StreetHazards(Dataset):
    """Yields ``(image, label)``, plus ``ood_mask`` (0 inlier, 1 anomaly, 255 void) if asked.

    ``split`` is ``training``, ``validation`` or ``test``; ``with_ood_mask`` defaults to True on
    ``test``. Labels are the inlier classes 0..11 in ``self.classes`` order; ignored classes,
    anomalies and 0 are 255. ``towns`` (e.g. ``("t5",)``) keeps only those town folders.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        ignored: tuple[str, ...] = STREETHAZARDS_IGNORED,
        towns: tuple[str, ...] | None = None,
        with_ood_mask: bool | None = None,
        transform=None,
    ):
        self.root = Path(root)
        if split not in _SPLITS:
            raise ValueError(f"unknown StreetHazards split {split!r}; use one of {sorted(_SPLITS)}")
        unknown = set(ignored) - set(STREETHAZARDS_RAW_CLASSES)
        if unknown:
            raise ValueError(
                f"unknown StreetHazards classes {sorted(unknown)}; "
                f"known: {STREETHAZARDS_RAW_CLASSES}"
            )
        image_dir = require_dir(self.root / _SPLITS[split] / "images" / split, _LAYOUT)
        town_dirs = sorted(d for d in image_dir.iterdir() if d.is_dir())
        if towns is not None:
            town_dirs = [d for d in town_dirs if d.name in towns]
        self.images = [p for d in town_dirs for p in sorted(d.glob("*.png"))]
        if not self.images:
            raise FileNotFoundError(
                f"no town folders with PNGs under {image_dir}: expected {_LAYOUT}"
            )
        annotation_dir = self.root / _SPLITS[split] / "annotations" / split
        self.labels = [annotation_dir / p.parent.name / p.name for p in self.images]
        require_files(self.labels, "StreetHazards annotation")
        self.classes = tuple(c for c in STREETHAZARDS_RAW_CLASSES if c not in ignored)
        self.with_ood_mask = split == "test" if with_ood_mask is None else with_ood_mask
        self.transform = transform

        raw_ids = {name: raw for raw, name in enumerate(STREETHAZARDS_RAW_CLASSES, start=1)}
        self._train_ids = lookup_table({raw_ids[c]: i for i, c in enumerate(self.classes)})
        self._ood = lookup_table(
            {**{raw_ids[c]: 0 for c in self.classes}, STREETHAZARDS_ANOMALY_ID: 1},
            dtype=torch.uint8,
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        raw = read_label(self.labels[index])
        masks = [self._train_ids[raw]]
        if self.with_ood_mask:
            masks.append(self._ood[raw])
        return to_sample(read_rgb(self.images[index]), *masks, transform=self.transform)
