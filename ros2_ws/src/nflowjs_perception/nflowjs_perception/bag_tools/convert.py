"""Datasets -> rosbag2 (MCAP) bags a node can be replayed on and scored against.

    python -m nflowjs_perception.bag_tools.convert {lostandfound,fishyscapes-laf,smiyc,camvid} \\
        --root DATASET --out BAG_DIR [--split test] [--max-frames N] [--first-frame I] [--fps HZ]

Topics (every message of a frame carries the same header stamp, which is also its log time):

- ``/camera/image_raw``       sensor_msgs/Image rgb8
- ``/camera/camera_info``     sensor_msgs/CameraInfo: K and P from the camera JSON when the
  dataset has one (LostAndFound, Fishyscapes via LostAndFound), else all zero ("uncalibrated")
- ``/ground_truth/ood_mask``  sensor_msgs/Image mono8: 0 inlier, 1 anomaly, 255 void
- ``/ground_truth/labels``    sensor_msgs/Image mono8 class ids (CamVid: the training ids of
  the CamVid-OOD protocol, 255 void; the class names are in the bag's custom_data)
- ``/tf_static``              base_link -> camera_optical_frame from the camera JSON's
  extrinsic (see camera.py for the ISO 8855 -> optical-frame axes), when there is one

Frames come in the loaders' order (sorted by path, so sequences play one after another). Timing:
with ``--fps`` a fixed rate; without it, recorded timestamps where the dataset has them
(LostAndFound's Cityscapes-style ``timestamp/<split>/<seq>/<frame>_timestamp.txt``, nanoseconds),
keeping the recorded spacing within a sequence and laying sequences end to end one typical
frame period apart (so playback never pauses for the hours between recordings); else a fixed
10 Hz. CamVid frames were sampled at 1 Hz from 30 Hz video: ``--fps 1`` replays that pace.
Stamps start at ``--start-time`` (default 2024-01-01T00:00:00Z, so a bag converts the same every
time; stamp 0 means "unset" to tf and many tools).

The bag is written under a hidden staging folder and renamed into place when complete. This
module and those it imports never import torch (the runtime image has none).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nflowjs_perception.bag_tools import frames as ds
from nflowjs_perception.bag_tools.bagio import open_writer, qos, staged_bag
from nflowjs_perception.bag_tools.camera import Calibration, read_camera_json
from nflowjs_perception.bag_tools.images import (
    detect_bits,
    read_label,
    read_rgb8,
    read_rgb16,
    to_8bit,
)
from nflowjs_perception.bag_tools.messages import (
    CAMERA_INFO,
    CAMERA_INFO_TOPIC,
    IMAGE,
    IMAGE_TOPIC,
    LABELS_TOPIC,
    OOD_MASK_TOPIC,
    TF_MESSAGE,
    TF_STATIC_TOPIC,
    TYPESTORE,
    camera_info_msg,
    image_msg,
    tf_static_msg,
)

DEFAULT_FPS = 10.0
DEFAULT_START_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z
DEFAULT_FRAME_ID = "camera_optical_frame"
DEFAULT_BASE_FRAME = "base_link"


@dataclass(frozen=True)
class ConvertSummary:
    path: Path
    frames: int
    messages: dict[str, int]
    timing: str
    size_bytes: int


def frame_times(
    frames: Sequence[ds.Frame], fps: float | None = None, start_ns: int = DEFAULT_START_NS
) -> tuple[list[int], str]:
    """Header stamps (= log times) of ``frames`` and a description of the timing used."""
    if fps is not None and not fps > 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    recorded = fps is None and bool(frames) and all(f.timestamp_ns is not None for f in frames)
    if not recorded:
        rate = fps or DEFAULT_FPS
        period = round(1e9 / rate)
        return [start_ns + i * period for i in range(len(frames))], f"fixed {rate:g} Hz"
    # Between consecutive frames: the recorded delta, or None where a new sequence starts.
    steps: list[int | None] = []
    for a, b in itertools.pairwise(frames):
        if a.sequence != b.sequence:
            steps.append(None)
            continue
        delta = b.timestamp_ns - a.timestamp_ns
        if delta <= 0:
            raise ValueError(
                f"timestamps of {a.name} and {b.name} do not increase ({delta} ns): fix the "
                "timestamp files or pass --fps for a fixed rate"
            )
        steps.append(delta)
    deltas = [step for step in steps if step is not None]
    gap = int(statistics.median(deltas)) if deltas else round(1e9 / DEFAULT_FPS)
    times = [start_ns]
    for step in steps:
        times.append(times[-1] + (gap if step is None else step))
    return times, f"recorded timestamps, sequences {gap / 1e6:.0f} ms apart"


class _Topics:
    """The bag's connections, in the order a frame's messages are written, and their counts."""

    def __init__(self, writer, dataset: ds.DatasetFrames, frames: Sequence[ds.Frame]):
        self.writer = writer
        self.connections = {}
        self.counts: dict[str, int] = {}
        self._add(CAMERA_INFO_TOPIC, CAMERA_INFO)
        self._add(OOD_MASK_TOPIC, IMAGE)
        if dataset.label_table is not None:
            self._add(LABELS_TOPIC, IMAGE)
        self._add(IMAGE_TOPIC, IMAGE)
        if any(f.camera for f in frames):
            # Latched like a live /tf_static, so late subscribers still get the transform.
            self._add(TF_STATIC_TOPIC, TF_MESSAGE, qos(transient_local=True, depth=1))

    def _add(self, topic: str, msgtype: str, offered=None) -> None:
        # Reliable: a reliable publisher serves reliable and best-effort subscribers alike.
        offered = [offered or qos(reliable=True)]
        self.connections[topic] = self.writer.add_connection(
            topic, msgtype, typestore=TYPESTORE, offered_qos_profiles=offered
        )
        self.counts[topic] = 0

    def write(self, topic: str, ns: int, data: bytes) -> None:
        self.writer.write(self.connections[topic], ns, data)
        self.counts[topic] += 1


def _read_frame(frame: ds.Frame, image_bits: int, bits: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(rgb8 pixels, label ids, values clipped by the 16-bit scaling) of one frame."""
    clipped = 0
    if image_bits == 16:
        rgb, clipped = to_8bit(read_rgb16(frame.image), bits)
    else:
        rgb = read_rgb8(frame.image)
    ids = read_label(frame.label)
    if ids.shape != rgb.shape[:2]:
        raise ValueError(
            f"mismatched ground truth: {frame.label} is {ids.shape[1]}x{ids.shape[0]} but its "
            f"image {frame.image} is {rgb.shape[1]}x{rgb.shape[0]}; the label must be the one "
            "of this image (check the dataset folders)"
        )
    return rgb, ids, clipped


