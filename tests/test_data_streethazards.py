"""StreetHazards in its release layout, written by the test: raw ids 1-14, 12 inliers, anomaly."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from nflowjs.data.streethazards import STREETHAZARDS_RAW_CLASSES, StreetHazards
from nflowjs.data.transforms import IGNORE_ID

SIZE = (3, 15)  # one column per raw value 0..14
RAW = torch.arange(15).expand(*SIZE)


def write_fake_streethazards(root: Path) -> Path:
    """train/{images,annotations}/{training,validation}/t<N>/*.png, test/.../test/t<N>/*.png."""
    rng = np.random.default_rng(0)
    label = RAW.numpy().astype(np.uint8)
    towns = [("train", "training", "t1", 2), ("train", "training", "t2", 1)]
    towns += [
        ("train", "validation", "t4", 1),
        ("test", "test", "t5", 2),
        ("test", "test", "t6", 1),
    ]
    for tar, split, town, frames in towns:
        for kind in ("images", "annotations"):
            (root / tar / kind / split / town).mkdir(parents=True)
        for i in range(frames):
            image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / tar / "images" / split / town / f"{300 + i}.png")
            Image.fromarray(label).save(
                root / tar / "annotations" / split / town / f"{300 + i}.png"
            )
    return root


def test_training_labels_keep_12_classes_and_ignore_other(tmp_path):
    ds = StreetHazards(write_fake_streethazards(tmp_path), "training")
    assert len(ds) == 3 and [p.parent.name for p in ds.images] == ["t1", "t1", "t2"]
    assert len(ds.classes) == 12 and "other" not in ds.classes
    assert ds.classes[0] == "unlabeled" and ds.classes[-1] == "traffic sign"
    sample = ds[0]
    assert len(sample) == 2  # no OOD mask on the training split
    image, label = sample
    assert image.shape == (3, *SIZE) and image.dtype == torch.uint8
    assert label.dtype == torch.int64
    # raw: 0 void, 1 unlabeled, 2 building, 3 fence, 4 other, 5 pedestrian, ..., 13 sign, 14 anomaly
    expected = [IGNORE_ID, 0, 1, 2, IGNORE_ID, 3, 4, 5, 6, 7, 8, 9, 10, 11, IGNORE_ID]
    assert label[0].tolist() == expected
    assert ds.classes[label[0, 8]] == "road" and ds.classes[label[0, 11]] == "car"


def test_test_split_yields_ood_mask_with_anomaly_14(tmp_path):
    ds = StreetHazards(write_fake_streethazards(tmp_path), "test")
    assert len(ds) == 3 and {p.parent.name for p in ds.images} == {"t5", "t6"}
    _, label, ood = ds[2]
    assert ood.dtype == torch.uint8 and ood.shape == SIZE
    assert ood[0, 14] == 1  # the anomaly
    assert label[0, 14] == IGNORE_ID  # not an inlier class
    assert ood[0, 0] == IGNORE_ID and ood[0, 4] == IGNORE_ID  # void and the ignored "other"
    inliers = [r for r in range(1, 14) if r != 4]
    assert (ood[:, inliers] == 0).all()


def test_transform_moves_label_and_ood_mask_together(tmp_path):
    root = write_fake_streethazards(tmp_path)
    _, label, ood = StreetHazards(root, "test", transform=v2.RandomHorizontalFlip(1.0))[0]
    assert ood[0, 0] == 1 and label[0, 0] == IGNORE_ID  # the anomaly column, mirrored
    assert label[0, -2] == 0 and ood[0, -2] == 0  # raw 1 (unlabeled class) from column 1


def test_splits_towns_and_choice_of_ignored_classes(tmp_path):
    root = write_fake_streethazards(tmp_path)
    assert len(StreetHazards(root, "validation")) == 1
    assert len(StreetHazards(root, "test", towns=("t5",))) == 2
    ds = StreetHazards(root, "training", ignored=("unlabeled",), with_ood_mask=True)
    assert ds.classes == STREETHAZARDS_RAW_CLASSES[1:]
    _, label, ood = ds[0]
    assert label[0, :6].tolist() == [IGNORE_ID, IGNORE_ID, 0, 1, 2, 3]  # "other" is class 2 now
    assert ood[0, 1] == IGNORE_ID and ood[0, 4] == 0


def test_errors_name_the_layout(tmp_path):
    with pytest.raises(ValueError, match="unknown StreetHazards split"):
        StreetHazards(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown StreetHazards classes"):
        StreetHazards(tmp_path, "training", ignored=("sky",))
    with pytest.raises(FileNotFoundError, match="StreetHazards tars"):
        StreetHazards(tmp_path, "test")
    root = write_fake_streethazards(tmp_path / "sh")
    (root / "test" / "annotations" / "test" / "t6" / "300.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 StreetHazards annotation files missing"):
        StreetHazards(root, "test")
