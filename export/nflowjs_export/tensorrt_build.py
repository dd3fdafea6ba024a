"""``nflowjs export tensorrt``: a bundle's ONNX graph -> TensorRT engine added to the bundle.

The builder itself is the runtime's (``nflowjs_perception.tensorrt_engine``, also used by the
Docker image to build on first start); this records the engine in the bundle. INT8 engines are
built from the bundle's Q/DQ graph (``nflowjs export int8``, explicit quantisation). Only the
``gpu``-marked test runs a build; everything around it is tested on CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from nflowjs.errors import MissingDependency
from nflowjs_export.bundle import add_bundle_file
from nflowjs_perception.backends import TORCH_PROGRAM
from nflowjs_perception.bundle import load_bundle
from nflowjs_perception.cuda_buffers import CudaRuntime
from nflowjs_perception.tensorrt_engine import (
    INSTALL_HINT,
    INT8_MODEL,
    PRECISIONS,
    build_serialized_engine,
    engine_file_name,
    import_tensorrt,
    onnx_file_for,
)
from nflowjs_perception.tensorrt_engine import TensorRTUnavailable as RuntimeUnavailable

__all__ = ["build_engine", "build_with_torch_tensorrt", "engine_file_name"]


class TensorRTUnavailable(MissingDependency, RuntimeUnavailable):
    """TensorRT (or torch-tensorrt) is not importable here."""


def build_engine(
    bundle_dir: str | Path,
    precision: str = "fp16",
    workspace_gib: float = 4.0,
    timing_cache: str | Path | None = None,
    max_input_size: tuple[int, int] | None = None,
) -> Path:
    """Build an engine for this GPU from the bundle's ONNX graph and add it to the bundle.

    A dynamic bundle's engine takes frames up to ``max_input_size`` (H, W; default 2048x2048,
    or the bundle's size where larger): TensorRT sizes its memory for the largest.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use fp32, fp16 or int8")
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)  # a bad bundle is reported before TensorRT is needed
    source = onnx_file_for(precision, bundle.model_file)
    if source not in bundle.files:
        raise ValueError(
            f"INT8 engines are built from the bundle's Q/DQ graph and {bundle_dir} has no "
            f"{INT8_MODEL}: run `nflowjs export int8 --bundle {bundle_dir} --calibration-images "
            "DIR` first"
        )
    try:
        trt = import_tensorrt()
    except RuntimeUnavailable as error:
        raise TensorRTUnavailable(f"{INSTALL_HINT}, then run this again") from error
    gpu = CudaRuntime().device_name()  # the name the runtime looks the engine up by
    serialized = build_serialized_engine(
        bundle_dir / source,
        precision,
        (bundle.height, bundle.width) if bundle.dynamic_size else None,
        workspace_gib,
        Path(timing_cache) if timing_cache else None,
        max_input_size,
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