def write_bag(
    dataset: ds.DatasetFrames,
    out: str | Path,
    *,
    max_frames: int | None = None,
    first_frame: int = 0,
    fps: float | None = None,
    start_ns: int = DEFAULT_START_NS,
    frame_id: str = DEFAULT_FRAME_ID,
    base_frame: str = DEFAULT_BASE_FRAME,
    source_bits: str | int = "auto",
    compress: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> ConvertSummary:
    """Write ``dataset`` (``max_frames`` frames from ``first_frame``) as an MCAP rosbag2 folder."""
    out = Path(out)
    frames = ds.limit_frames(dataset.frames, max_frames, first_frame)
    times, timing = frame_times(frames, fps, start_ns)
    bits = 8
    if dataset.image_bits == 16:
        bits = detect_bits([f.image for f in frames]) if source_bits == "auto" else int(source_bits)
    info = {
        "dataset": dataset.dataset,
        "frames": str(len(frames)),
        "timing": timing,
        "frame_id": frame_id,
        **dataset.info,
    }
    if dataset.image_bits == 16:
        info["image_scaling"] = f"linear from {bits}-bit data (see bag_tools/images.py)"
    clipped = 0
    with staged_bag(out, overwrite=overwrite) as staged:
        writer = open_writer(staged, compress)
        try:
            topics = _Topics(writer, dataset, frames)
            for key, value in info.items():
                writer.set_custom_data(f"nflowjs.{key}", value)
            last_pose: Calibration | None = None
            progress_bar = tqdm(
                list(zip(frames, times, strict=True)),
                desc=f"{dataset.dataset} -> {out.name}",
                unit="frame",
                disable=not progress,
            )
            for frame, ns in progress_bar:
                rgb, ids, n_clipped = _read_frame(frame, dataset.image_bits, bits)
                clipped += n_clipped
                calibration = read_camera_json(frame.camera) if frame.camera else None
                if calibration is not None and not calibration.same_pose(last_pose):
                    quaternion = calibration.quaternion_xyzw()
                    topics.write(
                        TF_STATIC_TOPIC,
                        ns,
                        tf_static_msg(
                            ns, base_frame, frame_id, calibration.translation, quaternion
                        ),
                    )
                    last_pose = calibration
                k = calibration.k if calibration is not None else None
                height, width = ids.shape
                topics.write(CAMERA_INFO_TOPIC, ns, camera_info_msg(ns, frame_id, width, height, k))
                ood = dataset.ood_table[ids]
                topics.write(OOD_MASK_TOPIC, ns, image_msg(ood, ns, frame_id, "mono8"))
                if dataset.label_table is not None:
                    labels = dataset.label_table[ids]
                    topics.write(LABELS_TOPIC, ns, image_msg(labels, ns, frame_id, "mono8"))
                # The image goes last: when a player paces on it, the frame's ground truth is out.
                topics.write(IMAGE_TOPIC, ns, image_msg(rgb, ns, frame_id, "rgb8"))
            writer.close()
        except BaseException:
            writer.abort()
            raise
    if clipped:
        print(
            f"warning: {clipped} pixel values exceeded {bits} bits and were clipped; pass "
            "--source-bits 16 (or the sensor's depth) to keep them",
            file=sys.stderr,
        )
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return ConvertSummary(out, len(frames), topics.counts, timing, size)


def _held_out(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(name.strip() for name in text.split(",") if name.strip())


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, required=True, help="the dataset folder")
    common.add_argument("--out", type=Path, required=True, help="bag folder to create")
    common.add_argument("--max-frames", type=int, help="write only N frames")
    common.add_argument(
        "--first-frame", type=int, default=0, help="index of the first frame written (default 0)"
    )
    common.add_argument(
        "--fps", type=float, help="fixed frame rate (default: recorded timestamps, else 10 Hz)"
    )
    common.add_argument(
        "--start-time",
        type=float,
        default=DEFAULT_START_NS / 1e9,
        help="stamp of the first frame, seconds since the epoch (default 2024-01-01)",
    )
    common.add_argument("--frame-id", default=DEFAULT_FRAME_ID, help="header frame_id")
    common.add_argument("--base-frame", default=DEFAULT_BASE_FRAME, help="parent in /tf_static")
    common.add_argument("--no-compress", action="store_true", help="no zstd chunk compression")
    common.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    parser = argparse.ArgumentParser(
        prog="convert_to_bag",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="dataset", required=True)
    laf = sub.add_parser("lostandfound", parents=[common], help="LostAndFound release")
    laf.add_argument("--split", default="test", choices=("train", "test"))
    laf.add_argument("--no-known", action="store_true", help="SMIYC's LostAndFound-noKnown")
    laf.add_argument(
        "--skip-unlabeled",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="drop frames whose label is all 0 (default: with --no-known)",
    )
    laf.add_argument(
        "--images",
        default="auto",
        choices=("auto", "8bit", "16bit"),
        help="leftImg8bit or leftImg16bit (auto: 8-bit when present)",
    )
    laf.add_argument(
        "--source-bits",
        default="auto",
        choices=("auto", "10", "12", "14", "16"),
        help="bits used by 16-bit images, for the linear scale to 8 bits",
    )
    fs = sub.add_parser("fishyscapes-laf", parents=[common], help="Fishyscapes LostAndFound")
    fs.add_argument("--laf-root", type=Path, required=True, help="LostAndFound release (images)")
    sub.add_parser("smiyc", parents=[common], help="SegmentMeIfYouCan dataset_*Track folder")
    camvid = sub.add_parser("camvid", parents=[common], help="CamVid, SegNet layout")
    camvid.add_argument("--split", default="test", choices=("train", "val", "test"))
    camvid.add_argument(
        "--held-out",
        type=_held_out,
        default=ds.CAMVID_OOD_HELD_OUT,
        help="comma-separated classes marked anomalous (default: pedestrian,bicyclist, the "
        "CamVid-OOD protocol; 'none': plain 11-class labels)",
    )
    return parser


def dataset_from_args(args: argparse.Namespace) -> ds.DatasetFrames:
    if args.dataset == "lostandfound":
        return ds.lostandfound_frames(
            args.root, args.split, args.no_known, args.skip_unlabeled, args.images
        )
    if args.dataset == "fishyscapes-laf":
        return ds.fishyscapes_frames(args.root, args.laf_root)
    if args.dataset == "smiyc":
        return ds.smiyc_frames(args.root)
    return ds.camvid_frames(args.root, args.split, args.held_out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = write_bag(
            dataset_from_args(args),
            args.out,
            max_frames=args.max_frames,
            first_frame=args.first_frame,
            fps=args.fps,
            start_ns=round(args.start_time * 1e9),
            frame_id=args.frame_id,
            base_frame=args.base_frame,
            source_bits=getattr(args, "source_bits", "auto"),
            compress=not args.no_compress,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (OSError, ValueError, ImportError) as error:  # FileNotFoundError, FileExistsError too
        print(f"convert_to_bag: error: {error}", file=sys.stderr)
        return 2
    topics = ", ".join(f"{topic} x{n}" for topic, n in summary.messages.items())
    print(
        f"wrote {summary.path}: {summary.frames} frames ({summary.timing}), "
        f"{summary.size_bytes / 1e6:.1f} MB; {topics}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
