"""Runtime backends behind one interface: ``infer(rgb uint8 HxWx3) -> (labels, score, mask)``.

``rgb`` is at the bundle's size; outputs are HxW (labels uint8, score float32/float16, mask
uint8). ONNX Runtime is the CPU default; TensorRT runs an engine built for this GPU (with torch
CUDA tensors as I/O buffers); torch runs the bundle's inference checkpoint (``model.pt``).
torch and TensorRT are imported only when chosen: an ONNX Runtime runtime never loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from nflowjs_export.bundle import Bundle, BundleError, load_bundle

TORCH_CHECKPOINT = "model.pt"


class Backend(Protocol):
    name: str
    bundle: Bundle

    def infer(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def _check_frame(bundle: Bundle, rgb: np.ndarray) -> None:
    expected = (bundle.height, bundle.width, 3)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB frame, got {rgb.dtype} {rgb.shape}")
    if not bundle.dynamic_size and rgb.shape != expected:
        raise ValueError(f"frame {rgb.shape} != bundle input {expected}; resize it first")


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, folder: Path, bundle: Bundle, device: str = "cpu"):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        self.bundle = bundle
        self.session = ort.InferenceSession(str(folder / bundle.model_file), providers=providers)

    def infer(self, rgb: np.ndarray):
        _check_frame(self.bundle, rgb)
        labels, score, mask = self.session.run(None, {"rgb": rgb[None]})
        return labels[0], score[0], mask[0]


class TorchBackend:
    """The same graph in PyTorch; on CUDA in float16 and channels_last (the measured GPU path)."""

    name = "torch"

    def __init__(self, folder: Path, bundle: Bundle, device: str = "cpu"):
        import torch

        from nflowjs.checkpoint import load_checkpoint
        from nflowjs_export.onnx_export import frame_model

        path = folder / TORCH_CHECKPOINT
        if not path.is_file():
            raise BundleError(
                f"{folder} has no {TORCH_CHECKPOINT}: re-export it for the torch backend"
            )
        payload = load_checkpoint(path)
        self.bundle, self.device = bundle, torch.device(device)
        fixed = (bundle.height, bundle.width) if bundle.dynamic_size else None
        model = frame_model(
            payload, bundle.temperature, bundle.ood_threshold, bundle.score_dtype, fixed
        )
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model.head.segmenter.half().to(memory_format=torch.channels_last)
        self.torch = torch

    def infer(self, rgb: np.ndarray):
        _check_frame(self.bundle, rgb)
        torch = self.torch
        with (
            torch.inference_mode(),
            torch.autocast("cuda", torch.float16, enabled=self.device.type == "cuda"),
        ):
            frame = torch.from_numpy(rgb)[None].to(self.device, non_blocking=True)
            labels, score, mask = self.model(frame)
        return labels[0].cpu().numpy(), score[0].cpu().numpy(), mask[0].cpu().numpy()


class TensorRTBackend:
    name = "tensorrt"

    def __init__(
        self, folder: Path, bundle: Bundle, device: str = "cuda", precision: str | None = None
    ):
        try:
            import tensorrt as trt
        except ImportError as error:
            from nflowjs_export.tensorrt_build import INSTALL_HINT, TensorRTUnavailable

            raise TensorRTUnavailable(INSTALL_HINT) from error
        import torch

        from nflowjs_export.tensorrt_build import engine_file_name

        gpu = torch.cuda.get_device_name(0)
        preference = [precision] if precision else ["int8", "fp16", "fp32"]  # fastest first
        engines = [
            engine_file_name(p, gpu, trt.__version__)
            for p in preference
            if engine_file_name(p, gpu, trt.__version__) in bundle.files
        ]
        if not engines:
            raise BundleError(
                f"{folder} has no TensorRT engine for this GPU and TensorRT {trt.__version__}; "
                "run `nflowjs export tensorrt --bundle ...` here first"
            )
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine((folder / engines[0]).read_bytes())
        self.context = self.engine.create_execution_context()
        self.bundle, self.torch = bundle, torch
        self.stream = torch.cuda.Stream()

    def infer(self, rgb: np.ndarray):
        _check_frame(self.bundle, rgb)
        torch = self.torch
        with torch.cuda.stream(self.stream):  # copies and the engine share one stream
            return self._run(torch.from_numpy(rgb)[None].cuda(non_blocking=True), rgb.shape[:2])

    def _run(self, frame, size):
        torch = self.torch
        self.context.set_input_shape("rgb", tuple(frame.shape))
        self.context.set_tensor_address("rgb", frame.data_ptr())
        h, w = size
        score_dtype = getattr(torch, self.bundle.score_dtype)
        outputs = {
            "labels": torch.empty(1, h, w, dtype=torch.uint8, device="cuda"),
            "score": torch.empty(1, h, w, dtype=score_dtype, device="cuda"),
            "ood_mask": torch.empty(1, h, w, dtype=torch.uint8, device="cuda"),
        }
        for name, tensor in outputs.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return tuple(outputs[n][0].cpu().numpy() for n in ("labels", "score", "ood_mask"))


BACKENDS = {"onnxruntime": OnnxRuntimeBackend, "torch": TorchBackend, "tensorrt": TensorRTBackend}


def open_backend(folder: str | Path, kind: str = "auto", device: str | None = None) -> Backend:
    """A backend for the bundle in ``folder``; ``auto`` prefers TensorRT, then ONNX Runtime."""
    folder = Path(folder)
    bundle = load_bundle(folder)
    if kind == "auto":
        try:
            return TensorRTBackend(folder, bundle)
        except (RuntimeError, BundleError, ImportError):
            return OnnxRuntimeBackend(folder, bundle, device or "cpu")
    if kind not in BACKENDS:
        raise ValueError(f"backend {kind!r}: choose auto, {', '.join(BACKENDS)}")
    return BACKENDS[kind](folder, bundle, device or ("cuda" if kind == "tensorrt" else "cpu"))
