"""Dataset folders -> ordered frames with their ground truth, without torch.

The layouts and ground-truth conventions are those of the repository's loaders
(``nflowjs.data.ood_sets`` and ``nflowjs.data.camvid``); the bag converters run where torch is
not installed, so the few label -> OOD-mask tables are restated here with numpy, and
tests/test_bag_convert.py checks that both give the same masks on the same files. OOD masks:
0 inlier, 1 anomaly, 255 void.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

VOID = 255
# LostAndFound gtCoarse labelIds: 1 free road, 2-200 obstacles (SMIYC's reading), rest void.
LAF_FREE = 1
LAF_OBSTACLES = range(2, 201)
SMIYC_NO_KNOWN_EXCLUDED = (  # as nflowjs.data.ood_sets: children and bicycles
    "15_Rechbergstr_Deckenpfronn",
    "01_Hanns_Klemm_Str_45_000006",
    "01_Hanns_Klemm_Str_45_000007",
    "10_Schlossberg_9_000004",
)
CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign/symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
CAMVID_OOD_HELD_OUT = ("pedestrian", "bicyclist")

LAF_LAYOUT = (
    "<root>/leftImg8bit/<split>/<sequence>/<frame>_leftImg8bit.png (or leftImg16bit/... "
    "_leftImg16bit.png), <root>/gtCoarse/<split>/<sequence>/<frame>_gtCoarse_labelIds.png; "
    "optional <root>/camera/<split>/<sequence>/<frame>_camera.json and "
    "<root>/timestamp/<split>/<sequence>/<frame>_timestamp.txt (LostAndFound release)"
)
FISHYSCAPES_LAYOUT = "<root>/<index>_<LAF frame>_labels.png (fishyscapes_lostandfound.zip)"
SMIYC_LAYOUT = "<root>/images/*.{jpg,webp,png} and <root>/labels_masks/*_labels_semantic.png"
CAMVID_LAYOUT = "<root>/{train,val,test}/images/*.jpg and .../labels/*.png (SegNet layout)"


def lookup(mapping: Mapping[int, int], fill: int = VOID) -> np.ndarray:
    """A 256-entry uint8 table for 8-bit label ids; ids not in ``mapping`` get ``fill``."""
    table = np.full(256, fill, dtype=np.uint8)
    for raw, value in mapping.items():
        table[raw] = value
    return table


LAF_OOD = lookup({LAF_FREE: 0, **dict.fromkeys(LAF_OBSTACLES, 1)})
BINARY_OOD = lookup({0: 0, 1: 1})  # masks that already follow the SMIYC convention


@dataclass(frozen=True)
class Frame:
    name: str
    sequence: str  # frames of one sequence are consecutive in the list and share a timeline
    image: Path
    label: Path  # the ground-truth file; DatasetFrames' tables turn its ids into masks
    camera: Path | None = None
    timestamp_ns: int | None = None


@dataclass
class DatasetFrames:
    """What a converter writes: frames in playback order and how to read their ground truth."""

    dataset: str
    frames: list[Frame]
    ood_table: np.ndarray
    label_table: np.ndarray | None = None  # CamVid: raw ids -> the loader's training ids
    image_bits: int = 8  # 16: leftImg16bit, scaled to 8 bits (see images.read_rgb16)
    info: dict[str, str] = field(default_factory=dict)  # goes into the bag's custom_data


def require_dir(path: Path, layout: str, fix: str = "") -> Path:
    if not path.is_dir():
        hint = f"; {fix}" if fix else ""
        raise FileNotFoundError(f"{path} not found: expected the layout {layout}{hint}")
    return path


def require_files(paths: Iterable[Path], what: str, fix: str) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} {what} files missing, e.g. {missing[0]}; {fix}")


def limit_frames(frames: list[Frame], max_frames: int | None, first_frame: int = 0) -> list[Frame]:
    """``max_frames`` frames (all for None) from index ``first_frame``, in playback order."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if not 0 <= first_frame < len(frames):
        raise ValueError(f"first_frame {first_frame} is outside 0..{len(frames) - 1}")
    end = None if max_frames is None else first_frame + max_frames
    return frames[first_frame:end]


# LostAndFound -------------------------------------------------------------------------------


def _laf_folder(frame: str) -> str:
    return "_".join(frame.split("_")[:-2])  # <place>_<subsequence>_<frame number>


