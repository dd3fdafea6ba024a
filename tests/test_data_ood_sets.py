"""OOD test sets in their release layouts, written by the test: (image, ood_mask 0/1/255)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nflowjs.data.ood_sets import FishyscapesLostAndFound, LostAndFound, SegmentMeIfYouCan
from nflowjs.data.transforms import IGNORE_ID

SIZE = (4, 8)
# LostAndFound labelIds per column: void, free road, obstacles 2/23/43/200, then 201 and 255
LAF_COLUMNS = [0, 1, 2, 23, 43, 200, 201, 255]
LAF_EXPECTED = [IGNORE_ID, 0, 1, 1, 1, 1, IGNORE_ID, IGNORE_ID]
LAF_TEST = [
    "01_Hanns_Klemm_Str_45_000000_000080",
    "01_Hanns_Klemm_Str_45_000006_000100",  # bicycles: not in noKnown
    "04_Maurener_Weg_8_000002_000140",  # all-zero label: not in noKnown
    "04_Maurener_Weg_8_000003_000030",
    "15_Rechbergstr_Deckenpfronn_000000_000050",  # children: not in noKnown
]
LAF_TRAIN = ["13_Elly_Beinhorn_Str_000000_000050"]


def _image(path: Path, seed: int) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)


def _sequence(frame: str) -> str:
    return "_".join(frame.split("_")[:-2])


def write_fake_laf(root: Path) -> Path:
    """leftImg8bit/<split>/<sequence>/<frame>_leftImg8bit.png + gtCoarse/..._labelIds.png."""
    labels = np.tile(np.array(LAF_COLUMNS, dtype=np.uint8), (SIZE[0], 1))
    for split, frames in (("test", LAF_TEST), ("train", LAF_TRAIN)):
        for i, frame in enumerate(frames):
            image_dir = root / "leftImg8bit" / split / _sequence(frame)
            label_dir = root / "gtCoarse" / split / _sequence(frame)
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            _image(image_dir / f"{frame}_leftImg8bit.png", i)
            empty = frame == "04_Maurener_Weg_8_000002_000140"
            label = np.zeros_like(labels) if empty else labels
            Image.fromarray(label).save(label_dir / f"{frame}_gtCoarse_labelIds.png")
    return root


def test_lost_and_found_road_is_inlier_obstacles_anomalies_rest_void(tmp_path):
    ds = LostAndFound(write_fake_laf(tmp_path), "test")
    assert len(ds) == 5
    image, ood = ds[0]
    assert image.shape == (3, *SIZE) and image.dtype == torch.uint8
    assert ood.dtype == torch.uint8 and ood.shape == SIZE
    assert ood[0].tolist() == LAF_EXPECTED
    assert (ood == ood[0]).all()
    assert len(LostAndFound(tmp_path, "train")) == 1


def test_lost_and_found_no_known_follows_smiyc(tmp_path):
    root = write_fake_laf(tmp_path)
    ds = LostAndFound(root, "test", no_known=True)
    kept = [p.name[: -len("_leftImg8bit.png")] for p in ds.images]
    assert kept == ["01_Hanns_Klemm_Str_45_000000_000080", "04_Maurener_Weg_8_000003_000030"]
    assert len(LostAndFound(root, "test", skip_unlabeled=True)) == 4
    assert len(LostAndFound(root, "test", no_known=True, skip_unlabeled=False)) == 3
    with pytest.raises(ValueError, match="SMIYC's subset of the test split"):
        LostAndFound(root, "train", no_known=True)


def test_lost_and_found_errors_name_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="LostAndFound release"):
        LostAndFound(tmp_path, "test")
    root = write_fake_laf(tmp_path / "laf")
    next((root / "gtCoarse" / "train").rglob("*.png")).unlink()
    with pytest.raises(FileNotFoundError, match="1 gtCoarse labelIds files missing"):
        LostAndFound(root, "train")


def write_fake_fishyscapes(root: Path) -> Path:
    """<index>_<LAF frame>_labels.png with 0 inlier, 1 anomaly, 255 void (and a stray 7)."""
    root.mkdir(parents=True)
    label = np.tile(np.array([0, 1, 255, 7, 0, 1, 1, 0], dtype=np.uint8), (SIZE[0], 1))
    for index, frame in enumerate(["04_Maurener_Weg_8_000003_000030", LAF_TRAIN[0]]):
        Image.fromarray(label).save(root / f"{index:04d}_{frame}_labels.png")
    return root


def test_fishyscapes_labels_pair_with_laf_images_of_either_split(tmp_path):
    laf = write_fake_laf(tmp_path / "laf")
    ds = FishyscapesLostAndFound(write_fake_fishyscapes(tmp_path / "fs"), laf)
    assert len(ds) == 2
    frame = "04_Maurener_Weg_8_000003_000030"
    assert ds.images[0] == laf / "leftImg8bit/test/04_Maurener_Weg_8" / f"{frame}_leftImg8bit.png"
    assert ds.images[1].parts[-3] == "train"
    image, ood = ds[1]
    expected_image = np.array(Image.open(ds.images[1]))
    assert torch.equal(image, torch.from_numpy(expected_image).permute(2, 0, 1))
    assert ood.dtype == torch.uint8
    assert ood[0].tolist() == [0, 1, IGNORE_ID, IGNORE_ID, 0, 1, 1, 0]


def test_fishyscapes_without_laf_images_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="fishyscapes_lostandfound"):
        FishyscapesLostAndFound(tmp_path / "fs", tmp_path)
    fs = write_fake_fishyscapes(tmp_path / "fs")
    with pytest.raises(FileNotFoundError, match=r"2 LostAndFound image .* files missing"):
        FishyscapesLostAndFound(fs, tmp_path / "no-laf")


def write_fake_smiyc(root: Path, ext: str, labelled: list[str], unlabelled: list[str]) -> Path:
    """images/<frame>.<ext> + labels_masks/<frame>_labels_semantic.png (0/1/255)."""
    (root / "images").mkdir(parents=True)
    (root / "labels_masks").mkdir(parents=True)
    label = np.tile(np.array([255, 255, 0, 0, 1, 1, 0, 255], dtype=np.uint8), (SIZE[0], 1))
    for i, frame in enumerate(labelled + unlabelled):
        _image(root / "images" / f"{frame}.{ext}", i)
        if frame in labelled:
            Image.fromarray(label).save(root / "labels_masks" / f"{frame}_labels_semantic.png")
    return root


def test_smiyc_anomaly_track_yields_labelled_frames_only(tmp_path):
    root = write_fake_smiyc(
        tmp_path / "dataset_AnomalyTrack", "jpg", ["validation0000"], ["airplane0000"]
    )
    ds = SegmentMeIfYouCan(root)
    assert len(ds) == 1 and ds.unlabeled_images == 1
    image, ood = ds[0]
    assert image.shape == (3, *SIZE) and ood.dtype == torch.uint8
    assert ood[0].tolist() == [IGNORE_ID, IGNORE_ID, 0, 0, 1, 1, 0, IGNORE_ID]


def test_smiyc_obstacle_track_reads_webp_and_keeps_off_road_void(tmp_path):
    frames = ["validation_1", "validation_2"]
    root = write_fake_smiyc(tmp_path / "dataset_ObstacleTrack", "webp", frames, [])
    ds = SegmentMeIfYouCan(root)
    assert [p.name for p in ds.images] == ["validation_1.webp", "validation_2.webp"]
    _, ood = ds[1]
    assert (ood[:, :2] == IGNORE_ID).all() and (ood[:, 4:6] == 1).all()


def test_smiyc_errors_name_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels_semantic"):
        SegmentMeIfYouCan(tmp_path)
    root = write_fake_smiyc(tmp_path / "dataset_AnomalyTrack", "jpg", [], ["airplane0000"])
    with pytest.raises(FileNotFoundError, match="none of the 1 images"):
        SegmentMeIfYouCan(root)
