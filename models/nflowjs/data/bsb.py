"""BSB Aerial (de Carvalho et al. 2022, Brasilia, 512x512 tiles) with classes held out as OOD.

Layout, as the dataset authors register it with detectron2 (their BSB-Aerial-Dataset notebook
and panoptic-generator): ``<root>/image_{train,val,test}/<id>.tiff``,
``<root>/panoptic_<split>/<id>.png`` (COCO panoptic, RGB-encoded segment ids) and
``<root>/annotations/panoptic_<split>.json``. The authors' notebook names the categories
1 street, 2 permeable area, 3 lake (stuff), 4 swimming pool, 5 harbor, 6 vehicle, 7 boat,
8 sports court, 9 soccer field, 10 comm. building, 11 comm. building block, 12 res. building,
13 house, 14 small construction (things); 0 / no segment is background, which we treat as void
(the paper counts 12 inlier classes, so background is not one). Names are read from the json
(case and spacing ignored, "harbour" = "harbor"); images are read as 8-bit RGB.

BSB-OOD (the paper, section 4.1): boat and harbour are held out. Their pixels are ignored in
training labels and are the anomalies of ``ood_mask``. The paper's counts (2840 training
images, 184 OOD test images) suggest it also drops training images that contain them:
``drop_held_out_images=True`` does that. Which images form its 184-image test set is not
published; we yield every image of the chosen split.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from nflowjs.data.panoptic import read_coco_panoptic, read_segment_ids, segments_to_values
from nflowjs.data.samples import read_rgb, require_dir, require_files, to_sample
from nflowjs.data.transforms import IGNORE_ID

BSB_OOD_HELD_OUT = ("boat", "harbor")
_ALIASES = {"harbour": "harbor"}
_LAYOUT = (
    "<root>/image_<split>/*.tiff, <root>/panoptic_<split>/*.png and "
    "<root>/annotations/panoptic_<split>.json (BSB Aerial, COCO panoptic)"
)


def _normalise(name: str) -> str:
    name = " ".join(name.lower().split())
    return _ALIASES.get(name, name)


class BSBAerial(Dataset):
    """Yields ``(image uint8 3xHxW, label int64 HxW)``, plus ``ood_mask`` (0/1/255) if asked.

    Labels are the inlier categories renumbered 0..K-1 in category-id order (``self.classes``),
    255 for background and held-out categories.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        held_out: tuple[str, ...] = BSB_OOD_HELD_OUT,
        with_ood_mask: bool = False,
        drop_held_out_images: bool = False,
        transform=None,
    ):
        self.root = Path(root)
        json_path = self.root / "annotations" / f"panoptic_{split}.json"
        if not json_path.is_file():
            raise FileNotFoundError(f"{json_path} not found: expected {_LAYOUT}")
        image_dir = require_dir(self.root / f"image_{split}", _LAYOUT)
        segment_dir = require_dir(self.root / f"panoptic_{split}", _LAYOUT)
        categories, frames = read_coco_panoptic(json_path)
        categories = {cid: _normalise(n) for cid, n in sorted(categories.items()) if cid != 0}
        held = {_normalise(n) for n in held_out}
        unknown = held - set(categories.values())
        if unknown:
            raise ValueError(
                f"unknown BSB classes {sorted(unknown)}; "
                f"{json_path} has {list(categories.values())}"
            )
        held_ids = {cid for cid, n in categories.items() if n in held}
        if drop_held_out_images:
            frames = [f for f in frames if not held_ids & set(f.segment_categories.values())]
        self.frames = frames
        self.images = [image_dir / f.image_file for f in frames]
        self.segments = [segment_dir / f.segments_file for f in frames]
        require_files(self.images, "BSB image")
        require_files(self.segments, "BSB panoptic PNG")

        self.classes = tuple(n for cid, n in categories.items() if cid not in held_ids)
        self.held_out = tuple(n for cid, n in categories.items() if cid in held_ids)
        self._train_id = {
            cid: self.classes.index(n) for cid, n in categories.items() if cid not in held_ids
        }
        self._ood = {cid: int(cid in held_ids) for cid in categories}
        self.with_ood_mask = with_ood_mask
        self.transform = transform

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        segments = read_segment_ids(self.segments[index])
        category_of = self.frames[index].segment_categories
        label = segments_to_values(
            segments,
            {s: self._train_id.get(c, IGNORE_ID) for s, c in category_of.items()},
            IGNORE_ID,
        )
        masks = [label]
        if self.with_ood_mask:
            ood = {s: self._ood.get(c, IGNORE_ID) for s, c in category_of.items()}
            masks.append(segments_to_values(segments, ood, IGNORE_ID, dtype=torch.uint8))
        return to_sample(read_rgb(self.images[index]), *masks, transform=self.transform)
