"""The node's ROS parameters: names, defaults, descriptions, ranges, and their validation.

One table, so ``config/road.yaml``, docs/ros-node.md and the launch file can be checked against it.
Ranges go into the ParameterDescriptor (ROS then refuses out-of-range values itself, and
``ros2 param describe`` shows them); what a range cannot say is checked in ``check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from nflowjs_perception.backends import BACKEND_NAMES


class StartupError(RuntimeError):
    """A configuration the node cannot start with; the message says what to change."""


@dataclass(frozen=True)
class Spec:
    name: str
    default: bool | int | float | str
    description: str
    dynamic: bool = False  # may change while the node runs
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(
            name=self.name, description=self.description, read_only=not self.dynamic
        )
        if self.choices:
            descriptor.additional_constraints = f"one of: {', '.join(map(repr, self.choices))}"
        if type(self.default) is float and self.low is not None:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=self.low, to_value=self.high, step=0.0)
            ]
        if type(self.default) is int and self.low is not None:
            descriptor.integer_range = [
                IntegerRange(from_value=int(self.low), to_value=int(self.high), step=1)
            ]
        return descriptor


BUNDLE_THRESHOLD = -1.0  # ood_threshold's "use the bundle's" value
# Per user, like other caches; an engine is specific to the GPU and TensorRT version (its name)
ENGINE_CACHE_DIR = "~/.cache/nflowjs_perception/engines"

SPECS = (
    Spec(
        "autostart",
        True,
        "configure and activate at start-up; false: wait for the lifecycle services",
    ),
    Spec("model", "", "model bundle folder (bundle.json + model files, `nflowjs export onnx`)"),
    Spec(
        "backend",
        "auto",
        "inference backend; auto: TensorRT if usable, else ONNX Runtime",
        choices=BACKEND_NAMES,
    ),
    Spec(
        "device",
        "",
        "'' for the backend's default (TensorRT: cuda, others: cpu), cpu or cuda",
        choices=("", "cpu", "cuda"),
    ),
    Spec(
        "engine_cache_dir",
        ENGINE_CACHE_DIR,
        "folder for TensorRT engines built on this machine ('~' expanded; '' none)",
    ),
    Spec(
        "build_engine_if_missing",
        True,  # the first start on a GPU builds the engine (minutes), later starts load it
        "TensorRT: build an fp16 engine into engine_cache_dir when none fits this GPU",
    ),
    Spec(
        "image_transport",
        "raw",
        "raw: subscribe `image` (sensor_msgs/Image); compressed: `image/compressed` (JPEG/PNG)",
        choices=("raw", "compressed"),
    ),
    Spec("reliable_input", False, "subscribe with reliable QoS instead of sensor-data best effort"),
    Spec(
        "operating_point",
        "",
        "a threshold from bundle.json's operating_points, chosen on val data: fpr1 (1 % of "
        "inlier pixels flagged), fpr5 or tpr95 (95 % of anomaly pixels); '' the bundle's default",
        dynamic=True,
    ),
    Spec(
        "ood_threshold",
        BUNDLE_THRESHOLD,
        "OOD score threshold in [0, 1] (pixels at or above it are anomalous), overrides "
        "operating_point; -1: use operating_point",
        dynamic=True,
        low=-1.0,
        high=1.0,
    ),
    Spec(
        "temperature",
        0.0,
        "softmax temperature; 0: the bundle's (only bundles that allow it accept another)",
        low=0.0,
        high=100.0,
    ),
    Spec(
        "overlay_opacity",
        0.5,
        "weight of the class colours in ~/overlay",
        dynamic=True,
        low=0.0,
        high=1.0,
    ),
    Spec(
        "min_obstacle_area",
        100,
        "obstacle regions smaller than this many pixels (input resolution) are dropped",
        dynamic=True,
        low=0,
        high=100_000_000,
    ),
    Spec(
        "heatmap_encoding",
        "32FC1",
        "~/ood_heatmap as 32FC1 (the score), mono8 (score x 255) or 16UC1 (score x 65535)",
        dynamic=True,
        choices=("32FC1", "mono8", "16UC1"),
    ),
    Spec(
        "max_drop_rate",
        0.2,
        "diagnostics WARN when more than this fraction of the frames received since the last "
        "report were replaced before processing (the model is slower than the camera)",
        dynamic=True,
        low=0.0,
        high=1.0,
    ),
    Spec(
        "latency_budget_ms",
        54.0,
        "diagnostics WARN when the end-to-end p99 (callback to last output) exceeds this",
        dynamic=True,
        low=1.0,
        high=60_000.0,
    ),
    Spec(
        "input_timeout",
        5.0,
        "seconds without an input frame (while active) before a WARN and one log line",
        dynamic=True,
        low=0.1,
        high=3600.0,
    ),
    Spec("diagnostics_period", 1.0, "seconds between /diagnostics messages", low=0.1, high=60.0),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def check(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = SPEC_BY_NAME[name]
    if spec.choices and value not in spec.choices:
        return f"{name} = {value!r}: choose one of {', '.join(map(repr, spec.choices))}"
    if name == "ood_threshold" and value != BUNDLE_THRESHOLD and not 0.0 <= value <= 1.0:
        return f"ood_threshold = {value}: use a score in [0, 1], or -1 for the bundle's"
    if name == "model":
        if not value:
            return "model is empty: set it to a bundle folder (model:=/path/to/bundle)"
        if not Path(value).is_dir():
            return f"model = {value!r} is not a folder; give the bundle folder's path"
    if (
        name == "engine_cache_dir"
        and value
        and (cache := Path(value).expanduser()).exists()
        and not cache.is_dir()
    ):
        return f"engine_cache_dir = {value!r} exists and is not a folder"
    return None


def declare(node) -> dict:
    """Declare every parameter on ``node`` and return their values; StartupError if one is bad."""
    try:
        declared = node.declare_parameters(
            "", [(spec.name, spec.default, spec.descriptor()) for spec in SPECS]
        )
    except Exception as error:  # rclpy's own range and type checks at declaration
        raise StartupError(f"bad parameter: {error}") from error
    values = {p.name: p.value for p in declared}
    for name, value in values.items():
        reason = check(name, value)
        if reason:
            raise StartupError(reason)
    return values