def _laf_clip(frame: str) -> str:
    # One recording: a folder holds several subsequences whose clocks do not continue.
    return frame.rsplit("_", 1)[0]


def _find_laf_images(image_dir: Path, suffix: str) -> list[Path]:
    for ext in ("png", "webp", "jpg"):  # SMIYC's code accepts re-encoded copies too
        found = sorted(image_dir.glob(f"*/*{suffix}.{ext}"))
        if found:
            return found
    return []


def _has_nonzero(path: Path) -> bool:
    with Image.open(path) as image:
        return image.getbbox() is not None


def _read_timestamp(path: Path) -> int:
    text = path.read_text().strip()
    if not text.isdigit():
        raise ValueError(f"{path}: expected one integer (nanoseconds), found {text[:40]!r}")
    return int(text)


def lostandfound_frames(
    root: str | Path,
    split: str = "test",
    no_known: bool = False,
    skip_unlabeled: bool | None = None,
    images: str = "auto",
) -> DatasetFrames:
    """LostAndFound ``split`` as ``nflowjs.data.ood_sets.LostAndFound`` lists it.

    ``images``: "8bit" (leftImg8bit), "16bit" (leftImg16bit) or "auto" (8-bit if present).
    Camera JSON and timestamp files are used when their folders exist.
    """
    root = Path(root)
    if no_known and split != "test":
        raise ValueError(f"no_known is SMIYC's subset of the test split, not of {split!r}")
    folder = {"8bit": "leftImg8bit", "16bit": "leftImg16bit"}
    if images == "auto":
        images = "8bit" if (root / "leftImg8bit" / split).is_dir() else "16bit"
        if not (root / folder[images] / split).is_dir():
            images = "8bit"  # neither exists: report the usual layout
    if images not in folder:
        raise ValueError(f"images must be auto, 8bit or 16bit, got {images!r}")
    suffix = f"_{folder[images]}"
    image_dir = require_dir(
        root / folder[images] / split, LAF_LAYOUT, "give --root the extracted LostAndFound release"
    )
    paths = _find_laf_images(image_dir, suffix)
    if not paths:
        raise FileNotFoundError(f"no *{suffix}.png under {image_dir}: expected {LAF_LAYOUT}")
    if no_known:
        paths = [p for p in paths if not p.name.startswith(SMIYC_NO_KNOWN_EXCLUDED)]

    def sibling(kind: str, image: Path, ending: str) -> Path:
        stem = image.name[: image.name.rindex(suffix)]
        return root / kind / split / image.parent.name / f"{stem}{ending}"

    frames = [
        Frame(
            name=p.name[: p.name.rindex(suffix)],
            sequence=_laf_clip(p.name[: p.name.rindex(suffix)]),
            image=p,
            label=sibling("gtCoarse", p, "_gtCoarse_labelIds.png"),
        )
        for p in paths
    ]
    require_files(
        [f.label for f in frames], "gtCoarse labelIds", "extract gtCoarse.zip into --root"
    )
    if skip_unlabeled if skip_unlabeled is not None else no_known:
        frames = [f for f in frames if _has_nonzero(f.label)]
    info = {"split": split, "images": folder[images], "no_known": str(no_known).lower()}
    if (root / "camera" / split).is_dir():
        cameras = [sibling("camera", f.image, "_camera.json") for f in frames]
        require_files(cameras, "camera JSON", f"complete {root / 'camera' / split} or remove it")
        frames = [replace(f, camera=c) for f, c in zip(frames, cameras, strict=True)]
    if (root / "timestamp" / split).is_dir():
        stamps = [sibling("timestamp", f.image, "_timestamp.txt") for f in frames]
        require_files(
            stamps, "timestamp", "complete the timestamp folder, or pass --fps for a fixed rate"
        )
        frames = [
            replace(f, timestamp_ns=_read_timestamp(s)) for f, s in zip(frames, stamps, strict=True)
        ]
    return DatasetFrames(
        "lostandfound", frames, LAF_OOD, image_bits=16 if images == "16bit" else 8, info=info
    )


# Fishyscapes LostAndFound -------------------------------------------------------------------


