"""Score a recorded bag: the node's OOD heatmaps against the ground truth, plus latency and drops.

    python -m nflowjs_perception.bag_tools.evaluate BAG [--heatmap-topic
        /perception_node/ood_heatmap] [--out metrics.json]

Needs the repository's Python package ``nflowjs`` (and so torch): the AP / FPR95 / AUROC are
those of ``nflowjs.metrics`` (pooled over every non-void pixel of the bag, SegmentMeIfYouCan
conventions), the same numbers ``nflowjs evaluate`` reports offline. The runtime image has
neither; evaluate where the training environment is installed.

Pairing: a heatmap (sensor_msgs/Image 32FC1 or 16FC1) belongs to the ground-truth mask
(``/ground_truth/ood_mask``, mono8 0/1/255) with the same header stamp: the node keeps its
input's header. A heatmap of another size than its mask is resized to the mask's size
(bilinear, align_corners=False, like the network's own upsampling) and the report says so;
scoring at the ground truth's resolution keeps the pixel counts of the offline evaluation.

- latency: log time of the heatmap - log time of the input image with the same stamp (both
  recorded by the same recorder, so transport to the recorder cancels out); needs
  ``/camera/image_raw`` in the bag.
- drops: ground-truth frames without a heatmap (the node skipped them or the recording missed
  them); heatmaps without ground truth are counted apart.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nflowjs_perception.bag_tools.bagread import BagError, messages, open_bag, require_topics
from nflowjs_perception.bag_tools.messages import (
    IMAGE,
    IMAGE_TOPIC,
    OOD_MASK_TOPIC,
    deserialize,
    header_stamp_ns,
    image_array,
)

DEFAULT_HEATMAP_TOPIC = "/perception_node/ood_heatmap"


class _Scorer:
    """Feeds matched (heatmap, mask) pairs to nflowjs' accumulator, resizing where needed."""

    def __init__(self):
        try:  # lazy: the bag tools' other modules must work without torch
            import torch

            from nflowjs.metrics import OODMetricAccumulator
        except ImportError as error:
            raise ImportError(
                f"evaluate_bag needs the repository's Python package nflowjs and torch ({error}):"
                " run it from the training environment (make setup, then .venv/bin/evaluate_bag)"
            ) from error

        self.torch = torch
        self.accumulator = OODMetricAccumulator()
        self.frames = 0
        self.resized: dict[str, int] = {}  # "HxW -> HxW" -> frames

    def add(self, heatmap: np.ndarray, mask: np.ndarray) -> None:
        torch = self.torch
        scores = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))
        if heatmap.shape != mask.shape:
            key = f"{heatmap.shape[0]}x{heatmap.shape[1]} -> {mask.shape[0]}x{mask.shape[1]}"
            self.resized[key] = self.resized.get(key, 0) + 1
            scores = torch.nn.functional.interpolate(
                scores[None, None], size=mask.shape, mode="bilinear", align_corners=False
            )[0, 0]
        self.accumulator.update(scores, torch.from_numpy(np.ascontiguousarray(mask)))
        self.frames += 1


