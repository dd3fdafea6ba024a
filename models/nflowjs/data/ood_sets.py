"""Road-anomaly test sets yielding ``(image uint8 3xHxW, ood_mask uint8 HxW)``.

``ood_mask`` is 0 inlier, 1 anomaly, 255 void (SegmentMeIfYouCan convention). LostAndFound and
SMIYC ObstacleTrack only label the drivable area, so everything off the road is void there.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from nflowjs.data.samples import (
    lookup_table,
    read_label,
    read_rgb,
    require_dir,
    require_files,
    to_sample,
)

# LostAndFound gtCoarse labelIds: 0 unlabeled / outside the annotated road ROI, 1 free road,
# 2.. the obstacle classes (2-43 in the release). SMIYC's evaluation code counts ids 2-200 as
# anomalies, 1 as inlier and everything else as void; so do we.
LAF_FREE = 1
LAF_OBSTACLES = range(2, 201)
# SMIYC's "LostAndFound-testNoKnown" ("excluding known objects - pedestrians and bicycles"):
# the test split less the frames with no labelled pixel and less the frames that SMIYC's code
# (road-anomaly-benchmark, datasets/tracks.py) lists by name prefix: the sequence with children
# and three sequences with bicycles. SMIYC expects 1043 frames on the full release. Pixels keep
# the LostAndFound mapping above; no object class is removed inside the kept frames.
SMIYC_NO_KNOWN_EXCLUDED = (
    "15_Rechbergstr_Deckenpfronn",  # children
    "01_Hanns_Klemm_Str_45_000006",  # bicycle
    "01_Hanns_Klemm_Str_45_000007",  # bicycle
    "10_Schlossberg_9_000004",  # bicycle
)
_LAF_SUFFIX = "_leftImg8bit"
_LAF_LAYOUT = (
    "<root>/leftImg8bit/{train,test}/<sequence>/*_leftImg8bit.png and "
    "<root>/gtCoarse/<split>/<sequence>/*_gtCoarse_labelIds.png (LostAndFound release)"
)


def _binary_lookup() -> torch.Tensor:
    """0 -> 0, 1 -> 1, anything else void: for masks that already use the SMIYC convention."""
    return lookup_table({0: 0, 1: 1}, dtype=torch.uint8)


def _find_laf_images(image_dir: Path) -> list[Path]:
    for ext in ("png", "webp", "jpg"):  # SMIYC's code accepts re-encoded copies too
        found = sorted(image_dir.glob(f"*/*{_LAF_SUFFIX}.{ext}"))
        if found:
            return found
    return []


class LostAndFound(Dataset):
    """LostAndFound ``train``/``test``; ``no_known=True`` gives SMIYC's LostAndFound-noKnown.

    ``skip_unlabeled`` (default: same as ``no_known``) drops frames whose label is all 0, as SMIYC
    does for its "valid" subsets; it reads every label once at construction.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        no_known: bool = False,
        skip_unlabeled: bool | None = None,
        transform=None,
    ):
        self.root = Path(root)
        if no_known and split != "test":
            raise ValueError(f"no_known is SMIYC's subset of the test split, not of {split!r}")
        image_dir = require_dir(self.root / "leftImg8bit" / split, _LAF_LAYOUT)
        images = _find_laf_images(image_dir)
        if not images:
            raise FileNotFoundError(
                f"no *{_LAF_SUFFIX}.png under {image_dir}: expected {_LAF_LAYOUT}"
            )
        if no_known:
            images = [p for p in images if not p.name.startswith(SMIYC_NO_KNOWN_EXCLUDED)]
        labels = [self._label_path(p, split) for p in images]
        require_files(labels, "gtCoarse labelIds")
        if skip_unlabeled is None:
            skip_unlabeled = no_known
        if skip_unlabeled:
            keep = [i for i, p in enumerate(labels) if _has_nonzero(p)]
            images, labels = [images[i] for i in keep], [labels[i] for i in keep]
        self.images, self.labels = images, labels
        self.transform = transform
        self._ood = lookup_table(
            {LAF_FREE: 0, **dict.fromkeys(LAF_OBSTACLES, 1)}, dtype=torch.uint8
        )

    def _label_path(self, image: Path, split: str) -> Path:
        frame = image.name[: image.name.rindex(_LAF_SUFFIX)]
        return self.root / "gtCoarse" / split / image.parent.name / f"{frame}_gtCoarse_labelIds.png"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        ood = self._ood[read_label(self.labels[index])]
        return to_sample(read_rgb(self.images[index]), ood, transform=self.transform)


