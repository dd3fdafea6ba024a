"""WildDash 2 (public release ``wd_public_v2p0``) mapped onto the 19 Cityscapes training classes.

Layout: ``<root>/images/<name>.jpg``, ``<root>/panoptic/<name>.png`` (COCO panoptic, RGB-encoded
segment ids) and ``<root>/panoptic.json`` (COCO panoptic: categories with WildDash ids and
names, segments per image). Labels come from the json's category *names*, so a release that
renumbers categories still maps right; pixels outside any listed segment are void (255).
"""

from __future__ import annotations

import re
from pathlib import Path

from torch.utils.data import Dataset

from nflowjs.data.cityscapes import CITYSCAPES_CLASSES, cityscapes_train_id
from nflowjs.data.panoptic import read_coco_panoptic, read_segment_ids, segments_to_values
from nflowjs.data.samples import read_rgb, require_dir, require_files, to_sample
from nflowjs.data.transforms import IGNORE_ID

# WildDash 2 category name -> Cityscapes name; every other category is ignored (255).
# Source: the "wd2_name" -> "cs_name" pairs of WildDash's own unified label policy
# (ozendelait/wilddash_scripts, wd2_unified_label_policy.json), keeping the pairs whose
# Cityscapes class has a trainId. "onrails" -> "train" (the policy says "on rails", which is not
# a Cityscapes label name: Cityscapes' train class covers trains and trams). Names are compared
# lower-case without spaces, dashes or underscores, so "traffic sign" matches "trafficsign".
WILDDASH_TO_CITYSCAPES = {
    **dict.fromkeys(
        [
            "road",
            "roadmarking",
            "manhole",
            "pothole",
            "tramtrack",
            "bikelane",
            "pedestrianarea",
            "catchbasin",
            "crosswalkplain",
            "crosswalkzebra",
            "servicelane",
        ],
        "road",
    ),
    **dict.fromkeys(
        ["sidewalk", "curb", "curbcut", "bikelanesidewalk", "manholesidewalk"], "sidewalk"
    ),
    "building": "building",
    "wall": "wall",
    "otherbarrier": "wall",
    "fence": "fence",
    **dict.fromkeys(["pole", "trafficsignframe", "utilitypole"], "pole"),
    "trafficlight": "traffic light",
    "trafficsign": "traffic sign",
    # Not in the policy: one public WD2 script names the front of a sign "trafficsignfront".
    "trafficsignfront": "traffic sign",
    "vegetation": "vegetation",
    "terrain": "terrain",
    "curbterrain": "terrain",
    "sky": "sky",
    "person": "person",
    **dict.fromkeys(["rider", "bicyclist", "motorcyclist", "otherrider"], "rider"),
    "car": "car",
    "van": "car",
    "truck": "truck",
    "pickup": "truck",
    "bus": "bus",
    "onrails": "train",
    "motorcycle": "motorcycle",
    "autorickshaw": "motorcycle",
    "bicycle": "bicycle",
}
_LAYOUT = "<root>/images/*.jpg, <root>/panoptic/*.png and <root>/panoptic.json (wd_public_v2p0)"


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


class WildDash2(Dataset):
    """Yields ``(image uint8 3xHxW, label int64 HxW)`` with Cityscapes trainIds (0-18, 255).

    ``unmapped_categories`` lists the json's category names that become 255.
    """

    classes = CITYSCAPES_CLASSES

    def __init__(self, root: str | Path, transform=None):
        self.root = Path(root)
        json_path = self.root / "panoptic.json"
        if not json_path.is_file():
            raise FileNotFoundError(f"{json_path} not found: expected {_LAYOUT}")
        image_dir = require_dir(self.root / "images", _LAYOUT)
        segment_dir = require_dir(self.root / "panoptic", _LAYOUT)
        categories, self.frames = read_coco_panoptic(json_path)
        self.images = [image_dir / f.image_file for f in self.frames]
        self.segments = [segment_dir / f.segments_file for f in self.frames]
        require_files(self.images, "WildDash image")
        require_files(self.segments, "WildDash panoptic PNG")

        cs_names = {cid: WILDDASH_TO_CITYSCAPES.get(_normalise(n)) for cid, n in categories.items()}
        self.category_train_ids = {
            cid: IGNORE_ID if cs is None else cityscapes_train_id(cs)
            for cid, cs in cs_names.items()
        }
        self.unmapped_categories = tuple(
            sorted(categories[cid] for cid, cs in cs_names.items() if cs is None)
        )
        if all(t == IGNORE_ID for t in self.category_train_ids.values()):
            raise ValueError(
                f"none of the {len(categories)} categories in {json_path} has a Cityscapes "
                f"class: is it a WildDash 2 panoptic.json? names: {sorted(categories.values())}"
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        frame = self.frames[index]
        train_id = {
            seg: self.category_train_ids.get(cat, IGNORE_ID)
            for seg, cat in frame.segment_categories.items()
        }
        label = segments_to_values(read_segment_ids(self.segments[index]), train_id, IGNORE_ID)
        return to_sample(read_rgb(self.images[index]), label, transform=self.transform)
