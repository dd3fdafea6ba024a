"""``nflowjs export int8``: explicit INT8 quantisation (Q/DQ nodes) of a bundle's ONNX graph.

NVIDIA's ``nvidia-modelopt`` ONNX post-training quantisation, calibrated on camera frames, runs
on the CPU (ONNX Runtime collects the activation histograms) and writes ``model.int8.onnx``
into the bundle: the graph with QuantizeLinear / DequantizeLinear pairs around the network's
convolutions, everything else fp32. TensorRT builds its INT8 engine from it (explicit
quantisation: the scales are in the graph, no calibrator at build time), and ONNX Runtime runs
it as it is. The scoring head (everything from the logits on) and the upsampling that produces
the logits are kept out of quantisation: modelopt puts a Q/DQ pair on every input of a
quantisable op, so a quantised Resize would round the classifier's output (the logits) to 8 bits.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
from PIL import Image
from tqdm import tqdm

from nflowjs.errors import MissingDependency
from nflowjs_export.bundle import add_bundle_file
from nflowjs_perception.backends import INT8_MODEL
from nflowjs_perception.bundle import load_bundle

MODELOPT_HINT = (
    "INT8 quantisation needs NVIDIA's nvidia-modelopt and its ONNX helpers: "
    "pip install '.[int8]' in the repository"
)


class CalibrationImages:
    """uint8 NHWC frames of a folder's images resized to the bundle size (INT8 calibration)."""

    SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

    def __init__(self, folder: str | Path, height: int, width: int, limit: int = 64):
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in self.SUFFIXES)
        if not files:
            raise FileNotFoundError(
                f"no calibration images ({', '.join(self.SUFFIXES)}) under {folder}"
            )
        # spread over the folder (a drive's frames are ordered in time), not its first seconds
        step = max(1, len(files) // limit)
        self.files = files[::step][:limit]
        self.height, self.width = height, width

    def __len__(self) -> int:
        return len(self.files)

    def load(self) -> np.ndarray:
        """All frames as one (N, H, W, 3) uint8 array, the graph's input layout."""
        frames = [self._load(p) for p in tqdm(self.files, desc="calibration frames")]
        return np.ascontiguousarray(np.stack(frames))

    def _load(self, path: Path) -> np.ndarray:
        with Image.open(path) as image:
            resized = image.convert("RGB").resize((self.width, self.height), Image.BILINEAR)
            return np.asarray(resized, dtype=np.uint8)


def head_node_names(model: onnx.ModelProto) -> list[str]:
    """Nodes from the logits on (the input of the graph's one ArgMax): kept in fp32."""
    arg_max = [n for n in model.graph.node if n.op_type == "ArgMax"]
    if len(arg_max) != 1:
        raise ValueError(f"expected one ArgMax in a bundle's graph, found {len(arg_max)}")
    head_tensors, names = {arg_max[0].input[0]}, []
    for node in model.graph.node:  # ONNX nodes are topologically sorted
        if any(i in head_tensors for i in node.input):
            names.append(node.name)
            head_tensors.update(node.output)
    return names


# ops between the classifier and the logits that only move or resample values
RESAMPLING_OPS = ("Resize", "Upsample", "Reshape", "Transpose", "Identity", "Cast")


def logits_producer_names(model: onnx.ModelProto) -> list[str]:
    """The node(s) producing the logits: the upsampling (and any reshaping) after the classifier.

    Walks up from the arg-max's input through resampling ops, stopping at the classifier (a Conv
    or any other compute node, which stays quantisable on its inputs: its output is float once
    nothing downstream of it is quantised).
    """
    arg_max = [n for n in model.graph.node if n.op_type == "ArgMax"]
    if len(arg_max) != 1:
        raise ValueError(f"expected one ArgMax in a bundle's graph, found {len(arg_max)}")
    producer = {o: n for n in model.graph.node for o in n.output}
    names, tensor = [], arg_max[0].input[0]
    while (node := producer.get(tensor)) is not None and node.op_type in RESAMPLING_OPS:
        names.append(node.name)
        tensor = node.input[0]
    return names


def fp32_node_names(model: onnx.ModelProto) -> list[str]:
    """What INT8 quantisation leaves alone: the logits' producers and the head."""
    return logits_producer_names(model) + head_node_names(model)


def quantize_bundle(
    bundle_dir: str | Path,
    calibration_dir: str | Path,
    max_images: int = 64,
    method: str = "entropy",
) -> Path:
    """Write ``model.int8.onnx`` (Q/DQ) into the bundle, calibrated on ``calibration_dir``."""
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)  # a bad bundle is reported before anything runs
    if method not in ("entropy", "max"):
        raise ValueError(f"calibration method {method!r}: use entropy or max")
    frames = CalibrationImages(calibration_dir, bundle.height, bundle.width, max_images)
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as error:
        raise MissingDependency(f"{MODELOPT_HINT} ({error})") from error

    source = bundle_dir / bundle.model_file
    keep = fp32_node_names(onnx.load(str(source), load_external_data=False))
    data = frames.load()
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / INT8_MODEL
        quantize(
            str(source),
            quantize_mode="int8",
            calibration_data={"rgb": data},
            calibration_method=method,
            calibration_eps=["cpu"],
            calibration_shapes=f"rgb:1x{bundle.height}x{bundle.width}x3",
            nodes_to_exclude=[f"^{re.escape(name)}$" for name in keep],
            high_precision_dtype="fp32",  # TensorRT picks fp16 where allowed; the head stays fp32
            output_path=str(output),
            log_level="WARNING",
        )
        check_quantized(output, data[:1])
        add_bundle_file(bundle_dir, output, INT8_MODEL)
    return bundle_dir / INT8_MODEL


def check_quantized(path: Path, frame: np.ndarray) -> None:
    """A valid graph with Q/DQ pairs that ONNX Runtime runs, with the bundle's outputs."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    if "QuantizeLinear" not in ops or "DequantizeLinear" not in ops:
        raise ValueError(f"{path.name} has no Q/DQ nodes: nothing was quantised")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, score, mask = session.run(None, {"rgb": frame})
    if labels.dtype != np.uint8 or mask.dtype != np.uint8 or not np.isfinite(score).all():
        raise ValueError(f"{path.name} does not keep the bundle's output contract")
