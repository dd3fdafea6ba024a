"""Model bundle: the folder the runtime loads, and ``bundle.json``, everything it must not guess.

A bundle holds the model file(s) (ONNX, torch checkpoint, TensorRT engines) and ``bundle.json``.
This module is the schema and the reader; the writer is ``nflowjs_export.bundle`` (training side).
On load every field is validated (errors name the field and the fix) and each model file's
SHA-256 is checked before use, so a truncated copy or a swapped file is refused.
Standard library only: the ROS node reads bundles without torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA = "nflowjs-bundle/1"
SCORE_DTYPES = ("float32", "float16")
PRECISIONS = ("fp32", "fp16", "int8")


class BundleError(ValueError):
    """A bundle that the runtime cannot honour; the message names the field and the fix."""


@dataclass
class BundleClass:
    id: int
    name: str
    color: tuple[int, int, int]


@dataclass
class Bundle:
    name: str
    model_file: str  # relative to the bundle folder, usually model.onnx
    height: int  # input size the model runs at (any camera size is resized to it)
    width: int
    classes: list[BundleClass]
    temperature: float
    ood_threshold: float
    drivable_class_ids: list[int]
    unknown_id: int  # label the runtime writes for OOD pixels in outlier-aware segmentation
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    score_dtype: str = "float32"
    precision: str = "fp32"  # of model_file (ONNX); engines carry theirs in their file names
    dynamic_size: bool = False
    opset: int = 18
    checkpoint_sha256: str = ""
    exporter_version: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    # Thresholds chosen on validation data, by name ("fpr1": 1 % of inlier pixels flagged,
    # "fpr5", "tpr95": 95 % of anomaly pixels flagged): {"threshold", "TPR", "FPR", "split"}.
    operating_points: dict[str, dict] = field(default_factory=dict)
    ood_threshold_point: str = ""  # the operating point ood_threshold is ("" = set by hand)
    # Fixed by the export: documented here so readers of bundle.json need no other source.
    input_layout: str = "NHWC uint8 RGB, N = 1"
    normalization: str = "in graph: x / 255, then (x - mean) / std"
    temperature_overridable: bool = False  # the exported graph has T baked in

    def validate(self) -> Bundle:
        checks = [
            ("name", bool(self.name), "a non-empty string"),
            ("height", isinstance(self.height, int) and self.height >= 32, "an integer >= 32"),
            ("width", isinstance(self.width, int) and self.width >= 32, "an integer >= 32"),
            ("classes", 1 < len(self.classes) <= 255, "2 to 255 entries"),
            ("temperature", _positive(self.temperature), "a positive number (paper: 2)"),
            ("ood_threshold", _finite(self.ood_threshold), "a finite number"),
            ("score_dtype", self.score_dtype in SCORE_DTYPES, f"one of {SCORE_DTYPES}"),
            ("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}"),
            ("unknown_id", 0 <= self.unknown_id <= 255, "an integer 0..255"),
            ("mean", len(self.mean) == 3, "three numbers (RGB)"),
            ("std", len(self.std) == 3 and all(_positive(s) for s in self.std), "three > 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise BundleError(
                    f"bundle.json: '{name}' = {getattr(self, name)!r} must be {expected}"
                )
        fixed = Bundle.__dataclass_fields__
        for name in ("input_layout", "normalization", "temperature_overridable"):
            if getattr(self, name) != fixed[name].default:
                raise BundleError(
                    f"bundle.json: '{name}' = {getattr(self, name)!r}, but this runtime "
                    f"supports only {fixed[name].default!r}"
                )
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise BundleError(f"bundle.json: 'classes' ids must be 0..{len(ids) - 1} in order")
        for c in self.classes:
            if len(c.color) != 3 or not all(0 <= v <= 255 for v in c.color):
                raise BundleError(
                    f"bundle.json: class {c.name!r} colour {c.color} must be 3 x 0..255"
                )
        bad = [i for i in self.drivable_class_ids if not 0 <= i < len(self.classes)]
        if bad:
            raise BundleError(f"bundle.json: 'drivable_class_ids' {bad} are not class ids")
        if self.unknown_id < len(self.classes):
            raise BundleError(
                f"bundle.json: 'unknown_id' {self.unknown_id} is a known class's id; "
                f"use {len(self.classes)} or more"
            )
        for point, values in self.operating_points.items():
            if not _finite(values.get("threshold")):
                raise BundleError(
                    f"bundle.json: operating point {point!r} needs a finite 'threshold'"
                )
        if self.ood_threshold_point:
            point = self.operating_points.get(self.ood_threshold_point)
            if point is None:
                raise BundleError(
                    f"bundle.json: 'ood_threshold_point' {self.ood_threshold_point!r} is not one "
                    f"of 'operating_points' {sorted(self.operating_points)}"
                )
            if point["threshold"] != self.ood_threshold:
                raise BundleError(
                    f"bundle.json: 'ood_threshold' {self.ood_threshold} differs from operating "
                    f"point {self.ood_threshold_point!r} ({point['threshold']}); re-export"
                )
        if self.model_file not in self.files:
            raise BundleError(
                f"bundle.json: 'files' has no hash for model_file {self.model_file!r}"
            )
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def _positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_bundle(folder: str | Path, verify_files: bool = True) -> Bundle:
    """Read and validate ``folder/bundle.json``; with ``verify_files``, check every file's hash."""
    folder = Path(folder)
    path = folder / "bundle.json"
    if not path.is_file():
        raise BundleError(
            f"{path} not found: a model bundle is a folder written by `nflowjs export onnx`"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not valid JSON ({error}); re-export the bundle") from error
    if raw.get("schema", SCHEMA) != SCHEMA:
        raise BundleError(f"{path}: schema {raw.get('schema')!r}, this runtime reads {SCHEMA!r}")
    raw.pop("schema", None)
    known = set(Bundle.__dataclass_fields__)
    missing = sorted(
        name
        for name, f in Bundle.__dataclass_fields__.items()
        if name not in raw and f.default is f.default_factory  # both MISSING: required
    )
    if missing:
        raise BundleError(f"{path}: required field(s) {missing} missing")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BundleError(f"{path}: unknown field(s) {unknown}; written by a newer exporter?")
    try:
        raw["classes"] = [
            BundleClass(c["id"], c["name"], tuple(c["color"])) for c in raw["classes"]
        ]
        raw["mean"], raw["std"] = tuple(raw["mean"]), tuple(raw["std"])
        bundle = Bundle(**raw).validate()
    except (TypeError, KeyError) as error:
        raise BundleError(f"{path}: malformed field ({error!r})") from error
    if verify_files:
        for name, digest in bundle.files.items():
            file = folder / name
            if not file.is_file():
                raise BundleError(f"{folder}: {name} listed in bundle.json is missing")
            if sha256_file(file) != digest:
                raise BundleError(
                    f"{file} does not match its SHA-256 in bundle.json (truncated or replaced "
                    "copy); copy the bundle again or re-export it"
                )
    return bundle
