"""Dataset names used by configs and the CLIs, mapped to their constructors.

Segmentation sets (training, and evaluation with labels) yield ``(image, label)`` or, with
``with_ood_mask``, ``(image, label, ood_mask)`` and expose ``classes``. OOD test sets yield
``(image, ood_mask)`` whatever is asked. ``road`` is the paper's training mix: ``root`` holds
``cityscapes/``, ``vistas/`` and ``wilddash2/``. ``fishyscapes-laf``: ``root`` holds
``fishyscapes/`` (the labels) and ``lostandfound/`` (the LostAndFound release with the images).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch.utils.data import ConcatDataset, Dataset

from nflowjs.data.bsb import BSBAerial
from nflowjs.data.camvid import CAMVID_OOD_HELD_OUT, CamVid
from nflowjs.data.cityscapes import CITYSCAPES_CLASSES, Cityscapes
from nflowjs.data.ood_sets import FishyscapesLostAndFound, LostAndFound, SegmentMeIfYouCan
from nflowjs.data.streethazards import StreetHazards
from nflowjs.data.vistas import Vistas
from nflowjs.data.wilddash import WildDash2


class RoadMix(ConcatDataset):
    """Cityscapes + Vistas + WildDash 2 in the Cityscapes classes (paper 4.3: 25,231 images)."""

    classes = CITYSCAPES_CLASSES

    def __init__(self, root: str, split: str, transform=None):
        root = Path(root)
        vistas_split = {"train": "training", "val": "validation"}.get(split, split)
        parts = [
            Cityscapes(root / "cityscapes", split, transform),
            Vistas(root / "vistas", vistas_split, transform),
        ]
        if split == "train":  # WildDash 2's public release is for training only
            parts.append(WildDash2(root / "wilddash2", transform))
        super().__init__(parts)


Builder = Callable[[str, str, object, bool], Dataset]

_SEGMENTATION: dict[str, Builder] = {
    "camvid": lambda root, split, t, ood: CamVid(root, split, transform=t, with_ood_mask=ood),
    "camvid-ood": lambda root, split, t, ood: CamVid(
        root, split, CAMVID_OOD_HELD_OUT, transform=t, with_ood_mask=ood
    ),
    "cityscapes": lambda root, split, t, ood: Cityscapes(root, split, t),
    "vistas": lambda root, split, t, ood: Vistas(root, split, t),
    "wilddash2": lambda root, split, t, ood: WildDash2(root, t),
    "road": lambda root, split, t, ood: RoadMix(root, split, t),
    "streethazards": lambda root, split, t, ood: StreetHazards(
        root, split, with_ood_mask=ood, transform=t
    ),
    "bsb-ood": lambda root, split, t, ood: BSBAerial(root, split, with_ood_mask=ood, transform=t),
}
_OOD_ONLY: dict[str, Builder] = {
    "lostandfound": lambda root, split, t, ood: LostAndFound(root, split, transform=t),
    "lostandfound-noknown": lambda root, split, t, ood: LostAndFound(
        root, split, no_known=True, transform=t
    ),
    "fishyscapes-laf": lambda root, split, t, ood: FishyscapesLostAndFound(
        Path(root) / "fishyscapes", Path(root) / "lostandfound", transform=t
    ),
    "smiyc-anomaly": lambda root, split, t, ood: SegmentMeIfYouCan(root, t),
    "smiyc-obstacle": lambda root, split, t, ood: SegmentMeIfYouCan(root, t),
}


def dataset_names() -> list[str]:
    return sorted({**_SEGMENTATION, **_OOD_ONLY})


def is_ood_only(name: str) -> bool:
    """True for test sets that have an OOD mask but no class labels."""
    return name in _OOD_ONLY


def build_dataset(
    name: str, root: str, split: str, transform=None, with_ood_mask: bool = False
) -> Dataset:
    """A dataset by name (see the module docstring for what it yields)."""
    builder = _SEGMENTATION.get(name) or _OOD_ONLY.get(name)
    if builder is None:
        raise ValueError(f"unknown dataset {name!r}; choose one of {dataset_names()}")
    return builder(root, split, transform, with_ood_mask)
