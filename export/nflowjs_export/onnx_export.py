"""``nflowjs export onnx``: checkpoint -> model bundle with one ONNX graph (camera pixels in).

The graph takes ``(1, H, W, 3)`` uint8 RGB and returns labels uint8, the NFlowJS score and the
OOD mask uint8 (no int64 outputs: TensorRT users hit that). It is exported with the dynamo
exporter (the TorchScript one refuses the SPP's adaptive pooling at most sizes), checked with
``onnx.checker`` and compared with the torch model before the bundle is written.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import torch

import nflowjs_export
from nflowjs.checkpoint import build_segmenter, load_checkpoint
from nflowjs.head import OutlierAwareSegmenter
from nflowjs_export.bundle import write_bundle
from nflowjs_export.frame_model import CameraFrameModel, ResizingSegmenter
from nflowjs_export.palettes import DRIVABLE_NAMES, class_colors
from nflowjs_perception.backends import TORCH_PROGRAM, open_backend
from nflowjs_perception.bundle import Bundle, BundleClass, sha256_file

OUTPUTS = ("labels", "score", "ood_mask")


def frame_model(
    checkpoint: dict,
    temperature: float,
    threshold: float,
    score_dtype: str,
    fixed_size: tuple[int, int] | None = None,
) -> CameraFrameModel:
    """The exported graph; with ``fixed_size`` it takes any input size (``ResizingSegmenter``)."""
    segmenter = build_segmenter(checkpoint).eval()
    if fixed_size is not None:
        segmenter = ResizingSegmenter(segmenter, fixed_size)
    head = OutlierAwareSegmenter(segmenter, len(checkpoint["classes"]), temperature, threshold)
    return CameraFrameModel(head, getattr(torch, score_dtype)).eval()


def export_onnx(
    checkpoint: str | Path,
    out_dir: str | Path,
    height: int,
    width: int,
    threshold: float,
    temperature: float = 2.0,
    score_dtype: str = "float32",
    dynamic: bool = False,
    drivable: list[str] | None = None,
    name: str | None = None,
    opset: int = 18,
    torch_model: bool = True,
    operating_points: dict[str, dict] | None = None,
    threshold_point: str = "",
) -> Path:
    """Export and write a bundle folder; returns its path.

    ``operating_points`` (name -> {"threshold", "TPR", "FPR", "split"}) go into bundle.json;
    ``threshold_point`` names the one ``threshold`` is.

    ``torch_model=False`` leaves out ``model.pt2`` (the torch backend's ``torch.export``
    program): a smaller bundle for ONNX Runtime and TensorRT only, like the demo bundle in the
    repository.
    """
    payload = load_checkpoint(checkpoint)
    classes = list(payload["classes"])
    drivable = (
        list(drivable) if drivable is not None else [c for c in classes if c in DRIVABLE_NAMES]
    )
    unknown = sorted(set(drivable) - set(classes))
    if unknown:
        raise ValueError(f"drivable classes {unknown} are not among the model's classes {classes}")
    if score_dtype not in ("float32", "float16"):
        raise ValueError(f"score dtype {score_dtype!r}: use float32 or float16")
    model = frame_model(
        payload, temperature, threshold, score_dtype, (height, width) if dynamic else None
    )
    example = torch.zeros(1, height, width, 3, dtype=torch.uint8)

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        dynamic_shapes = None
        if dynamic:
            side = {"min": 64, "max": 4096}
            height_dim = torch.export.Dim("height", **side)
            dynamic_shapes = ({1: height_dim, 2: torch.export.Dim("width", **side)},)
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["rgb"],
            output_names=list(OUTPUTS),
            dynamic_shapes=dynamic_shapes,
        )
        program.save(str(onnx_path))
        check_onnx(onnx_path)
        _check_against_torch(onnx_path, model, height, width)
        bundle = Bundle(
            name=name or Path(out_dir).name,
            model_file="model.onnx",
            height=height,
            width=width,
            classes=[
                BundleClass(i, c, color)
                for i, (c, color) in enumerate(zip(classes, class_colors(classes), strict=True))
            ],
            temperature=temperature,
            ood_threshold=threshold,
            drivable_class_ids=[classes.index(c) for c in drivable],
            unknown_id=len(classes),
            mean=tuple(payload["model_config"]["mean"]),
            std=tuple(payload["model_config"]["std"]),
            score_dtype=score_dtype,
            dynamic_size=dynamic,
            opset=opset,
            checkpoint_sha256=sha256_file(Path(checkpoint)),
            exporter_version=nflowjs_export.__version__,
            operating_points=operating_points or {},
            ood_threshold_point=threshold_point,
        )
        files = {"model.onnx": onnx_path}
        if torch_model:
            files[TORCH_PROGRAM] = save_torch_program(
                model, example, dynamic_shapes, Path(tmp) / TORCH_PROGRAM
            )
        return write_bundle(out_dir, bundle, files)


def save_torch_program(model: CameraFrameModel, example, dynamic_shapes, path: Path) -> Path:
    """The same graph as a ``torch.export`` program: the torch backend runs it without this
    repository's training code (``torch.export.load`` needs only torch). Its score is always
    float32, so it is also the fp32 reference of parity checks; the backend casts to the bundle's
    ``score_dtype``."""
    model = copy.copy(model)  # shares the modules; only the score dtype differs
    model.score_dtype = torch.float32
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
    torch.export.save(program, str(path))
    return path


def check_onnx(path: Path) -> None:
    """onnx.checker, and the output contract: uint8 labels/mask, float score, no int64."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    types = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    expected = {"labels": onnx.TensorProto.UINT8, "ood_mask": onnx.TensorProto.UINT8}
    for output, elem in expected.items():
        if types.get(output) != elem:
            raise ValueError(
                f"exported output {output!r} has ONNX type {types.get(output)}, not uint8"
            )
    if onnx.TensorProto.INT64 in types.values():
        raise ValueError(f"exported graph has int64 outputs: {types}")