def _percentiles(values_ms: list[float]) -> dict[str, float] | None:
    if not values_ms:
        return None
    values = np.asarray(values_ms)
    return {
        "frames": len(values_ms),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def evaluate_bag(
    bag: str | Path,
    *,
    heatmap_topic: str = DEFAULT_HEATMAP_TOPIC,
    gt_topic: str = OOD_MASK_TOPIC,
    image_topic: str = IMAGE_TOPIC,
    progress: bool = True,
) -> dict:
    """Metrics of one recorded bag as a JSON-ready dict (see the module docstring)."""
    bag = Path(bag)
    scorer = _Scorer()
    with closing(open_bag(bag)) as reader:
        present = {c.topic: c for c in reader.connections}
        # Record the node's heatmap and the bag's ground truth together: without both, no score.
        require_topics(
            bag,
            reader,
            {heatmap_topic: ("--heatmap-topic", IMAGE), gt_topic: ("--gt-topic", IMAGE)},
        )
        wanted = [present[t] for t in (heatmap_topic, gt_topic, image_topic) if t in present]
        pending_gt: dict[int, np.ndarray] = {}
        pending_heat: dict[int, tuple[np.ndarray, int]] = {}
        image_log: dict[int, int] = {}
        latencies: list[float] = []
        gt_frames = 0
        total = sum(c.msgcount for c in wanted)
        stream = messages(reader, bag, wanted)
        for conn, log_ns, raw in tqdm(stream, total=total, unit="msg", disable=not progress):
            stamp = header_stamp_ns(raw)
            if conn.topic == image_topic:
                image_log[stamp] = log_ns
                continue
            try:
                array = image_array(deserialize(raw, conn.msgtype))
            except ValueError as error:  # an encoding we cannot score, a short data field
                raise BagError(
                    f"{bag}: a {conn.topic} message at log time {log_ns} cannot be scored "
                    f"({error}): the heatmap must be 32FC1/16FC1 and the mask mono8"
                ) from error
            if conn.topic == gt_topic:
                gt_frames += 1
                if stamp in pending_heat:
                    scorer.add(pending_heat.pop(stamp)[0], array)
                else:
                    pending_gt[stamp] = array
                continue
            if stamp in image_log:
                latencies.append((log_ns - image_log[stamp]) / 1e6)
            if stamp in pending_gt:
                scorer.add(array, pending_gt.pop(stamp))
            else:  # the mask may be logged after the heatmap: keep it until the end
                pending_heat[stamp] = (array, log_ns)
    result = scorer.accumulator.compute()
    notes = []
    if scorer.resized:
        sizes = "; ".join(f"{k} ({n} frames)" for k, n in scorer.resized.items())
        notes.append(f"heatmaps resized to the ground-truth size (bilinear): {sizes}")
    if image_topic not in present:
        notes.append(f"no {image_topic} in the bag: latency not measured")
    return {
        "bag": str(bag),
        "heatmap_topic": heatmap_topic,
        "ground_truth_topic": gt_topic,
        "frames": {
            "ground_truth": gt_frames,
            "evaluated": scorer.frames,
            "dropped": len(pending_gt),
            "drop_rate": len(pending_gt) / gt_frames if gt_frames else None,
            "heatmaps_without_ground_truth": len(pending_heat),
        },
        "ood": {
            "AP": _finite(result.ap),
            "FPR95": _finite(result.fpr95),
            "AUROC": _finite(result.auroc),
            "inlier_pixels": result.inliers,
            "anomaly_pixels": result.anomalies,
        },
        "latency_ms": _percentiles(latencies),
        "resized_heatmaps": scorer.resized,
        "notes": notes,
    }


def format_table(metrics: dict) -> str:
    """A plain-text table of the headline numbers (percentages as in the paper)."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    frames, ood, latency = metrics["frames"], metrics["ood"], metrics["latency_ms"]
    rows = [
        ("AP (%)", pct(ood["AP"])),
        ("FPR95 (%)", pct(ood["FPR95"])),
        ("AUROC (%)", pct(ood["AUROC"])),
        ("frames evaluated", f"{frames['evaluated']} / {frames['ground_truth']}"),
        ("dropped frames", f"{frames['dropped']} ({pct(frames['drop_rate'])} %)"),
        ("heatmaps without gt", str(frames["heatmaps_without_ground_truth"])),
    ]
    if latency:
        rows += [
            ("latency p50 (ms)", f"{latency['p50']:.1f}"),
            ("latency p99 (ms)", f"{latency['p99']:.1f}"),
        ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join([*lines, *(f"note: {note}" for note in metrics["notes"])])


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a crash leaves the previous metrics.json, not half of a new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="evaluate_bag",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bag", type=Path, help="a recorded bag folder")
    parser.add_argument("--heatmap-topic", default=DEFAULT_HEATMAP_TOPIC)
    parser.add_argument("--gt-topic", default=OOD_MASK_TOPIC)
    parser.add_argument("--image-topic", default=IMAGE_TOPIC)
    parser.add_argument("--out", type=Path, default=Path("metrics.json"), help="metrics JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_bag(
            args.bag,
            heatmap_topic=args.heatmap_topic,
            gt_topic=args.gt_topic,
            image_topic=args.image_topic,
            progress=not args.quiet,
        )
    except (BagError, OSError, ValueError, ImportError) as error:
        print(f"evaluate_bag: error: {error}", file=sys.stderr)
        return 2
    write_json(args.out, metrics)
    print(format_table(metrics))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