def _has_nonzero(path: Path) -> bool:
    with Image.open(path) as image:
        return image.getbbox() is not None


class FishyscapesLostAndFound(Dataset):
    """Fishyscapes LostAndFound (the 100-frame validation release) with LostAndFound's images.

    ``root`` holds the extracted ``fishyscapes_lostandfound.zip``: one
    ``<index>_<LAF frame>_labels.png`` per frame with 0 inlier, 1 anomaly, 255 void, e.g.
    ``0000_04_Maurener_Weg_8_000000_000030_labels.png``.
    Fishyscapes ships no images: each frame is looked up in ``laf_root/leftImg8bit/{train,test}/
    <sequence>/<LAF frame>_leftImg8bit.png``.
    """

    def __init__(self, root: str | Path, laf_root: str | Path, transform=None):
        self.root, self.laf_root = Path(root), Path(laf_root)
        layout = "<root>/<index>_<frame>_labels.png (fishyscapes_lostandfound.zip)"
        self.labels = sorted(require_dir(self.root, layout).glob("*_labels.png"))
        if not self.labels:
            raise FileNotFoundError(f"no *_labels.png in {self.root}: expected {layout}")
        self.images = [self._image_path(p) for p in self.labels]
        require_files(self.images, "LostAndFound image (give laf_root the LostAndFound release)")
        self.transform = transform
        self._ood = _binary_lookup()

    def _image_path(self, label: Path) -> Path:
        frame = label.name.split("_", 1)[1][: -len("_labels.png")]
        sequence = "_".join(frame.split("_")[:-2])
        candidates = [
            self.laf_root / "leftImg8bit" / split / sequence / f"{frame}{_LAF_SUFFIX}.png"
            for split in ("train", "test")
        ]
        return next((p for p in candidates if p.exists()), candidates[-1])  # last: reported

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        ood = self._ood[read_label(self.labels[index])]
        return to_sample(read_rgb(self.images[index]), ood, transform=self.transform)


class SegmentMeIfYouCan(Dataset):
    """SMIYC AnomalyTrack or ObstacleTrack: ``root`` is ``dataset_AnomalyTrack`` (jpg) or
    ``dataset_ObstacleTrack`` (webp), with ``images/<frame>.<ext>`` and
    ``labels_masks/<frame>_labels_semantic.png`` (0 inlier, 1 anomaly, 255 void; ObstacleTrack is
    void off the road). Only frames with a label file are yielded: the public release labels
    the validation frames only; ``unlabeled_images`` counts the others.
    """

    def __init__(self, root: str | Path, transform=None):
        self.root = Path(root)
        layout = "<root>/images/*.{jpg,webp,png} and <root>/labels_masks/*_labels_semantic.png"
        image_dir = require_dir(self.root / "images", layout)
        label_dir = require_dir(self.root / "labels_masks", layout)
        images = sorted(p for ext in ("jpg", "webp", "png") for p in image_dir.glob(f"*.{ext}"))
        pairs = [(p, label_dir / f"{p.stem}_labels_semantic.png") for p in images]
        pairs = [(image, label) for image, label in pairs if label.exists()]
        if not pairs:
            raise FileNotFoundError(
                f"none of the {len(images)} images in {image_dir} has a label in {label_dir}: "
                f"expected {layout}"
            )
        self.images = [image for image, _ in pairs]
        self.labels = [label for _, label in pairs]
        self.unlabeled_images = len(images) - len(pairs)
        self.transform = transform
        self._ood = _binary_lookup()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        ood = self._ood[read_label(self.labels[index])]
        return to_sample(read_rgb(self.images[index]), ood, transform=self.transform)