def _check_against_torch(onnx_path: Path, model: CameraFrameModel, height: int, width: int):
    """Refuse to write a bundle whose graph disagrees with torch on a smooth random frame."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    frame = np.ascontiguousarray(coarse.repeat(16, 0).repeat(16, 1)[:height, :width])[None]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    labels, score, _ = session.run(None, {"rgb": frame})
    with torch.inference_mode():
        ref_labels, ref_score, _ = model(torch.from_numpy(frame))
    agreement = float((labels == ref_labels.numpy()).mean())
    error = float(np.abs(score.astype(np.float32) - ref_score.float().numpy()).max())
    tolerance = 1e-3 if model.score_dtype == torch.float32 else 2e-3
    if agreement < 0.999 or error > tolerance:
        raise ValueError(
            f"the exported graph disagrees with torch (labels {100 * agreement:.2f} % equal, "
            f"score error {error:.1e}); the bundle was not written"
        )


def reference_model(bundle_dir: Path, bundle) -> torch.nn.Module:
    """The bundle's graph in torch fp32 on the CPU (its ``model.pt2``, as exported): what every
    backend is compared with."""
    path = Path(bundle_dir) / TORCH_PROGRAM
    if not path.is_file():
        raise FileNotFoundError(
            f"{bundle_dir} has no {TORCH_PROGRAM}, the torch reference for parity: export the "
            "bundle without --no-torch-model"
        )
    return torch.export.load(str(path)).module()


def onnx_parity(bundle_dir: str | Path, images: list[np.ndarray]) -> dict:
    """ONNX Runtime vs torch fp32 on HxWx3 uint8 images (at the bundle's size if static)."""
    from nflowjs_export.bench import parity_against_torch

    return parity_against_torch(open_backend(bundle_dir, "onnxruntime"), Path(bundle_dir), images)
