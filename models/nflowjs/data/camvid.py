"""CamVid in the SegNet 11-class layout, optionally with classes held out as anomalies.

Layout: ``<root>/{train,val,test}/images/<seq>_<frame>.jpg`` and ``.../labels/<same stem>.png``
(single-channel uint8: 0-10 the classes below, 11 void). With ``held_out`` (CamVid-OOD: the
paper-style protocol of holding classes out), held-out pixels are ignored in training labels
and form the anomaly class of the OOD ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from nflowjs.data.transforms import IGNORE_ID

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
CAMVID_VOID = 11
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
        image_dir = self.root / split / "images"
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"{image_dir} not found: point root at a CamVid folder with "
                "{train,val,test}/images and /labels (SegNet layout)"
            )
        self.images = sorted(image_dir.glob("*.jpg")) + sorted(image_dir.glob("*.png"))
        self.labels = [self.root / split / "labels" / f"{p.stem}.png" for p in self.images]
        missing = [str(p) for p in self.labels if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} label files missing, e.g. {missing[0]}")
        self.classes = tuple(c for c in CAMVID_CLASSES if c not in held_out)
        self.held_out = tuple(held_out)
        self.transform = transform
        self.with_ood_mask = with_ood_mask

        # One lookup table maps raw ids to training ids; another marks anomalies.
        self._train_ids = torch.full((256,), IGNORE_ID, dtype=torch.int64)
        self._ood = torch.full((256,), IGNORE_ID, dtype=torch.uint8)
        for raw, name in enumerate(CAMVID_CLASSES):
            self._ood[raw] = int(name in held_out)
            if name not in held_out:
                self._train_ids[raw] = self.classes.index(name)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = read_rgb(self.images[index])
        raw = torch.from_numpy(np.asarray(Image.open(self.labels[index]), dtype=np.int64))
        sample = [tv_tensors.Image(image), tv_tensors.Mask(self._train_ids[raw])]
        if self.with_ood_mask:
            sample.append(tv_tensors.Mask(self._ood[raw]))
        if self.transform is not None:
            sample = self.transform(*sample)
        return tuple(t.as_subclass(torch.Tensor) for t in sample)


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as uint8 3xHxW RGB (PIL: torchvision's own decoders are deprecated)."""
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
