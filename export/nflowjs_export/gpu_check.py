"""GPU check: LDN-121 + fused JSD head at 1024x2048, torch and ONNX Runtime CUDA, one table.

    python -m nflowjs_export.gpu_check            # on a CUDA machine (export/gpu_check.sh)
    python -m nflowjs_export.gpu_check --device cpu --preset ldn-lite --size 64x128  # smoke run

Measures the segmenter alone (normalised float input -> logits at full resolution) and the
whole exported graph (uint8 camera frame -> labels, JSD score, mask): torch fp32 eager, fp16 +
channels_last eager and replayed as a CUDA graph, and both graphs exported to ONNX and run by
ONNX Runtime's CUDA provider (host arrays in and out, as the runtime's backend does, timed on
the host clock); the head's overhead in ms and %; fp16 and ONNX Runtime vs fp32 parity; the
paper's RTX 3090 figures. Weights are random: speed does not depend on them, and the machine
has no network for ImageNet weights.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

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


def run(preset: str, height: int, width: int, device: str, warmup: int, iterations: int):
    """{path: {"segmenter": ms array, "+ JSD head": ms array}}, parity of fp16 and ONNX Runtime."""
    device = torch.device(device)
    torch.manual_seed(0)
    segmenter = LadderDenseNet(ldn_config(preset, num_classes=19)).eval().to(device)
    frame = torch.randint(0, 256, (1, height // 8, width // 8, 3), dtype=torch.uint8)
    frame = frame.repeat_interleave(8, 1).repeat_interleave(8, 2).to(device)  # smooth, image-like
    cuda = device.type == "cuda"
    full = CameraFrameModel(OutlierAwareSegmenter(segmenter, 19)).eval()
    image = (frame.permute(0, 3, 1, 2).float() / 255).contiguous()

    rows, parity = {}, {}
    with torch.inference_mode():
        reference = full(frame)
        rows["torch fp32 eager"] = {
            "segmenter": _timer(lambda: segmenter(image), device, warmup, iterations),
            "+ JSD head": _timer(lambda: full(frame), device, warmup, iterations),
        }
    # ONNX Runtime first, from the fp32 modules (the fp16 conversion below is in place)
    rows.update(_onnxruntime_rows(segmenter, full, image, frame, device, warmup, iterations))
    if "onnxruntime" in rows:
        parity["onnxruntime"] = rows.pop("onnxruntime")
    if cuda:
        segmenter.half().to(memory_format=torch.channels_last)
        image16 = image.half().contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cuda", torch.float16):
            rows["torch fp16 eager"] = {
                "segmenter": _timer(lambda: segmenter(image16), device, warmup, iterations),
                "+ JSD head": _timer(lambda: full(frame), device, warmup, iterations),
            }
            graphs = [_cuda_graph(segmenter, image16), _cuda_graph(full, frame)]
            rows["torch fp16 CUDA graph"] = {
                name: _timer(replay, device, warmup, iterations)
                for name, replay in zip(("segmenter", "+ JSD head"), graphs, strict=True)
            }
            parity["torch fp16"] = full(frame)
    return rows, {k: _agreement(v, reference) for k, v in parity.items()}


def _agreement(outputs, reference) -> tuple[float, float]:
    labels, score = (
        torch.as_tensor(np.asarray(o.cpu() if hasattr(o, "cpu") else o)) for o in outputs[:2]
    )
    agreement = float((labels == reference[0].cpu()).float().mean())
    return agreement, float((score.float() - reference[1].cpu()).abs().max())


def _onnxruntime_rows(segmenter, full, image, frame, device, warmup, iterations) -> dict:
    """Both graphs exported to ONNX and run by ONNX Runtime (CUDA provider on a GPU); a row
    that cannot run says why instead of stopping the check."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        print(f"ONNX Runtime row skipped: {error} (export/gpu_check.sh installs onnxruntime-gpu)")
        return {}
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        print(f"ONNX Runtime row skipped: this onnxruntime has no {provider} (onnxruntime-gpu)")
        return {}
    sessions, feeds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, module, example in (("segmenter", segmenter, image), ("+ JSD head", full, frame)):
            path = Path(tmp) / f"{len(sessions)}.onnx"
            with torch.inference_mode(False), torch.no_grad():
                torch.onnx.export(
                    module, (example.clone(),), dynamo=True, verbose=False, input_names=["x"]
                ).save(str(path))
            providers = list(dict.fromkeys([provider, "CPUExecutionProvider"]))
            session = ort.InferenceSession(str(path), providers=providers)
            if session.get_providers()[0] != provider:
                print(f"ONNX Runtime row skipped: {provider} did not load")
                return {}
            sessions[name], feeds[name] = session, {"x": example.cpu().numpy()}
    label = f"ONNX Runtime {'CUDA' if device.type == 'cuda' else 'CPU'} fp32"
    host = torch.device("cpu")  # session.run is synchronous, host arrays in and out
    rows = {
        label: {
            name: _timer(lambda s=s, f=feeds[name]: s.run(None, f), host, warmup, iterations)
            for name, s in sessions.items()
        }
    }
    rows["onnxruntime"] = sessions["+ JSD head"].run(None, feeds["+ JSD head"])
    return rows


def table(rows: dict) -> str:
    lines = [
        "| path | segmenter p50 ms | p99 ms | + JSD head p50 ms | p99 ms | head ms | head % |",
        "|---|---|---|---|---|---|---|",
    ]
    for path, times in rows.items():
        seg, full = (np.percentile(times[k], [50, 99]) for k in ("segmenter", "+ JSD head"))
        overhead = full[0] - seg[0]
        lines.append(
            f"| {path} | {seg[0]:.2f} | {seg[1]:.2f} | {full[0]:.2f} | {full[1]:.2f} "
            f"| {overhead:.2f} | {100 * overhead / seg[0]:.1f} % |"
        )
    lines.append(
        f"| paper, RTX 3090 (Table 6) | {PAPER_LDN_MS} | | {PAPER_LDN_MS + PAPER_HEAD_MS:.1f} | "
        f"| {PAPER_HEAD_MS} | {100 * PAPER_HEAD_MS / PAPER_LDN_MS:.1f} % |"
    )
    return "\n".join(lines)


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
    rows, parity = run(args.preset, height, width, args.device, args.warmup, args.iterations)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"\n{args.preset} at {args.size} on {gpu}, torch {torch.__version__}, batch 1")
    print(table(rows))
    for name, (agreement, error) in parity.items():
        print(
            f"{name} vs torch fp32: labels agree on {100 * agreement:.3f} % of pixels, "
            f"score max abs error {error:.2e}"
        )


if __name__ == "__main__":
    main()
