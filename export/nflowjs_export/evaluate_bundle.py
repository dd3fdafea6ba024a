"""Accuracy of a bundle's graphs as deployed: mIoU and OOD AP / FPR95 from ONNX Runtime's outputs.

    python -m nflowjs_export.evaluate_bundle --bundle B --dataset camvid-ood --root DATA \\
        --split test --precision fp32 int8

Runs each graph (``model.onnx``; ``model.int8.onnx`` for int8) on every frame of the split in
ONNX Runtime on the CPU and scores what the runtime gets, the uint8 labels and the float score,
with the same accumulators as ``nflowjs evaluate`` (mIoU over inlier pixels, AP / FPR95 /
AUROC of the score over non-void pixels). Prints one table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nflowjs.data.registry import build_dataset
from nflowjs.metrics import ConfusionMatrix, OODMetricAccumulator
from nflowjs_perception.backends import open_backend


def evaluate_bundle(
    bundle_dir: str | Path, dataset: str, root: str, split: str = "test", precision: str = "fp32"
) -> dict:
    options = {"precision": "int8"} if precision == "int8" else {}
    backend = open_backend(bundle_dir, "onnxruntime", "cpu", **options)
    bundle = backend.bundle
    data = build_dataset(dataset, root, split, with_ood_mask=True)
    classes = [c.name for c in bundle.classes]
    if list(data.classes) != classes:
        raise ValueError(f"{bundle_dir} has classes {classes}, {dataset} {list(data.classes)}")
    confusion, ood = ConfusionMatrix(len(classes)), OODMetricAccumulator()
    for image, label, ood_gt in tqdm(data, desc=f"{bundle.model_file} on {dataset} {split}"):
        rgb = image.permute(1, 2, 0).numpy()  # uint8 CHW -> HWC, the camera frame
        size = (bundle.height, bundle.width)
        if rgb.shape[:2] != size and not bundle.dynamic_size:
            resized = F.interpolate(image[None].float(), size, mode="bilinear")
            rgb = resized[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        labels, score, _ = backend.infer(np.ascontiguousarray(rgb))
        labels, score = torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(score)
        if labels.shape != label.shape:  # back to the ground truth's size, as evaluate does
            labels = F.interpolate(labels[None, None].float(), label.shape, mode="nearest")[0, 0]
            labels = labels.long()
            score = F.interpolate(score[None, None].float(), label.shape, mode="bilinear")[0, 0]
        inlier = ood_gt == 0
        confusion.update(labels[inlier], label[inlier])
        ood.update(score.float(), ood_gt)
    metrics = ood.compute()
    return {
        "bundle": str(bundle_dir),
        "model_file": bundle.model_file,
        "precision": precision,
        "dataset": dataset,
        "split": split,
        "images": len(data),
        "mIoU": confusion.miou(),
        **{k: v for k, v in metrics.as_dict().items() if k in ("AP", "FPR95", "AUROC")},
    }


def format_table(rows: list[dict]) -> str:
    lines = [
        "| graph | precision | images | mIoU | AP | FPR95 | AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model_file']} | {r['precision']} | {r['images']} | {100 * r['mIoU']:.2f} "
            f"| {100 * r['AP']:.2f} | {100 * r['FPR95']:.2f} | {100 * r['AUROC']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--dataset", default="camvid-ood")
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "int8"])
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = [
        evaluate_bundle(args.bundle, args.dataset, args.root, args.split, p) for p in args.precision
    ]
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    print(format_table(rows))


if __name__ == "__main__":
    main()
