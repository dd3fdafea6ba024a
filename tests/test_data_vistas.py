"""Mapillary Vistas v1.2 in its release layout, written by the test: 66 classes -> Cityscapes 19."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nflowjs.data.cityscapes import CITYSCAPES_CLASSES
from nflowjs.data.transforms import IGNORE_ID
from nflowjs.data.vistas import VISTAS_TO_CITYSCAPES, Vistas

# The 66 class names of Vistas v1.2 in label-id order (config_v1.2.json "labels").
VISTAS_V12_NAMES = [
    "animal--bird",
    "animal--ground-animal",
    "construction--barrier--curb",
    "construction--barrier--fence",
    "construction--barrier--guard-rail",
    "construction--barrier--other-barrier",
    "construction--barrier--wall",
    "construction--flat--bike-lane",
    "construction--flat--crosswalk-plain",
    "construction--flat--curb-cut",
    "construction--flat--parking",
    "construction--flat--pedestrian-area",
    "construction--flat--rail-track",
    "construction--flat--road",
    "construction--flat--service-lane",
    "construction--flat--sidewalk",
    "construction--structure--bridge",
    "construction--structure--building",
    "construction--structure--tunnel",
    "human--person",
    "human--rider--bicyclist",
    "human--rider--motorcyclist",
    "human--rider--other-rider",
    "marking--crosswalk-zebra",
    "marking--general",
    "nature--mountain",
    "nature--sand",
    "nature--sky",
    "nature--snow",
    "nature--terrain",
    "nature--vegetation",
    "nature--water",
    "object--banner",
    "object--bench",
    "object--bike-rack",
    "object--billboard",
    "object--catch-basin",
    "object--cctv-camera",
    "object--fire-hydrant",
    "object--junction-box",
    "object--mailbox",
    "object--manhole",
    "object--phone-booth",
    "object--pothole",
    "object--street-light",
    "object--support--pole",
    "object--support--traffic-sign-frame",
    "object--support--utility-pole",
    "object--traffic-light",
    "object--traffic-sign--back",
    "object--traffic-sign--front",
    "object--trash-can",
    "object--vehicle--bicycle",
    "object--vehicle--boat",
    "object--vehicle--bus",
    "object--vehicle--car",
    "object--vehicle--caravan",
    "object--vehicle--motorcycle",
    "object--vehicle--on-rails",
    "object--vehicle--other-vehicle",
    "object--vehicle--trailer",
    "object--vehicle--truck",
    "object--vehicle--wheeled-slow",
    "void--car-mount",
    "void--ego-vehicle",
    "void--unlabeled",
]
ID = {name: i for i, name in enumerate(VISTAS_V12_NAMES)}
SIZE = (4, 66)  # one column per class id


def write_fake_vistas(root: Path, v12_subfolder: bool = True, names=VISTAS_V12_NAMES) -> Path:
    """{training,validation}/images/<key>.jpg + <split>/v1.2/labels/<key>.png + config json."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    labels = [
        {"name": n, "readable": n.split("--")[-1], "color": [i, i, i]} for i, n in enumerate(names)
    ]
    config = "config_v1.2.json" if v12_subfolder else "config.json"
    (root / config).write_text(json.dumps({"labels": labels, "version": "1.2"}))
    label = np.tile(np.arange(66, dtype=np.uint8), (SIZE[0], 1))
    for split, keys in (("training", ["a1B2", "zz9"]), ("validation", ["Qx7"])):
        (root / split / "images").mkdir(parents=True)
        label_dir = root / split / ("v1.2/labels" if v12_subfolder else "labels")
        label_dir.mkdir(parents=True)
        for key in keys:
            image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{key}.jpg", quality=95)
            png = Image.fromarray(label)
            png.putpalette([c for i in range(256) for c in (i, 255 - i, i // 2)])  # palette PNG
            png.save(label_dir / f"{key}.png")
    return root


def test_table_names_are_real_v12_classes_and_reach_all_19():
    assert len(VISTAS_V12_NAMES) == 66
    assert set(VISTAS_TO_CITYSCAPES) <= set(VISTAS_V12_NAMES)
    assert set(VISTAS_TO_CITYSCAPES.values()) == set(CITYSCAPES_CLASSES)


def test_exact_mapping_of_every_class(tmp_path):
    ds = Vistas(write_fake_vistas(tmp_path), "training")
    assert len(ds) == 2 and ds.classes == CITYSCAPES_CLASSES
    image, label = ds[0]
    assert image.shape == (3, *SIZE) and image.dtype == torch.uint8
    assert label.dtype == torch.int64
    row = label[0]
    cs = CITYSCAPES_CLASSES.index
    assert row[ID["construction--flat--road"]] == cs("road") == 0
    assert row[ID["marking--crosswalk-zebra"]] == cs("road")
    assert row[ID["construction--barrier--curb"]] == cs("sidewalk")
    assert row[ID["human--person"]] == cs("person")
    assert row[ID["human--rider--motorcyclist"]] == cs("rider")
    assert row[ID["object--vehicle--car"]] == cs("car") == 13
    assert row[ID["object--vehicle--on-rails"]] == cs("train")
    assert row[ID["object--support--utility-pole"]] == cs("pole")
    assert row[ID["object--traffic-sign--front"]] == cs("traffic sign")
    for ignored in ("void--unlabeled", "object--traffic-sign--back", "object--vehicle--boat"):
        assert row[ID[ignored]] == IGNORE_ID, ignored
    for name, raw in ID.items():
        expected = cs(VISTAS_TO_CITYSCAPES[name]) if name in VISTAS_TO_CITYSCAPES else IGNORE_ID
        assert row[raw] == expected, name
    assert (label == row).all()


def test_split_aliases_and_v11_layout(tmp_path):
    root = write_fake_vistas(tmp_path / "v11", v12_subfolder=False)
    val = Vistas(root, "val")
    assert len(val) == 1 and val.labels[0] == root / "validation" / "labels" / "Qx7.png"
    assert val[0][1][0, ID["nature--sky"]] == CITYSCAPES_CLASSES.index("sky")


def test_errors_name_the_layout(tmp_path):
    with pytest.raises(ValueError, match="unknown Vistas split"):
        Vistas(tmp_path, "testing-ish")
    with pytest.raises(FileNotFoundError, match=r"v1\.2/labels"):
        Vistas(tmp_path, "training")
    root = write_fake_vistas(tmp_path / "v2", names=VISTAS_V12_NAMES + ["extra--v2-class"] * 58)
    with pytest.raises(ValueError, match="lists 124 classes"):
        Vistas(root, "training")
    root = write_fake_vistas(tmp_path / "noconfig")
    (root / "config_v1.2.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config_v1\.2\.json"):
        Vistas(root, "validation")
