"""TensorRT engines: their file names, and building one from a bundle's ONNX graph.

Standard TensorRT 10 Python API, kept small on purpose: no machine of ours has the builder (its
wheel downloads from a host we cannot reach), so this runs only where TensorRT is installed: the
Docker runtime image builds the engine on first start, ``nflowjs export tensorrt`` adds one to a
bundle. Everything around it (names, arguments, the caching) is tested on CPU.
"""

from __future__ import annotations

import re
from pathlib import Path

INSTALL_HINT = (
    "TensorRT is not installed: install NVIDIA's `tensorrt` Python package (pip install "
    "tensorrt, CUDA GPU required) or use the Docker runtime image"
)
PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODEL = "model.int8.onnx"  # the Q/DQ graph INT8 engines are built from
# A dynamic engine's largest frame, per side, unless told: TensorRT reserves activation memory
# for the profile's max (a 19-class fp32 tensor is 0.3 GB at 2048x2048, 1.2 GB at 4096x4096).
DEFAULT_MAX_SIDE = 2048
GRAPH_SIDES = (64, 4096)  # what a dynamic bundle's ONNX graph accepts per side


def profile_max(
    input_size: tuple[int, int], max_input_size: tuple[int, int] | None = None
) -> tuple[int, int]:
    """The largest (H, W) a dynamic engine takes: ``max_input_size``, else 2048x2048 (or the
    bundle's size where larger); never below the bundle's size nor beyond the graph's 4096."""
    if max_input_size is None:
        return (max(input_size[0], DEFAULT_MAX_SIDE), max(input_size[1], DEFAULT_MAX_SIDE))
    high = GRAPH_SIDES[1]
    if not all(i <= m <= high for i, m in zip(input_size, max_input_size, strict=True)):
        raise ValueError(
            f"max input size {max_input_size[0]}x{max_input_size[1]}: must be at least the "
            f"bundle's {input_size[0]}x{input_size[1]} and at most {high} per side"
        )
    return tuple(max_input_size)


def onnx_file_for(precision: str, model_file: str) -> str:
    """The bundle's graph an engine of ``precision`` is built from."""
    return INT8_MODEL if precision == "int8" else model_file


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a CUDA GPU) is not available here."""


def engine_file_name(precision: str, gpu_name: str, tensorrt_version: str) -> str:
    """``model.fp16.<gpu>.trt10.3.engine``: an engine runs only where it was built."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    version = ".".join(tensorrt_version.split(".")[:2])
    return f"model.{precision}.{gpu}.trt{version}.engine"


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailable(INSTALL_HINT) from error
    return tensorrt


def keep_head_in_fp32(network, trt) -> list[str]:
    """Pin the scoring head (softmax, JSD, threshold) and the logits feeding it to fp32.

    The head is every layer downstream of the logits, the input of the graph's one arg-max (an
    ONNX ArgMax is a TopK layer in TensorRT); the layer producing the logits (the last
    upsampling) and constants the head reads (temperature, threshold, log K) are candidates too,
    so nothing in the score's path is rounded to fp16. Layers come in topological order, so one
    pass finds them.

    Only float layers are pinned: TensorRT refuses fp32 precision on layers with INT32 / bool
    tensors under OBEY_PRECISION_CONSTRAINTS (NVIDIA/TensorRT#3177), so a layer is pinned only
    when all its inputs and outputs are float (a TopK when its input is: its indices are
    int32; shape tensors, such as a dynamic Resize's output size, are parameters, not data).
    Cast layers are left alone (their output type is what they do), and so are the types of
    network outputs (the bundle's contract: uint8 labels and mask, score_dtype score). The
    threshold's comparison (bool out) is not pinned: it reads the pinned fp32 score.
    Returns the pinned layers' names.
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    arg_max = [layer for layer in layers if layer.type == trt.LayerType.TOPK]
    if len(arg_max) != 1:
        raise RuntimeError(
            f"expected one arg-max (TopK) layer in the graph, found {len(arg_max)}: is this a "
            "bundle's model.onnx (nflowjs export onnx)?"
        )
    producer = {
        layer.get_output(j).name: layer for layer in layers for j in range(layer.num_outputs)
    }
    logits = arg_max[0].get_input(0).name
    head, candidates = {logits}, {}
    if logits in producer:
        candidates[producer[logits].name] = producer[logits]
    for layer in layers:
        inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
        if not any(t is not None and t.name in head for t in inputs):
            continue
        candidates[layer.name] = layer
        head |= {layer.get_output(j).name for j in range(layer.num_outputs)}
        for t in inputs:
            source = producer.get(t.name) if t is not None else None
            if source is not None and source.type == trt.LayerType.CONSTANT:
                candidates[source.name] = source
    pinned = []
    for layer in candidates.values():
        if layer.type == trt.LayerType.CAST or not _all_float(layer, trt):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            output = layer.get_output(j)
            if not output.is_network_output and _is_float(output, trt):
                layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def _is_float(tensor, trt) -> bool:
    return tensor.dtype in (trt.float16, trt.float32)


def _all_float(layer, trt) -> bool:
    """Whether fp32 precision can be asked of ``layer``: no integer or bool tensors in it."""
    inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
    inputs = [t for t in inputs if t is not None]  # optional inputs left empty
    if layer.type == trt.LayerType.TOPK:  # values and int32 indices out: its input decides
        return bool(inputs) and _is_float(inputs[0], trt)
    data = [t for t in inputs if not getattr(t, "is_shape_tensor", False)]
    outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
    return all(_is_float(t, trt) for t in data + outputs)


def build_serialized_engine(
    onnx_file: Path,
    precision: str = "fp16",
    input_size: tuple[int, int] | None = None,
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
    max_input_size: tuple[int, int] | None = None,
) -> bytes:
    """Parse ``onnx_file`` and build an engine; ``input_size`` (H, W) adds a dynamic profile.

    The profile runs from 64x64 to ``max_input_size`` (default: ``profile_max``), optimised
    for ``input_size``; a frame beyond it is refused at run time, naming the profile.

    INT8 is explicit quantisation: ``onnx_file`` must be the Q/DQ graph (``model.int8.onnx``,
    from ``nflowjs export int8``); its scales are in the graph, so no calibrator runs here.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use fp32, fp16 or int8")
    largest = profile_max(input_size, max_input_size) if input_size is not None else None
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_file).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_file}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        # fp16 is fine for the network and the arg-max, not for the score: the head's formula in
        # fp16 is off by up to 2.7e-3 (tests/test_head_precision.py), beyond the 1e-3 contract.
        keep_head_in_fp32(network, trt)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if precision == "int8":  # TensorRT 10 runs Q/DQ layers in INT8 only with this flag set
        config.set_flag(trt.BuilderFlag.INT8)
    if input_size is not None:
        profile = builder.create_optimization_profile()
        # from the graph's smallest size to `largest`, optimised for the bundle's
        low = GRAPH_SIDES[0]
        profile.set_shape("rgb", (1, low, low, 3), (1, *input_size, 3), (1, *largest, 3))
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(
        timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    )
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine; see the log above")
    if timing_cache:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)
