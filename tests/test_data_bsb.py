"""BSB Aerial in its release layout (COCO panoptic), written by the test; boat, harbor held out."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nflowjs.data.bsb import BSB_OOD_HELD_OUT, BSBAerial
from nflowjs.data.transforms import IGNORE_ID

# The categories as the dataset authors' notebook names them (ids 1-3 stuff, 4-14 things).
NAMES = ["street", "permeable area", "lake", "swimming pool", "harbor", "vehicle", "boat"]
NAMES += ["sports court", "soccer field", "comm. building", "comm. building block"]
NAMES += ["res. building", "house", "small construction"]
SIZE = (4, 16)  # columns: segment 0 (background), one segment per category 1-14, one unlisted


def encode(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_fake_bsb(root: Path) -> Path:
    """image_<split>/<id>.tiff, panoptic_<split>/<id>.png, annotations/panoptic_<split>.json."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": 0, "name": "", "isthing": 0}]
    categories += [{"id": i, "name": n, "isthing": int(i > 3)} for i, n in enumerate(NAMES, 1)]
    # segment id of category c is 1000 * c + 7 (exercises the G channel); 99999 is unlisted
    column_ids = np.array([0] + [1000 * c + 7 for c in range(1, 15)] + [99999], dtype=np.int64)
    ids = np.tile(column_ids, (SIZE[0], 1))
    for split, frames in (("train", 3), ("test", 2)):
        (root / f"image_{split}").mkdir()
        (root / f"panoptic_{split}").mkdir()
        data = {"images": [], "annotations": [], "categories": categories}
        for image_id in range(1, frames + 1):
            image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / f"image_{split}" / f"{image_id}.tiff")
            Image.fromarray(encode(ids)).save(root / f"panoptic_{split}" / f"{image_id}.png")
            # train image 2 has no boat/harbor segment listed: the others contain both
            cats = [
                c for c in range(1, 15) if not (split == "train" and image_id == 2 and c in (5, 7))
            ]
            segments = [{"id": 1000 * c + 7, "category_id": c, "iscrowd": 0} for c in cats]
            data["images"].append({"id": image_id, "file_name": f"{image_id}.tiff"})
            data["annotations"].append(
                {"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments}
            )
        (root / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(data))
    return root


def test_held_out_classes_are_ignored_and_the_rest_renumbered(tmp_path):
    ds = BSBAerial(write_fake_bsb(tmp_path), "train")
    assert BSB_OOD_HELD_OUT == ("boat", "harbor")
    assert len(ds) == 3 and len(ds.classes) == 12
    assert "boat" not in ds.classes and "harbor" not in ds.classes
    assert ds.classes[:5] == ("street", "permeable area", "lake", "swimming pool", "vehicle")
    assert ds.held_out == ("harbor", "boat")
    image, label = ds[0]
    assert image.shape == (3, *SIZE) and image.dtype == torch.uint8
    assert label.dtype == torch.int64
    # columns: background, categories 1..14, unlisted segment
    expected = [IGNORE_ID, 0, 1, 2, 3, IGNORE_ID, 4, IGNORE_ID, 5, 6, 7, 8, 9, 10, 11, IGNORE_ID]
    assert label[0].tolist() == expected
    assert ds.classes[label[0, 14]] == "small construction"
    assert (label == label[0]).all()


def test_test_split_flags_boat_and_harbor_as_anomalies(tmp_path):
    ds = BSBAerial(write_fake_bsb(tmp_path), "test", with_ood_mask=True)
    _, label, ood = ds[1]
    assert ood.dtype == torch.uint8
    expected = [IGNORE_ID, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, IGNORE_ID]
    assert ood[0].tolist() == expected
    assert (label[ood == 1] == IGNORE_ID).all()


def test_drop_held_out_images_and_other_held_out_choices(tmp_path):
    root = write_fake_bsb(tmp_path)
    kept = BSBAerial(root, "train", drop_held_out_images=True)
    assert [p.name for p in kept.images] == ["2.tiff"]
    # unlisted boat/harbor segments of image 2 are void anyway
    assert kept[0][1][0, 5] == IGNORE_ID and kept[0][1][0, 7] == IGNORE_ID
    ds = BSBAerial(root, "train", held_out=("Harbour", "lake"))
    assert ds.held_out == ("lake", "harbor") and "boat" in ds.classes
    assert len(BSBAerial(root, "train", held_out=())) == 3


def test_errors_name_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"annotations/panoptic_<split>\.json"):
        BSBAerial(tmp_path, "val")
    root = write_fake_bsb(tmp_path / "bsb")
    with pytest.raises(ValueError, match="unknown BSB classes"):
        BSBAerial(root, "train", held_out=("ship",))
    (root / "image_test" / "2.tiff").unlink()
    with pytest.raises(FileNotFoundError, match="1 BSB image files missing"):
        BSBAerial(root, "test")
