"""Datasets in their real on-disk layout (written by the test) and the paper's augmentations."""

import random
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors

from conftest import write_fake_camvid
from nflowjs.data import CAMVID_CLASSES, CAMVID_OOD_HELD_OUT, IGNORE_ID, CamVid, training_transform

SHARED_CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def test_fake_camvid_all_classes(tmp_path):
    ds = CamVid(write_fake_camvid(tmp_path), "train")
    assert len(ds) == 3
    image, label = ds[0]
    assert image.shape == (3, 36, 48) and image.dtype == torch.uint8
    assert label.dtype == torch.int64
    raw = torch.arange(36 * 48).reshape(36, 48) % 12
    assert torch.equal(label[raw < 11], raw[raw < 11])
    assert (label[raw == 11] == IGNORE_ID).all()
    assert ds.classes == CAMVID_CLASSES


def test_fake_camvid_held_out_classes_are_ignored_and_flagged(tmp_path):
    ds = CamVid(
        write_fake_camvid(tmp_path), "test", held_out=CAMVID_OOD_HELD_OUT, with_ood_mask=True
    )
    _, label, ood = ds[1]
    raw = torch.arange(36 * 48).reshape(36, 48) % 12
    assert len(ds.classes) == 9 and "pedestrian" not in ds.classes
    held = (raw == 9) | (raw == 10)
    assert (label[held] == IGNORE_ID).all()
    assert (ood[held] == 1).all()
    assert (ood[raw == 11] == IGNORE_ID).all()
    assert (ood[raw < 9] == 0).all()
    # car (raw 8) keeps its position among the inliers: id 8 of 9
    assert (label[raw == 8] == ds.classes.index("car")).all() and ds.classes.index("car") == 8


def test_bad_root_and_class_names_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="SegNet layout"):
        CamVid(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="unknown CamVid classes"):
        CamVid(write_fake_camvid(tmp_path), "train", held_out=("dragon",))


def test_augmentation_keeps_image_and_label_aligned_and_pads_with_mean_and_ignore():
    torch.manual_seed(0)
    h, w = 30, 40
    label = torch.arange(h * w).reshape(h, w).remainder(250)  # never the ignore id
    image = label.to(torch.uint8).expand(3, h, w)

    # No resizing (scale 1 at the native shorter side) so pixel identities are exact.
    transform = training_transform(
        crop_size=48, base_size=h, mean_rgb=(0.5, 0.25, 0.0), scale=(1, 1)
    )
    flipped_seen = False
    for _ in range(10):
        img, lab = transform(tv_tensors.Image(image), tv_tensors.Mask(label))
        assert img.shape == (3, 48, 48) and lab.shape == (48, 48)
        pad = lab == IGNORE_ID
        assert pad.sum() >= 48 * 48 - h * w  # the crop is larger than the image
        assert torch.equal(img[0][~pad].long(), lab[~pad])  # same pixels moved together
        assert (img[:, pad] == torch.tensor([128, 64, 0], dtype=torch.uint8)[:, None]).all()
        rows = lab[~pad].reshape(h, w)
        flipped_seen |= bool(rows[0, 0] > rows[0, 1])
    assert flipped_seen


def test_random_scale_follows_the_range():
    random.seed(1)  # the scale is drawn with python's random
    torch.manual_seed(1)  # the crop and flip
    image = tv_tensors.Image(torch.zeros(3, 50, 100, dtype=torch.uint8))
    label = tv_tensors.Mask(torch.zeros(50, 100, dtype=torch.int64))
    # The crop is larger than any scaled image, so the valid rows are the scaled height.
    transform = training_transform(crop_size=210, base_size=50, mean_rgb=(0, 0, 0))
    shorter = []
    for _ in range(50):
        _, lab = transform(image, label)
        shorter.append(int((lab != IGNORE_ID).any(1).sum()))
    assert 25 <= min(shorter) < 32 and 85 < max(shorter) <= 100


@pytest.mark.skipif(not SHARED_CAMVID.is_dir(), reason="shared CamVid copy not present")
def test_real_camvid_splits_and_ood_pixels():
    sizes = {split: len(CamVid(SHARED_CAMVID, split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 367, "val": 101, "test": 233}
    ds = CamVid(SHARED_CAMVID, "test", held_out=CAMVID_OOD_HELD_OUT, with_ood_mask=True)
    image, label, _ = ds[0]
    assert image.shape == (3, 360, 480)
    assert set(label.unique().tolist()) <= set(range(9)) | {IGNORE_ID}
    anomalies = sum(int((ds[i][2] == 1).sum()) for i in range(0, len(ds), 10))
    assert anomalies > 1000  # pedestrians and cyclists are in the test frames
