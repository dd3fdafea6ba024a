"""``nflowjs export tensorrt``: a bundle's ONNX graph -> TensorRT engine added to the bundle.

Standard TensorRT 10 Python API, kept small on purpose: no machine of ours has the builder, so
the build itself is only exercised by the ``gpu``-marked test; everything around it (naming,
calibration batches, arguments, the bundle update) is tested on CPU.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from nflowjs.errors import MissingDependency
from nflowjs_export.bundle import add_bundle_file, load_bundle


class TensorRTUnavailable(MissingDependency):
    """TensorRT (or torch-tensorrt) is not importable here."""


INSTALL_HINT = (
    "TensorRT is not installed: install NVIDIA's `tensorrt` Python package (pip install "
    "tensorrt, CUDA GPU required) or use the Docker runtime image, then run this again."
)


def engine_file_name(precision: str, gpu_name: str, tensorrt_version: str) -> str:
    """``model.fp16.<gpu>.trt10.3.engine``: engines run only where they were built."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    version = ".".join(tensorrt_version.split(".")[:2])
    return f"model.{precision}.{gpu}.trt{version}.engine"


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
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision {precision!r}: use fp32, fp16 or int8")
    if precision == "int8" and calibration_dir is None:
        raise ValueError("INT8 needs --calibration-images: a folder of typical camera frames")
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)  # a bad bundle is reported before TensorRT is needed
    try:
        import tensorrt as trt
    except ImportError as error:
        raise TensorRTUnavailable(INSTALL_HINT) from error
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse((bundle_dir / bundle.model_file).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {bundle.model_file}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        batches = CalibrationImages(calibration_dir, bundle.height, bundle.width)
        config.int8_calibrator = _entropy_calibrator(trt, batches, bundle_dir / "int8.calib")
    if bundle.dynamic_size:
        profile = builder.create_optimization_profile()
        size = (1, bundle.height, bundle.width, 3)
        profile.set_shape("rgb", (1, 256, 256, 3), size, (1, 2048, 4096, 3))
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(
        cache_path.read_bytes() if cache_path and cache_path.exists() else b""
    )
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine; see the log above")
    if cache_path:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    import torch

    name = engine_file_name(precision, torch.cuda.get_device_name(0), trt.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Path(tmp) / name
        engine.write_bytes(bytes(serialized))
        add_bundle_file(bundle_dir, engine, name)
    return bundle_dir / name


def build_with_torch_tensorrt(bundle_dir: str | Path, precision: str = "fp16") -> Path:
    """The alternative path: torch-tensorrt compiles the bundle's torch model (``model.pt``)."""
    try:
        import torch
        import torch_tensorrt
    except ImportError as error:
        raise TensorRTUnavailable(INSTALL_HINT.replace("`tensorrt`", "`torch-tensorrt`")) from error
    from nflowjs.checkpoint import load_checkpoint
    from nflowjs_export.backends import TORCH_CHECKPOINT
    from nflowjs_export.onnx_export import frame_model

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    payload = load_checkpoint(bundle_dir / TORCH_CHECKPOINT)
    model = frame_model(payload, bundle.temperature, bundle.ood_threshold, bundle.score_dtype)
    example = torch.zeros(1, bundle.height, bundle.width, 3, dtype=torch.uint8, device="cuda")
    precisions = {"fp32": {torch.float32}, "fp16": {torch.float16, torch.float32}}
    if precision not in precisions:
        raise ValueError(f"--via torch-tensorrt supports {sorted(precisions)}, not {precision!r}")
    compiled = torch_tensorrt.compile(
        model.cuda().eval(), ir="dynamo", inputs=[example], enabled_precisions=precisions[precision]
    )
    name = engine_file_name(precision, torch.cuda.get_device_name(0), torch_tensorrt.__version__)
    name = name.replace(".engine", ".torchtrt.ep")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        torch_tensorrt.save(compiled, str(path), inputs=[example])
        add_bundle_file(bundle_dir, path, name)
    return bundle_dir / name
