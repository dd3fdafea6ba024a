"""Mapillary Vistas v1.2 (66 classes) mapped onto the 19 Cityscapes training classes.

Layout of the v2.0 research release: ``<root>/{training,validation}/images/<key>.jpg``,
``<root>/{training,validation}/v1.2/labels/<key>.png`` (8-bit palette PNG whose value is the
index into ``labels`` of ``<root>/config_v1.2.json``). The v1.1/v1.2 releases keep the labels in
``<split>/labels/`` and the config in ``config.json``; both are accepted. Class ids are read
from the config (value i = ``config["labels"][i]["name"]``), then mapped by name below.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.data import Dataset

from nflowjs.data.cityscapes import CITYSCAPES_CLASSES, cityscapes_train_id
from nflowjs.data.samples import (
    lookup_table,
    read_label,
    read_rgb,
    require_dir,
    require_files,
    to_sample,
)

# Vistas v1.2 name -> Cityscapes name; every other Vistas class is ignored (255).
# Source: the "mvd1p2_name" -> "cs_name" pairs of WildDash 2's unified label policy
# (ozendelait/wilddash_scripts, wd2_unified_label_policy.json), restricted to the 19 Cityscapes
# training classes, checked against Cityscapes' class definitions. Where that policy sends one
# Vistas class to two Cityscapes classes we keep the one for the class's usual case: manhole
# -> road (WD2 also has a sidewalk manhole), curb -> sidewalk (WD2 also has curb-terrain),
# rail track -> ignored (Cityscapes' "rail track" has no trainId; WD2's tram track -> road).
# The policy's own choices kept although other public mappings differ: pedestrian area -> road
# (some map it to sidewalk), other barrier -> wall (some map it to fence), "on rails" -> train
# (Cityscapes' train class covers trams and trains). Vistas v1.2 has no van/pickup classes.
VISTAS_TO_CITYSCAPES = {
    "construction--flat--road": "road",
    "construction--flat--bike-lane": "road",
    "construction--flat--crosswalk-plain": "road",
    "construction--flat--pedestrian-area": "road",
    "construction--flat--service-lane": "road",
    "marking--crosswalk-zebra": "road",
    "marking--general": "road",
    "object--catch-basin": "road",
    "object--manhole": "road",
    "object--pothole": "road",
    "construction--flat--sidewalk": "sidewalk",
    "construction--flat--curb-cut": "sidewalk",
    "construction--barrier--curb": "sidewalk",
    "construction--structure--building": "building",
    "construction--barrier--wall": "wall",
    "construction--barrier--other-barrier": "wall",
    "construction--barrier--fence": "fence",
    "object--support--pole": "pole",
    "object--support--traffic-sign-frame": "pole",
    "object--support--utility-pole": "pole",
    "object--traffic-light": "traffic light",
    "object--traffic-sign--front": "traffic sign",
    "nature--vegetation": "vegetation",
    "nature--terrain": "terrain",
    "nature--sky": "sky",
    "human--person": "person",
    "human--rider--bicyclist": "rider",
    "human--rider--motorcyclist": "rider",
    "human--rider--other-rider": "rider",
    "object--vehicle--car": "car",
    "object--vehicle--truck": "truck",
    "object--vehicle--bus": "bus",
    "object--vehicle--on-rails": "train",
    "object--vehicle--motorcycle": "motorcycle",
    "object--vehicle--bicycle": "bicycle",
}
VISTAS_V12_NUM_CLASSES = 66
_SPLITS = {
    "train": "training",
    "val": "validation",
    "training": "training",
    "validation": "validation",
}
_LAYOUT = (
    "<root>/{training,validation}/images/*.jpg, <root>/<split>/v1.2/labels/*.png and "
    "<root>/config_v1.2.json (Mapillary Vistas research release)"
)


class Vistas(Dataset):
    """Yields ``(image uint8 3xHxW, label int64 HxW)`` with Cityscapes trainIds (0-18, 255).

    ``split`` is ``training``/``validation`` (or ``train``/``val``).
    """

    classes = CITYSCAPES_CLASSES

    def __init__(self, root: str | Path, split: str, transform=None):
        self.root = Path(root)
        if split not in _SPLITS:
            raise ValueError(f"unknown Vistas split {split!r}; use one of {sorted(_SPLITS)}")
        split_dir = require_dir(self.root / _SPLITS[split], _LAYOUT)
        image_dir = require_dir(split_dir / "images", _LAYOUT)
        label_dir = split_dir / "v1.2" / "labels"
        if not label_dir.is_dir():
            label_dir = require_dir(split_dir / "labels", _LAYOUT)
        self.images = sorted(image_dir.glob("*.jpg"))
        self.labels = [label_dir / f"{p.stem}.png" for p in self.images]
        require_files(self.labels, "Vistas v1.2 label")
        self.vistas_names = _read_config_names(self.root)
        self.transform = transform
        self._train_ids = lookup_table(
            {
                raw: cityscapes_train_id(VISTAS_TO_CITYSCAPES[name])
                for raw, name in enumerate(self.vistas_names)
                if name in VISTAS_TO_CITYSCAPES
            }
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        label = self._train_ids[read_label(self.labels[index])]
        return to_sample(read_rgb(self.images[index]), label, transform=self.transform)


def _read_config_names(root: Path) -> list[str]:
    """Class names in label-id order from the release's config (v1.2 names)."""
    for name in ("config_v1.2.json", "config.json"):
        if (root / name).is_file():
            names = [c["name"] for c in json.loads((root / name).read_text())["labels"]]
            break
    else:
        raise FileNotFoundError(f"no config_v1.2.json or config.json in {root}: expected {_LAYOUT}")
    if len(names) != VISTAS_V12_NUM_CLASSES:
        raise ValueError(
            f"{root / name} lists {len(names)} classes, Vistas v1.2 has {VISTAS_V12_NUM_CLASSES}: "
            "point root at a v1.2 release (or the v2.0 release, which ships config_v1.2.json)"
        )
    return names
