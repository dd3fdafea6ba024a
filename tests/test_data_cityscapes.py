"""Cityscapes in its release layout, written by the test: labelIds -> the 19 trainIds."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from nflowjs.data.cityscapes import CITYSCAPES_CLASSES, Cityscapes, cityscapes_train_id
from nflowjs.data.transforms import IGNORE_ID

SIZE = (8, 34)  # one column per Cityscapes labelId 0..33


def write_fake_cityscapes(root: Path) -> Path:
    """leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png + gtFine labelIds."""
    rng = np.random.default_rng(0)
    label = np.tile(np.arange(34, dtype=np.uint8), (SIZE[0], 1))
    for split, city, frames in (
        ("train", "aachen", 2),
        ("train", "bochum", 1),
        ("val", "lindau", 1),
    ):
        (root / "leftImg8bit" / split / city).mkdir(parents=True)
        (root / "gtFine" / split / city).mkdir(parents=True)
        for i in range(frames):
            stem = f"{city}_{i:06d}_000019"
            image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
            Image.fromarray(image).save(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            )
            Image.fromarray(label).save(
                root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
            )
    return root


def test_classes_are_the_19_cityscapes_training_classes_in_train_id_order():
    assert len(CITYSCAPES_CLASSES) == 19
    assert CITYSCAPES_CLASSES[0] == "road" and CITYSCAPES_CLASSES[-1] == "bicycle"
    assert CITYSCAPES_CLASSES[13] == "car"
    assert cityscapes_train_id("train") == 16
    assert cityscapes_train_id("parking") == IGNORE_ID
    assert cityscapes_train_id("unlabeled") == IGNORE_ID


def test_label_ids_map_to_train_ids(tmp_path):
    ds = Cityscapes(write_fake_cityscapes(tmp_path), "train")
    assert len(ds) == 3
    image, label = ds[0]
    assert image.shape == (3, *SIZE) and image.dtype == torch.uint8
    assert label.shape == SIZE and label.dtype == torch.int64
    row = label[0].tolist()
    # Cityscapes labelIds (the official table): 7 road, 8 sidewalk, 11 building, 24 person,
    # 26 car, 31 train, 33 bicycle; 0-6 void, 9 parking, 14 guard rail, 29 caravan ignored.
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10}
    expected |= {24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id in range(34):
        assert row[label_id] == expected.get(label_id, IGNORE_ID), label_id
    assert (label == label[0]).all()  # every row of the fake label is the same


def test_splits_and_image_label_pairing(tmp_path):
    root = write_fake_cityscapes(tmp_path)
    train, val = Cityscapes(root, "train"), Cityscapes(root, "val")
    assert [p.parent.name for p in train.images] == ["aachen", "aachen", "bochum"]
    assert len(val) == 1 and val.labels[0].name == "lindau_000000_000019_gtFine_labelIds.png"
    image = np.array(Image.open(val.images[0]))
    assert torch.equal(val[0][0], torch.from_numpy(image).permute(2, 0, 1))


def test_transform_moves_label_with_image(tmp_path):
    ds = Cityscapes(write_fake_cityscapes(tmp_path), "val", transform=v2.RandomHorizontalFlip(1.0))
    _, label = ds[0]
    # mirrored: column 0 now holds id 33 (bicycle), column 7 id 26 (car), column 33 id 0 (void)
    assert label[0, 0] == 18 and label[0, 7] == 13 and label[0, -1] == IGNORE_ID


def test_missing_folders_and_labels_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="leftImg8bit/<split>/<city>"):
        Cityscapes(tmp_path, "train")
    root = write_fake_cityscapes(tmp_path / "cs")
    next((root / "gtFine" / "val" / "lindau").iterdir()).unlink()
    with pytest.raises(FileNotFoundError, match="1 gtFine labelIds files missing"):
        Cityscapes(root, "val")
