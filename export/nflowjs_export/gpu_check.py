"""GPU check: LDN-121 + fused JSD head at 1024x2048 on the torch CUDA path, one table.

    python -m nflowjs_export.gpu_check            # on a CUDA machine (export/gpu_check.sh)
    python -m nflowjs_export.gpu_check --device cpu --preset ldn-lite --size 64x128  # smoke run

Measures the segmenter alone (normalised float input -> logits at full resolution) and the
whole exported graph (uint8 camera frame -> labels, JSD score, mask), eager and replayed as a
CUDA graph, in fp16 + channels_last; the head's overhead in ms and %; fp16 vs fp32 parity; and
puts the paper's RTX 3090 figures beside them. Weights are random: speed does not depend on
them, and the machine has no network for ImageNet weights.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from nflowjs.head import OutlierAwareSegmenter
from nflowjs.networks import LadderDenseNet, ldn_config
from nflowjs_export.frame_model import CameraFrameModel

PAPER_LDN_MS, PAPER_HEAD_MS = 46.5, 7.8  # paper Table 6, RTX 3090, 1024x2048


def _timer(fn, device: torch.device, warmup: int, iterations: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - started))
    return np.array(times)


def _cuda_graph(module, example: torch.Tensor):
    """Capture ``module(example)`` once; replaying it skips Python and kernel-launch overhead."""
    static_input = example.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            module(static_input)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(static_input)
    return graph.replay


def run(preset: str, height: int, width: int, device: str, warmup: int, iterations: int) -> list:
    device = torch.device(device)
    torch.manual_seed(0)
    segmenter = LadderDenseNet(ldn_config(preset, num_classes=19)).eval().to(device)
    frame = torch.randint(0, 256, (1, height // 8, width // 8, 3), dtype=torch.uint8)
    frame = frame.repeat_interleave(8, 1).repeat_interleave(8, 2).to(device)  # smooth, image-like
    fp16 = device.type == "cuda"
    dtype = torch.float16 if fp16 else torch.float32

    with torch.inference_mode():
        fp32_outputs = CameraFrameModel(OutlierAwareSegmenter(segmenter, 19))(frame)
    if fp16:
        segmenter = segmenter.half().to(memory_format=torch.channels_last)
    full = CameraFrameModel(OutlierAwareSegmenter(segmenter, 19))
    image = (frame.permute(0, 3, 1, 2).to(dtype) / 255).contiguous(
        memory_format=torch.channels_last
    )

    rows = []
    with torch.inference_mode(), torch.autocast("cuda", dtype, enabled=fp16):
        for name, fn in (
            ("segmenter", lambda: segmenter(image)),
            ("+ JSD head", lambda: full(frame)),
        ):
            rows.append((name, "eager", _timer(fn, device, warmup, iterations)))
        if device.type == "cuda":
            graphs = [_cuda_graph(segmenter, image), _cuda_graph(full, frame)]
            for name, replay in zip(("segmenter", "+ JSD head"), graphs, strict=True):
                rows.append((name, "CUDA graph", _timer(replay, device, warmup, iterations)))
        labels, score, _ = full(frame)
    agreement = float((labels == fp32_outputs[0]).float().mean())
    error = float((score.float() - fp32_outputs[1]).abs().max())
    return rows, agreement, error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="ldn121")
    parser.add_argument("--size", default="1024x2048")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device: run on a GPU machine, or pass --device cpu for a smoke run"
        )
    rows, agreement, error = run(
        args.preset, height, width, args.device, args.warmup, args.iterations
    )
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"\n{args.preset} at {args.size} on {gpu}, torch {torch.__version__}, batch 1")
    print("| graph | mode | p50 ms | p99 ms | FPS |")
    print("|---|---|---|---|---|")
    p50 = {}
    for name, mode, times in rows:
        p50[name, mode] = np.percentile(times, 50)
        print(
            f"| {name} | {mode} | {p50[name, mode]:.2f} | {np.percentile(times, 99):.2f} "
            f"| {1000 / times.mean():.1f} |"
        )
    for mode in sorted({mode for _, mode, _ in rows}):
        overhead = p50["+ JSD head", mode] - p50["segmenter", mode]
        share = 100 * overhead / p50["segmenter", mode]
        print(
            f"head overhead ({mode}): {overhead:.2f} ms = {share:.1f} % of the segmenter "
            f"(paper, RTX 3090: {PAPER_LDN_MS} ms + {PAPER_HEAD_MS} ms = "
            f"{100 * PAPER_HEAD_MS / PAPER_LDN_MS:.1f} %)"
        )
    precision = "fp16" if args.device == "cuda" else "fp32"
    print(
        f"{precision} vs fp32: labels agree on {100 * agreement:.3f} % of pixels, "
        f"score max abs error {error:.2e}"
    )


if __name__ == "__main__":
    main()
