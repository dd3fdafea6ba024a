"""``nflowjs bench``: latency of a bundle on one backend, warm-up excluded, with parity.

Prints p50 / p90 / p99 latency of ``backend.infer`` (frame in host memory -> outputs in host
memory), throughput, and agreement with the torch fp32 reference on the same frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from nflowjs_export.onnx_export import reference_model
from nflowjs_perception.backends import open_backend


def bench(
    bundle_dir: str | Path,
    backend: str = "onnxruntime",
    device: str | None = None,
    iterations: int = 50,
    warmup: int = 5,
    frames: list[np.ndarray] | None = None,
    seed: int = 0,
    precision: str | None = None,
) -> dict:
    options = {"precision": precision} if precision else {}
    runner = open_backend(bundle_dir, backend, device, **options)
    size = (runner.bundle.height, runner.bundle.width, 3)
    if frames is None:  # smooth random frames: real-looking statistics without shipping data
        rng = np.random.default_rng(seed)
        coarse = rng.integers(0, 256, (4, size[0] // 16 + 1, size[1] // 16 + 1, 3), dtype=np.uint8)
        frames = [
            np.ascontiguousarray(c.repeat(16, 0).repeat(16, 1)[: size[0], : size[1]])
            for c in coarse
        ]
    for i in range(warmup):
        runner.infer(frames[i % len(frames)])
    latencies = []
    for i in range(iterations):
        started = time.perf_counter()
        runner.infer(frames[i % len(frames)])
        latencies.append(1000 * (time.perf_counter() - started))
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    return {
        "backend": runner.name + (f" {precision}" if precision else ""),
        # what the runner really got: ONNX Runtime falls back to the CPU without an error
        "device": runner.device,
        "provider": getattr(runner, "provider", ""),
        "size": f"{size[0]}x{size[1]}",
        "iterations": iterations,
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "fps": 1000.0 / float(np.mean(latencies)),
        **parity_against_torch(runner, Path(bundle_dir), frames[:2]),
    }


def parity_against_torch(runner, bundle_dir: Path, frames: list[np.ndarray]) -> dict:
    """Label agreement and max score error of ``runner`` vs the torch fp32 model on CPU."""
    bundle = runner.bundle
    reference = reference_model(bundle_dir, bundle)
    agree = pixels = 0
    max_error = 0.0
    for frame in frames:
        labels, score, _ = runner.infer(frame)
        with torch.inference_mode():
            ref_labels, ref_score, _ = reference(torch.from_numpy(frame)[None])
        agree += int((labels == ref_labels[0].numpy()).sum())
        pixels += labels.size
        error = np.abs(score.astype(np.float32) - ref_score[0].numpy()).max()
        max_error = max(max_error, float(error))
    return {"label_agreement": agree / pixels, "score_max_abs_error": max_error}


def format_table(rows: list[dict]) -> str:
    lines = [
        "| backend | device | size | p50 ms | p90 ms | p99 ms | FPS | labels = ref | score err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {_device_text(r)} | {r['size']} | {r['p50_ms']:.1f} "
            f"| {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['fps']:.1f} "
            f"| {100 * r['label_agreement']:.3f} % | {r['score_max_abs_error']:.1e} |"
        )
    return "\n".join(lines)


def _device_text(row: dict) -> str:
    provider = row.get("provider", "")
    return f"{row['device']} ({provider})" if provider else row["device"]


def random_weight_bundle(preset: str, height: int, width: int, folder: Path) -> Path:
    """A bundle of ``preset`` with random weights and the 19 Cityscapes classes (for speed)."""
    from nflowjs.checkpoint import config_dict, save_checkpoint
    from nflowjs.data.cityscapes import CITYSCAPES_CLASSES
    from nflowjs.networks import LadderDenseNet, ldn_config
    from nflowjs_export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = LadderDenseNet(ldn_config(preset, num_classes=len(CITYSCAPES_CLASSES)))
    checkpoint = folder / f"{preset}-random.pt"
    save_checkpoint(
        checkpoint,
        {
            "stage": "random",
            "epoch": 0,
            "model": model.state_dict(),
            "model_config": config_dict(model.config),
            "classes": list(CITYSCAPES_CLASSES),
        },
    )
    return export_onnx(checkpoint, folder / f"{preset}-{height}x{width}", height, width, 0.5)
