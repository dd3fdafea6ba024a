"""``nflowjs export tensorrt``: a bundle's ONNX graph -> TensorRT engine added to the bundle.

The builder itself is the runtime's (``nflowjs_perception.tensorrt_engine``, also used by the
Docker image to build on first start); this adds INT8 calibration from a folder of images and
records the engine in the bundle. Only the ``gpu``-marked test runs a build; everything around it
is tested on CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from nflowjs.errors import MissingDependency
from nflowjs_export.bundle import add_bundle_file
from nflowjs_perception.backends import TORCH_PROGRAM
from nflowjs_perception.bundle import load_bundle
from nflowjs_perception.cuda_buffers import CudaRuntime
from nflowjs_perception.tensorrt_engine import (
    INSTALL_HINT,
    PRECISIONS,
    build_serialized_engine,
    engine_file_name,
    import_tensorrt,
)
from nflowjs_perception.tensorrt_engine import TensorRTUnavailable as RuntimeUnavailable

__all__ = ["CalibrationImages", "build_engine", "build_with_torch_tensorrt", "engine_file_name"]


class TensorRTUnavailable(MissingDependency, RuntimeUnavailable):
    """TensorRT (or torch-tensorrt) is not importable here."""


class CalibrationImages:
    """uint8 NHWC batches of a folder's images resized to the bundle size (INT8 calibration)."""

    SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

    def __init__(
        self, folder: str | Path, height: int, width: int, batch_size: int = 1, limit: int = 500
    ):
        folder = Path(folder)
        self.files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in self.SUFFIXES)[
            :limit
        ]
        if not self.files:
            raise FileNotFoundError(
                f"no calibration images ({', '.join(self.SUFFIXES)}) under {folder}"
            )
        self.height, self.width, self.batch_size = height, width, batch_size

    def __len__(self) -> int:
        return len(self.files) // self.batch_size  # a last partial batch is dropped

    def __iter__(self):
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = [self._load(p) for p in self.files[start : start + self.batch_size]]
            yield np.ascontiguousarray(np.stack(batch))

    def _load(self, path: Path) -> np.ndarray:
        with Image.open(path) as image:
            resized = image.convert("RGB").resize((self.width, self.height), Image.BILINEAR)
            return np.asarray(resized, dtype=np.uint8)


def _entropy_calibrator(trt, batches: CalibrationImages, cache_file: Path):
    import torch  # device buffers; the torch CUDA build is what our GPU images carry

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches = iter(batches)
            self.device_batch = None

        def get_batch_size(self):
            return batches.batch_size

        def get_batch(self, names):
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.device_batch = torch.from_numpy(batch).cuda()
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.exists() else None

        def write_calibration_cache(self, cache):
            cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(
    bundle_dir: str | Path,
    precision: str = "fp16",
    calibration_dir: str | Path | None = None,
    workspace_gib: float = 4.0,
    timing_cache: str | Path | None = None,
) -> Path:
    """Build an engine for this GPU from the bundle's ONNX graph and add it to the bundle."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use fp32, fp16 or int8")
    if precision == "int8" and calibration_dir is None:
        raise ValueError("INT8 needs --calibration-images: a folder of typical camera frames")
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)  # a bad bundle is reported before TensorRT is needed
    try:
        trt = import_tensorrt()
    except RuntimeUnavailable as error:
        raise TensorRTUnavailable(f"{INSTALL_HINT}, then run this again") from error
    gpu = CudaRuntime().device_name()  # the name the runtime looks the engine up by
    calibrator = None
    if precision == "int8":
        batches = CalibrationImages(calibration_dir, bundle.height, bundle.width)
        calibrator = _entropy_calibrator(trt, batches, bundle_dir / "int8.calib")
    serialized = build_serialized_engine(
        bundle_dir / bundle.model_file,
        precision,
        (bundle.height, bundle.width) if bundle.dynamic_size else None,
        workspace_gib,
        calibrator,
        Path(timing_cache) if timing_cache else None,
    )
    name = engine_file_name(precision, gpu, trt.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Path(tmp) / name
        engine.write_bytes(serialized)
        add_bundle_file(bundle_dir, engine, name)
    return bundle_dir / name


def build_with_torch_tensorrt(bundle_dir: str | Path, precision: str = "fp16") -> Path:
    """The alternative path: torch-tensorrt compiles the bundle's torch program (``model.pt2``)."""
    try:
        import torch
        import torch_tensorrt
    except ImportError as error:
        hint = INSTALL_HINT.replace("`tensorrt`", "`torch-tensorrt`")
        raise TensorRTUnavailable(f"{hint}, then run this again") from error
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    from torch.export.passes import move_to_device_pass

    program = torch.export.load(str(bundle_dir / TORCH_PROGRAM))  # traced in eval mode
    model = move_to_device_pass(program, "cuda").module()
    example = torch.zeros(1, bundle.height, bundle.width, 3, dtype=torch.uint8, device="cuda")
    precisions = {"fp32": {torch.float32}, "fp16": {torch.float16, torch.float32}}
    if precision not in precisions:
        raise ValueError(f"--via torch-tensorrt supports {sorted(precisions)}, not {precision!r}")
    compiled = torch_tensorrt.compile(
        model, ir="dynamo", inputs=[example], enabled_precisions=precisions[precision]
    )
    name = engine_file_name(precision, torch.cuda.get_device_name(0), torch_tensorrt.__version__)
    name = name.replace(".engine", ".torchtrt.ep")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        torch_tensorrt.save(compiled, str(path), inputs=[example])
        add_bundle_file(bundle_dir, path, name)
    return bundle_dir / name