def fishyscapes_frames(root: str | Path, laf_root: str | Path) -> DatasetFrames:
    """Fishyscapes LAF labels with their LostAndFound images (and camera JSON when present)."""
    root, laf_root = Path(root), Path(laf_root)
    require_dir(root, FISHYSCAPES_LAYOUT, "give --root the extracted fishyscapes_lostandfound.zip")
    labels = sorted(root.glob("*_labels.png"))
    if not labels:
        raise FileNotFoundError(f"no *_labels.png in {root}: expected {FISHYSCAPES_LAYOUT}")
    frames = []
    for label in labels:
        name = label.name.split("_", 1)[1][: -len("_labels.png")]
        folder = _laf_folder(name)
        candidates = [
            (split, laf_root / "leftImg8bit" / split / folder / f"{name}_leftImg8bit.png")
            for split in ("train", "test")
        ]
        split, image = next((c for c in candidates if c[1].exists()), candidates[-1])
        camera = laf_root / "camera" / split / folder / f"{name}_camera.json"
        frames.append(
            Frame(name, _laf_clip(name), image, label, camera if camera.exists() else None)
        )
    require_files(
        [f.image for f in frames],
        "LostAndFound image",
        "give --laf-root the LostAndFound release (leftImg8bit/{train,test}/...)",
    )
    return DatasetFrames("fishyscapes-laf", frames, BINARY_OOD)


# SegmentMeIfYouCan --------------------------------------------------------------------------


def smiyc_frames(root: str | Path) -> DatasetFrames:
    """SMIYC AnomalyTrack / ObstacleTrack folder: the labelled frames, sorted by name."""
    root = Path(root)
    fix = "give --root dataset_AnomalyTrack or dataset_ObstacleTrack"
    image_dir = require_dir(root / "images", SMIYC_LAYOUT, fix)
    label_dir = require_dir(root / "labels_masks", SMIYC_LAYOUT, fix)
    images = sorted(p for ext in ("jpg", "webp", "png") for p in image_dir.glob(f"*.{ext}"))
    frames = [
        Frame(p.stem, root.name, p, label_dir / f"{p.stem}_labels_semantic.png") for p in images
    ]
    frames = [f for f in frames if f.label.exists()]
    if not frames:
        raise FileNotFoundError(
            f"none of the {len(images)} images in {image_dir} has a label in {label_dir}: "
            f"expected {SMIYC_LAYOUT}"
        )
    info = {"unlabeled_images_skipped": str(len(images) - len(frames))}
    return DatasetFrames("smiyc", frames, BINARY_OOD, info=info)


# CamVid -------------------------------------------------------------------------------------


def camvid_frames(
    root: str | Path, split: str = "test", held_out: tuple[str, ...] = CAMVID_OOD_HELD_OUT
) -> DatasetFrames:
    """CamVid (SegNet layout) with the CamVid-OOD protocol of ``nflowjs.data.camvid.CamVid``.

    Labels are the loader's training ids: the classes not held out, renumbered 0..K-1 in
    CAMVID_CLASSES order, 255 for void and held-out pixels; the OOD mask marks held-out
    classes 1, other classes 0, void 255. ``held_out=()`` gives the plain 11-class labels.
    """
    root = Path(root)
    unknown = set(held_out) - set(CAMVID_CLASSES)
    if unknown:
        raise ValueError(f"unknown CamVid classes {sorted(unknown)}; known: {CAMVID_CLASSES}")
    image_dir = require_dir(
        root / split / "images", CAMVID_LAYOUT, "check --root and --split (train, val or test)"
    )
    images = sorted(image_dir.glob("*.jpg")) + sorted(image_dir.glob("*.png"))
    if not images:
        raise FileNotFoundError(f"no *.jpg or *.png in {image_dir}: expected {CAMVID_LAYOUT}")
    frames = [
        Frame(p.stem, p.stem.rsplit("_", 1)[0], p, root / split / "labels" / f"{p.stem}.png")
        for p in images
    ]
    require_files([f.label for f in frames], "CamVid label", f"expected {CAMVID_LAYOUT}")
    classes = tuple(c for c in CAMVID_CLASSES if c not in held_out)
    labels = lookup(
        {raw: classes.index(name) for raw, name in enumerate(CAMVID_CLASSES) if name in classes}
    )
    ood = lookup({raw: int(name in held_out) for raw, name in enumerate(CAMVID_CLASSES)})
    info = {"split": split, "classes": json.dumps(classes), "held_out": json.dumps(held_out)}
    return DatasetFrames("camvid", frames, ood, label_table=labels, info=info)
