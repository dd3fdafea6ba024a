"""CamVid road obstacles: people and cyclists cut from CamVid frames, pasted on others' road.

A LostAndFound-style set (small, never-seen objects on the road) built from CamVid alone:
pedestrian and bicyclist instances, the classes CamVid-OOD holds out of training, are cut with
their label masks from some frames and pasted onto the road of others. Output follows the
SegmentMeIfYouCan RoadObstacle layout and convention, so ``convert_to_bag smiyc`` turns it into
a bag and ``nflowjs evaluate --dataset smiyc-obstacle`` scores it:

    <out>/images/<frame>.png
    <out>/labels_masks/<frame>_labels_semantic.png   0 road, 1 pasted obstacle, 255 elsewhere
    <out>/obstacles.json                             what was pasted where, and the seed

An instance keeps its size and its bottom row (so its distance to the camera: all of CamVid is
one camera height) and moves sideways to a place where its footprint stands on road. People
and cyclists already in a background frame are void (255), so only pasted objects count.

    python -m nflowjs_perception.bag_tools.road_obstacles --camvid ../shared/data/camvid \\
        --out out/camvid-obstacles
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from nflowjs_perception.bag_tools import frames as ds

# Raw CamVid ids (SegNet layout).
ROAD = ds.CAMVID_CLASSES.index("road")
HELD_OUT = tuple(ds.CAMVID_CLASSES.index(name) for name in ds.CAMVID_OOD_HELD_OUT)
VOID = ds.VOID
OBSTACLE, FREE_ROAD = 1, 0


@dataclass(frozen=True)
class Instance:
    """One person or cyclist cut from a frame: its pixels, its mask and where it stood."""

    source: str  # frame name
    rgb: np.ndarray  # (h, w, 3) uint8, bounding box
    mask: np.ndarray  # (h, w) bool, the instance's pixels
    bottom: int  # the image row just below its lowest pixel in the source frame


@dataclass(frozen=True)
class Placement:
    source: str
    box: tuple[int, int, int, int]  # x, y, width, height in the output frame
    pixels: int


def cut_instances(frames: Sequence[ds.Frame], min_pixels: int) -> list[Instance]:
    """Connected pedestrian/bicyclist regions of ``min_pixels`` or more that the frame's edge
    does not cut (a truncated person pasted mid-road would look like no real obstacle)."""
    instances = []
    for frame in frames:
        label = np.asarray(Image.open(frame.label))
        held = np.isin(label, HELD_OUT).astype(np.uint8)
        count, components, stats, _ = cv2.connectedComponentsWithStats(held, connectivity=8)
        if count == 1:  # nobody in this frame: its image is not needed
            continue
        rgb = np.asarray(Image.open(frame.image).convert("RGB"))
        height, width = label.shape
        for i in range(1, count):
            x, y, w, h, area = stats[i]
            if area < min_pixels or x == 0 or y == 0 or x + w == width or y + h == height:
                continue
            mask = components[y : y + h, x : x + w] == i
            instances.append(Instance(frame.name, rgb[y : y + h, x : x + w].copy(), mask, y + h))
    return instances


def paste_obstacles(
    rgb: np.ndarray,
    label: np.ndarray,
    donors: Sequence[Instance],
    count: int,
    rng: np.random.Generator,
    min_road_footprint: float = 0.6,
) -> tuple[np.ndarray, np.ndarray, list[Placement]]:
    """Paste up to ``count`` donors onto the road of (``rgb``, raw CamVid ``label``).

    Returns the new image, its RoadObstacle mask and what was placed. A donor is placed at its
    own bottom row, at a column where at least ``min_road_footprint`` of the row under it is road
    and the pasted pixels cover no earlier obstacle.
    """
    rgb = rgb.copy()
    mask = np.full(label.shape, VOID, np.uint8)  # people already there stay void: not scored
    mask[label == ROAD] = FREE_ROAD
    placed: list[Placement] = []
    for index in rng.permutation(len(donors)):
        if len(placed) == count:
            break
        donor = donors[index]
        pixels, shape = donor.rgb, donor.mask
        if rng.random() < 0.5:
            pixels, shape = pixels[:, ::-1], shape[:, ::-1]
        h, w = shape.shape
        top = donor.bottom - h
        footprint = np.convolve(label[donor.bottom - 1] == ROAD, np.ones(w), mode="valid") / w
        columns = np.flatnonzero(footprint >= min_road_footprint)
        columns = [x for x in columns if not (mask[top : top + h, x : x + w][shape] == 1).any()]
        if not columns:
            continue
        x = int(rng.choice(columns))
        rgb[top : top + h, x : x + w][shape] = pixels[shape]
        mask[top : top + h, x : x + w][shape] = OBSTACLE
        placed.append(Placement(donor.source, (x, int(top), int(w), int(h)), int(shape.sum())))
    return rgb, mask, placed


def generate(
    camvid: str | Path,
    out: str | Path,
    split: str = "test",
    obstacles_per_frame: tuple[int, int] = (1, 3),
    min_pixels: int = 300,
    seed: int = 0,
    max_frames: int | None = None,
) -> dict:
    """Write the set; returns its summary (also in ``<out>/obstacles.json``).

    People and cyclists already in a frame make it a donor only for *other* frames, and frames
    in which no obstacle fits are left out.
    """
    frames = ds.camvid_frames(camvid, split).frames
    donors = cut_instances(frames, min_pixels)
    if not donors:
        raise ValueError(f"no pedestrian or bicyclist of {min_pixels}+ pixels in {camvid}/{split}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels_masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for frame in tqdm(frames[:max_frames], desc="road obstacles"):
        label = np.asarray(Image.open(frame.label))
        rgb = np.asarray(Image.open(frame.image).convert("RGB"))
        others = [d for d in donors if d.source != frame.name]
        count = int(rng.integers(obstacles_per_frame[0], obstacles_per_frame[1] + 1))
        pasted, mask, placed = paste_obstacles(rgb, label, others, count, rng)
        if not placed:
            continue
        Image.fromarray(pasted).save(out / "images" / f"{frame.name}.png")
        Image.fromarray(mask).save(out / "labels_masks" / f"{frame.name}_labels_semantic.png")
        written[frame.name] = [vars(p) for p in placed]
    summary = {
        "source": f"CamVid {split}",
        "seed": seed,
        "frames": len(written),
        "obstacles": sum(len(p) for p in written.values()),
        "donor_instances": len(donors),
        "convention": "SMIYC RoadObstacle: 0 road, 1 obstacle, 255 void",
        "placements": written,
    }
    (out / "obstacles.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--camvid", required=True, help="CamVid root (SegNet layout)")
    parser.add_argument("--out", required=True, help="folder to write (SMIYC layout)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-frames", type=int, help="only the first N frames of the split")
    parser.add_argument("--min-pixels", type=int, default=300, help="smallest instance to cut")
    args = parser.parse_args(argv)
    try:
        summary = generate(
            args.camvid,
            args.out,
            args.split,
            min_pixels=args.min_pixels,
            seed=args.seed,
            max_frames=args.max_frames,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"road_obstacles: error: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary['frames']} frames with {summary['obstacles']} obstacles "
        f"({summary['donor_instances']} donor instances) to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
