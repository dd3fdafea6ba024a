"""WildDash 2 in its release layout (COCO panoptic), written by the test -> Cityscapes trainIds."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nflowjs.data.cityscapes import CITYSCAPES_CLASSES
from nflowjs.data.panoptic import read_segment_ids
from nflowjs.data.transforms import IGNORE_ID
from nflowjs.data.wilddash import WildDash2

CS = CITYSCAPES_CLASSES.index
# A slice of the release's categories (WildDash 2 ids and names); "traffic light" is spelled
# with a space on purpose, and "dragon" is a category no table knows.
CATEGORIES = [
    (0, "unlabeled"),
    (1, "egovehicle"),
    (7, "road"),
    (9, "parking"),
    (19, "traffic light"),
    (20, "trafficsign"),
    (26, "car"),
    (31, "onrails"),
    (34, "pickup"),
    (35, "van"),
    (38, "roadmarking"),
    (99, "dragon"),
]
# One column per segment: (segment id, category id); ids above 255 use the G and B channels.
SEGMENTS = [(1, 7), (300, 26), (70000, 35), (5, 1), (6, 38), (7, 31), (8, 34), (9, 9)]
SEGMENTS += [(10, 19), (11, 20), (12, 99)]
EXPECTED = [CS("road"), CS("car"), CS("car"), IGNORE_ID, CS("road"), CS("train"), CS("truck")]
EXPECTED += [IGNORE_ID, CS("traffic light"), CS("traffic sign"), IGNORE_ID]
# Two more columns: segment 0 (no segment) and 4242 (in the PNG, not in the json): both void.
COLUMN_IDS = [s for s, _ in SEGMENTS] + [0, 4242]
SIZE = (5, len(COLUMN_IDS))


def encode(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG colours: id = R + 256 G + 256^2 B."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_fake_wilddash(root: Path) -> Path:
    """images/<name>.jpg, panoptic/<name>.png, panoptic.json."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "panoptic").mkdir(parents=True)
    ids = np.tile(np.array(COLUMN_IDS, dtype=np.int64), (SIZE[0], 1))
    data = {"images": [], "annotations": [], "categories": []}
    data["categories"] = [{"id": i, "name": n, "isthing": 0} for i, n in CATEGORIES]
    for image_id, name in ((11, "cn0000_100000"), (12, "de0001_100004")):
        image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{name}.jpg", quality=95)
        Image.fromarray(encode(ids)).save(root / "panoptic" / f"{name}.png")
        data["images"].append({"id": image_id, "file_name": f"{name}.jpg", "width": SIZE[1]})
        segments = [{"id": s, "category_id": c, "iscrowd": 0} for s, c in SEGMENTS]
        data["annotations"].append(
            {"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments}
        )
    (root / "panoptic.json").write_text(json.dumps(data))
    return root


def test_panoptic_png_decodes_to_segment_ids(tmp_path):
    root = write_fake_wilddash(tmp_path)
    ids = read_segment_ids(root / "panoptic" / "cn0000_100000.png")
    assert ids[0].tolist() == COLUMN_IDS


def test_categories_map_by_name_to_cityscapes_train_ids(tmp_path):
    ds = WildDash2(write_fake_wilddash(tmp_path))
    assert len(ds) == 2 and ds.classes == CITYSCAPES_CLASSES
    image, label = ds[1]
    assert image.shape == (3, *SIZE) and image.dtype == torch.uint8
    assert label.dtype == torch.int64
    assert label[0].tolist() == [*EXPECTED, IGNORE_ID, IGNORE_ID]
    assert (label == label[0]).all()
    assert ds.unmapped_categories == ("dragon", "egovehicle", "parking", "unlabeled")
    assert ds.images[1].name == "de0001_100004.jpg"


def test_errors_name_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"panoptic\.json"):
        WildDash2(tmp_path)
    root = write_fake_wilddash(tmp_path / "wd")
    (root / "panoptic" / "de0001_100004.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 WildDash panoptic PNG files missing"):
        WildDash2(root)
    root = write_fake_wilddash(tmp_path / "renamed")
    data = json.loads((root / "panoptic.json").read_text())
    data["categories"] = [{"id": 7, "name": "Straße"}]
    (root / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="has a Cityscapes class"):
        WildDash2(root)
