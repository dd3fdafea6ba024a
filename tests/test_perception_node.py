"""perception_node as a real process from the colcon install, over real Fast DDS.

The test process publishes camera frames and subscribes to every output; the node runs the
shipped CamVid-OOD model (exported at 180x240) on ONNX Runtime.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ros_support import NodeProcess, camvid_frames, image_message, spin_until

OUTPUTS = {
    "segmentation": "mono8",
    "ood_heatmap": "32FC1",
    "obstacle_mask": "mono8",
    "overlay": "rgb8",
}
BEST_EFFORT = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
RELIABLE = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
UNKNOWN = 9  # CamVid-OOD: 9 inlier classes (0..8), so OOD pixels are labelled 9


class Listener:
    """A test node: publishers of camera frames, subscribers of every node output."""

    def __init__(self, name: str, outputs_under: str = "/perception_node"):
        self.node = rclpy.create_node(name)
        self.received: dict[str, dict[int, Image]] = {output: {} for output in OUTPUTS}
        self.diagnostics: list[DiagnosticArray] = []
        for output in OUTPUTS:
            self.node.create_subscription(
                Image,
                f"{outputs_under}/{output}",
                lambda msg, output=output: self.received[output].__setitem__(stamp(msg), msg),
                RELIABLE,
            )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.camera_info: dict[int, CameraInfo] = {}
        self.node.create_subscription(
            CameraInfo,
            f"{outputs_under}/camera_info",
            lambda msg: self.camera_info.__setitem__(stamp(msg), msg),
            RELIABLE,
        )
        self.stamp_ns = time.time_ns()

    def next_stamp(self) -> int:
        self.stamp_ns += 1_000_000
        return self.stamp_ns

    def roundtrip(self, publisher, msg, outputs=tuple(OUTPUTS), timeout=30.0) -> dict:
        """Publish ``msg`` (again every 0.5 s: discovery may lose the first) until every output
        with its stamp has arrived; returns them by output name."""
        key = stamp(msg)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            publisher.publish(msg)
            if spin_until(self.node, lambda: all(key in self.received[o] for o in outputs), 0.5):
                return {o: self.received[o][key] for o in outputs}
        missing = [o for o in outputs if key not in self.received[o]]
        raise AssertionError(
            f"no {missing} for the frame stamped {key} within {timeout} s; "
            f"{self.where_it_stopped(publisher)}"
        )

    def where_it_stopped(self, publisher) -> str:
        """Discovery (who matched whom) and the node's own counters, for a failure message."""
        matched = {s.topic_name: s.get_publisher_count() for s in self.node.subscriptions}
        counters = {}  # the latest report of each node on the domain
        for status in (s for array in self.diagnostics for s in array.status):
            values = {kv.key: kv.value for kv in status.values}
            counters[status.name] = {k: values.get(k) for k in ("received", "processed", "bad")}
        return (
            f"{publisher.topic_name} matched {publisher.get_subscription_count()} reader(s); "
            f"writers matched per subscription: {matched}; node diagnostics: {counters or None}"
        )


def stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def node(ros, ros_install, camvid_bundle, tmp_path_factory):
    process = start_node(
        ros_install,
        camvid_bundle,
        tmp_path_factory.mktemp("node") / "node.log",
        "-p", "diagnostics_period:=0.5",
        "-r", "image:=/test/image",
    )  # fmt: skip
    try:
        assert process.wait_for_output("on onnxruntime"), process.output()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def listener(ros):
    listener = Listener("test_listener")
    yield listener
    listener.node.destroy_node()


def start_node(ros_install, bundle, log, *ros_args: str) -> NodeProcess:
    """perception_node on ONNX Runtime with ``bundle``, plus ``ros_args``."""
    return NodeProcess(
        ros_install, log, "-p", f"model:={bundle}", "-p", "backend:=onnxruntime", *ros_args
    )


def check_outputs(outputs: dict, msg: Image) -> None:
    for name, out in outputs.items():
        assert out.header.frame_id == msg.header.frame_id, name
        assert stamp(out) == stamp(msg), name
        assert (out.height, out.width) == (msg.height, msg.width), name
        assert out.encoding == OUTPUTS[name], name
    labels = np.frombuffer(outputs["segmentation"].data, np.uint8)
    assert labels.max() <= UNKNOWN
    heat = np.frombuffer(outputs["ood_heatmap"].data, np.float32)
    assert heat.size == msg.height * msg.width
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    assert set(np.unique(np.frombuffer(outputs["obstacle_mask"].data, np.uint8))) <= {0, 255}
    assert len(outputs["overlay"].data) == msg.height * msg.width * 3


def truncated_onnx_bundle(bundle: Path, dest: Path) -> Path:
    """A copy of ``bundle`` whose model.onnx is cut short, its hash updated: only ONNX Runtime
    can tell it is broken."""
    import json
    import shutil

    from nflowjs_perception.bundle import sha256_file

    copy = shutil.copytree(bundle, dest)
    onnx = copy / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:1000])
    meta = json.loads((copy / "bundle.json").read_text())
    meta["files"]["model.onnx"] = sha256_file(onnx)
    (copy / "bundle.json").write_text(json.dumps(meta))
    return copy


def test_camvid_frames_give_every_output_with_the_input_header(node, listener):
    publisher = listener.node.create_publisher(Image, "/test/image", BEST_EFFORT)
    for frame in camvid_frames(2):
        msg = image_message(frame, "rgb8", listener.next_stamp(), "camera_optical_frame")
        outputs = listener.roundtrip(publisher, msg)
        check_outputs(outputs, msg)
        # OOD pixels are relabelled unknown exactly where the heatmap exceeds the threshold
        labels = np.frombuffer(outputs["segmentation"].data, np.uint8)
        heat = np.frombuffer(outputs["ood_heatmap"].data, np.float32)
        assert np.array_equal(labels == UNKNOWN, heat >= 0.7)


@pytest.mark.parametrize(
    ("encoding", "size"),
    [("bgr8", (1024, 2048)), ("rgba8", (720, 1280)), ("bgra8", (480, 640)), ("mono8", (600, 800))],
)
def test_any_size_and_encoding_maps_back_to_the_input_size(node, listener, encoding, size):
    publisher = listener.node.create_publisher(Image, "/test/image", BEST_EFFORT)
    channels = {"bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[encoding]
    frame = cv2.resize(camvid_frames(1)[0], size[::-1])
    if channels == 1:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    elif channels == 4:
        frame = np.dstack([frame, np.full(size, 255, np.uint8)])
    msg = image_message(np.ascontiguousarray(frame), encoding, listener.next_stamp(), "cam")
    check_outputs(listener.roundtrip(publisher, msg), msg)


def camera_frames(frame: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """encoding -> (the message's pixels, OpenCV's RGB for them, big-endian) as cameras send."""
    h, w = frame.shape[:2]
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    frames = {}
    # a Bayer mosaic keeps, at each pixel, the colour its 2x2 pattern names
    for pattern, opencv_code in (
        ("rggb", cv2.COLOR_BayerBG2RGB),  # OpenCV names the pattern by its second row
        ("bggr", cv2.COLOR_BayerRG2RGB),
        ("gbrg", cv2.COLOR_BayerGR2RGB),
        ("grbg", cv2.COLOR_BayerGB2RGB),
    ):
        mosaic = np.empty((h, w), np.uint8)
        for (dy, dx), colour in zip(((0, 0), (0, 1), (1, 0), (1, 1)), pattern, strict=True):
            mosaic[dy::2, dx::2] = frame[dy::2, dx::2, "rgb".index(colour)]
        frames[f"bayer_{pattern}8"] = (mosaic, cv2.cvtColor(mosaic, opencv_code), False)
    for encoding, to_yuv, to_rgb in (
        ("yuv422", cv2.COLOR_RGB2YUV_UYVY, cv2.COLOR_YUV2RGB_UYVY),
        ("yuv422_yuy2", cv2.COLOR_RGB2YUV_YUY2, cv2.COLOR_YUV2RGB_YUY2),
    ):
        packed = cv2.cvtColor(frame, to_yuv)
        frames[encoding] = (packed, cv2.cvtColor(packed, to_rgb), False)
    # 16 bit with the low byte set (below half a step: x / 257 must round back to the 8-bit value)
    wide = np.minimum(frame.astype(np.uint32) * 257 + 100, 65535).astype(np.uint16)
    frames["rgb16"] = (wide, frame, False)
    frames["bgr16"] = (wide[..., ::-1].astype(">u2"), frame, True)  # big-endian too
    gray16 = gray.astype(np.uint16) * 257
    for encoding in ("mono16", "16UC1"):
        frames[encoding] = (gray16, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), False)
    frames["8UC3"] = (np.ascontiguousarray(frame[..., ::-1]), frame, False)
    frames["8UC1"] = (gray, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), False)
    return frames


def test_camera_encodings_decode_like_opencv(node, listener):
    """Bayer, YUV 4:2:2, 16-bit and OpenCV-typed frames: with overlay_opacity 0 the overlay is
    the decoded camera image, compared with OpenCV's conversion of the same pixels."""
    publisher = listener.node.create_publisher(Image, "/test/image", BEST_EFFORT)
    frame = camvid_frames(1)[0]
    (result,) = set_parameters(listener, [Parameter("overlay_opacity", value=0.0)])
    assert result.successful
    try:
        for encoding, (pixels, expected, big_endian) in camera_frames(frame).items():
            if encoding.startswith(("bayer", "yuv")):  # the reference is the camera's scene
                assert np.abs(expected.astype(int) - frame).mean() < 3, encoding
            msg = image_message(np.ascontiguousarray(pixels), encoding, listener.next_stamp(), "c")
            msg.is_bigendian = int(big_endian)
            overlay = listener.roundtrip(publisher, msg, ("overlay",))["overlay"]
            decoded = np.frombuffer(overlay.data, np.uint8).reshape(expected.shape)
            assert np.array_equal(decoded, expected), encoding
    finally:
        set_parameters(listener, [Parameter("overlay_opacity", value=0.5)])


def test_reliable_publishers_connect_too(node, listener):
    publisher = listener.node.create_publisher(Image, "/test/image", RELIABLE)
    msg = image_message(camvid_frames(1)[0], "rgb8", listener.next_stamp(), "cam")
    check_outputs(listener.roundtrip(publisher, msg), msg)


def bad_messages(frame: np.ndarray) -> dict[str, tuple[Image, str]]:
    """Bad frames and the words the node's warning must contain."""
    h, w = frame.shape[:2]
    unsupported = image_message(frame, "rgb8", 0, "cam")
    unsupported.encoding = "bayer_rggb16"
    step = image_message(frame, "rgb8", 0, "cam")
    step.step = w * 3 - 1
    truncated = image_message(frame, "rgb8", 0, "cam")
    truncated.data = frame.tobytes()[: h * w * 3 // 2]
    empty = image_message(frame, "rgb8", 0, "cam")
    empty.height = empty.width = empty.step = 0
    empty.data = b""
    return {
        "encoding": (unsupported, "unsupported image encoding 'bayer_rggb16'; publish one of"),
        "step": (step, "step 1439 is less than width 480"),
        "truncated": (truncated, "truncated image"),
        "empty": (empty, "empty image (0x0)"),
    }


@pytest.mark.parametrize("kind", ["encoding", "step", "truncated", "empty"])
def test_a_bad_frame_is_logged_dropped_and_the_next_good_one_processed(node, listener, kind):
    publisher = listener.node.create_publisher(Image, "/test/image", RELIABLE)
    frame = camvid_frames(1)[0]
    bad, words = bad_messages(frame)[kind]
    bad_stamp = listener.next_stamp()
    bad.header.stamp.sec, bad.header.stamp.nanosec = divmod(bad_stamp, 1_000_000_000)
    deadline = time.monotonic() + 15
    while words not in node.output() and time.monotonic() < deadline:
        publisher.publish(bad)
        spin_until(listener.node, lambda: False, 0.3)
    assert words in node.output()
    good = image_message(frame, "rgb8", listener.next_stamp(), "cam")
    check_outputs(listener.roundtrip(publisher, good), good)
    assert node.process.poll() is None
    assert all(bad_stamp not in received for received in listener.received.values())


def test_diagnostics_report_rates_latencies_and_the_model(node, listener):
    publisher = listener.node.create_publisher(Image, "/test/image", RELIABLE)
    bad, _ = bad_messages(camvid_frames(1)[0])["encoding"]
    publisher.publish(bad)
    for frame in camvid_frames(2):
        listener.roundtrip(publisher, image_message(frame, "rgb8", listener.next_stamp(), "c"))
    listener.diagnostics.clear()
    for _ in range(10):  # a steady stream, so the next report has rates
        publisher.publish(image_message(camvid_frames(1)[0], "rgb8", listener.next_stamp(), "c"))
        spin_until(listener.node, lambda: False, 0.1)
    assert spin_until(listener.node, lambda: len(listener.diagnostics) >= 2, 5)
    (status,) = listener.diagnostics[-1].status
    assert status.name == "perception_node: inference"
    values = {kv.key: kv.value for kv in status.values}
    assert values["backend"] == "onnxruntime"
    assert values["bundle"] == "camvid-ood-180x240"
    assert float(values["processed"]) >= 3
    assert float(values["bad"]) >= 1
    for stage in ("preprocess", "inference", "postprocess", "publish", "end_to_end"):
        p50, p99 = float(values[f"{stage}_p50_ms"]), float(values[f"{stage}_p99_ms"])
        assert 0 < p50 <= p99 < 5000, stage
    assert float(values["inference_p50_ms"]) < float(values["end_to_end_p50_ms"])


def test_frames_with_unusable_stamps_are_processed_and_kept_out_of_transport_latency(
    node, listener
):
    publisher = listener.node.create_publisher(Image, "/test/image", BEST_EFFORT)
    for sec in (-1, 0, 1_000):  # negative, unset, decades old: none is a transport time
        msg = image_message(camvid_frames(1)[0], "rgb8", 0, "cam")
        msg.header.stamp.sec = sec
        msg.header.stamp.nanosec = 7
        outputs = listener.roundtrip(publisher, msg, ("segmentation",))
        assert outputs["segmentation"].header.stamp.sec == sec
    assert node.process.poll() is None
    listener.diagnostics.clear()
    assert spin_until(listener.node, lambda: len(listener.diagnostics) >= 1, 5)
    values = {kv.key: kv.value for kv in listener.diagnostics[-1].status[0].values}
    assert 0 <= float(values.get("transport_p99_ms", 0)) < 60_000


def set_parameters(listener, params: list[Parameter]):
    client = AsyncParameterClient(listener.node, "perception_node")
    assert client.wait_for_services(timeout_sec=10)
    future = client.set_parameters(params)
    assert spin_until(listener.node, future.done, 10)
    return future.result().results


def get_parameter(listener, name: str):
    client = AsyncParameterClient(listener.node, "perception_node")
    future = client.get_parameters([name])
    assert spin_until(listener.node, future.done, 10)
    return future.result().values[0]


def test_parameters_are_validated_at_run_time(node, listener):
    (ok,) = set_parameters(listener, [Parameter("ood_threshold", value=0.9)])
    assert ok.successful
    (too_high,) = set_parameters(listener, [Parameter("ood_threshold", value=1.5)])
    assert not too_high.successful and too_high.reason
    (between,) = set_parameters(listener, [Parameter("ood_threshold", value=-0.5)])
    assert not between.successful and "[0, 1]" in between.reason
    assert get_parameter(listener, "ood_threshold").double_value == 0.9  # old value kept
    (read_only,) = set_parameters(listener, [Parameter("backend", value="torch")])
    assert not read_only.successful
    (opacity,) = set_parameters(listener, [Parameter("overlay_opacity", value=2.0)])
    assert not opacity.successful
    (area,) = set_parameters(listener, [Parameter("min_obstacle_area", value=-1)])
    assert not area.successful

    (unknown_point,) = set_parameters(listener, [Parameter("operating_point", value="fpr7")])
    assert not unknown_point.successful and "['fpr1', 'tpr95']" in unknown_point.reason
    (both,) = set_parameters(listener, [Parameter("operating_point", value="tpr95")])
    assert not both.successful and "ood_threshold to -1.0" in both.reason

    # the new threshold is used
    publisher = listener.node.create_publisher(Image, "/test/image", BEST_EFFORT)

    def flagged_where_heat_above(threshold: float) -> bool:
        msg = image_message(camvid_frames(1)[0], "rgb8", listener.next_stamp(), "cam")
        outputs = listener.roundtrip(publisher, msg, ("segmentation", "ood_heatmap"))
        labels = np.frombuffer(outputs["segmentation"].data, np.uint8)
        heat = np.frombuffer(outputs["ood_heatmap"].data, np.float32)
        assert ((heat >= 0.5) & (heat < 0.7)).any()  # so 0.5 and the default 0.7 differ here
        return np.array_equal(labels == UNKNOWN, heat >= threshold)

    assert flagged_where_heat_above(0.9)
    # ood_threshold -1 hands over to the operating point, and a named one is the bundle's value
    results = set_parameters(
        listener,
        [Parameter("ood_threshold", value=-1.0), Parameter("operating_point", value="tpr95")],
    )
    assert all(r.successful for r in results)
    assert flagged_where_heat_above(0.5)
    (reset,) = set_parameters(listener, [Parameter("operating_point", value="")])
    assert reset.successful


def test_the_heatmap_encoding_can_be_switched_to_integer_images(node, listener):
    publisher = listener.node.create_publisher(Image, "/test/image", BEST_EFFORT)
    frame = camvid_frames(1)[0]

    def heatmap():
        msg = image_message(frame, "rgb8", listener.next_stamp(), "cam")
        out = listener.roundtrip(publisher, msg, ("ood_heatmap",))["ood_heatmap"]
        assert (out.height, out.width, out.step) == (
            msg.height,
            msg.width,
            len(out.data) // out.height,
        )
        return out

    score = np.frombuffer(heatmap().data, np.float32)
    try:
        for encoding, dtype, scale in (("mono8", np.uint8, 255), ("16UC1", np.uint16, 65535)):
            (result,) = set_parameters(listener, [Parameter("heatmap_encoding", value=encoding)])
            assert result.successful
            out = heatmap()
            assert out.encoding == encoding and out.is_bigendian == 0
            values = np.frombuffer(out.data, dtype)
            assert values.size == score.size
            # the same frame, so the same score: exactly the nearest integer (the rule's edge
            # cases are in test_node_parts)
            expected = np.clip(np.rint(score.astype(np.float64) * scale), 0, scale)
            assert np.array_equal(values, expected.astype(dtype))
        (bad,) = set_parameters(listener, [Parameter("heatmap_encoding", value="rgb8")])
        assert not bad.successful and "'mono8'" in bad.reason
    finally:
        set_parameters(listener, [Parameter("heatmap_encoding", value="32FC1")])


def test_diagnostics_warn_about_device_silence_qos_and_latency(
    ros, ros_install, camvid_bundle, tmp_path
):
    process = start_node(
        ros_install,
        camvid_bundle,
        tmp_path / "node.log",
        "-p", "device:=cuda",  # ONNX Runtime here has no CUDA provider: it runs on the CPU
        "-p", "input_timeout:=1.0",
        "-p", "reliable_input:=true",
        "-p", "latency_budget_ms:=1.0",
        "-p", "diagnostics_period:=0.5",
        "-r", "__ns:=/diag",
        "-r", "image:=/diag/image",
    )  # fmt: skip
    listener = Listener("diag_listener", "/diag/perception_node")

    def latest_status():
        for array in reversed(listener.diagnostics):
            for status in array.status:
                values = {kv.key: kv.value for kv in status.values}
                if values.get("input_topic") == "/diag/image":
                    return status, values
        return None, {}

    def warned(words: str) -> bool:
        listener.diagnostics.clear()
        return spin_until(
            listener.node, lambda: words in (latest_status()[0] or DiagnosticStatus()).message, 10
        )

    try:
        assert process.wait_for_output("active: subscribed"), process.output()
        assert "outputs published straight from their buffers" in process.output()
        assert "on onnxruntime (cpu, CPUExecutionProvider)" in process.output()
        assert "device = 'cuda', but onnxruntime runs the model on cpu" in process.output()
        assert warned("no images on /diag/image for")
        assert "runs the model on cpu" in latest_status()[0].message
        assert latest_status()[0].level == DiagnosticStatus.WARN
        assert latest_status()[1]["device"] == "cpu, CPUExecutionProvider"
        spin_until(listener.node, lambda: False, 4 * 0.5)  # more reports of the same silence
        assert process.output().count("no images on /diag/image for input_timeout = 1 s") == 1

        best_effort = listener.node.create_publisher(Image, "/diag/image", BEST_EFFORT)
        frame = camvid_frames(1)[0]
        best_effort.publish(image_message(frame, "rgb8", listener.next_stamp(), "c"))
        assert process.wait_for_output("offers QoS incompatible"), process.output()
        assert "(RELIABILITY;" in process.output()
        listener.node.destroy_publisher(best_effort)

        reliable = listener.node.create_publisher(Image, "/diag/image", RELIABLE)
        listener.roundtrip(reliable, image_message(frame, "rgb8", listener.next_stamp(), "c"))
        listener.diagnostics.clear()

        def latency_warned() -> bool:  # frames keep coming (no silence) until 100 are processed
            reliable.publish(image_message(frame, "rgb8", listener.next_stamp(), "c"))
            status = latest_status()[0]
            return status is not None and "exceeds latency_budget_ms 1" in status.message

        assert spin_until(listener.node, latency_warned, 90), process.output()
        assert float(latest_status()[1]["processed"]) >= 100  # no verdict on fewer frames
        assert "no images" not in latest_status()[0].message
    finally:
        listener.node.destroy_node()
        process.stop()


def test_camera_info_beside_the_image_is_published_with_the_outputs(node, listener):
    publisher = listener.node.create_publisher(Image, "/test/image", BEST_EFFORT)
    frame = camvid_frames(1)[0]
    for _ in range(2):  # frames without camera_info: outputs not held back, said once
        listener.roundtrip(publisher, image_message(frame, "rgb8", listener.next_stamp(), "c"))
    said = "no camera_info on /test/camera_info"
    assert node.output().count(said) == 1, node.output()
    assert "-r /test/camera_info:=/your/camera_info" in node.output()  # the name to remap
    info = CameraInfo(width=480, height=360, distortion_model="plumb_bob")
    info.header.frame_id = "camera_optical_frame"
    info.k = [400.0, 0.0, 240.0, 0.0, 400.0, 180.0, 0.0, 0.0, 1.0]
    info.d = [0.1, -0.05, 0.0, 0.0, 0.0]
    info_publisher = listener.node.create_publisher(CameraInfo, "/test/camera_info", RELIABLE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # camera_info may be matched after the first frames
        info_publisher.publish(info)
        msg = image_message(frame, "rgb8", listener.next_stamp(), "camera_optical_frame")
        listener.roundtrip(publisher, msg, ("obstacle_mask",))
        key = stamp(msg)
        if spin_until(listener.node, lambda key=key: key in listener.camera_info, 1.0):
            break
    out = listener.camera_info[stamp(msg)]
    assert out.header.frame_id == msg.header.frame_id  # stamped like the outputs
    assert (out.width, out.height, out.distortion_model) == (480, 360, "plumb_bob")
    assert list(out.k) == list(info.k) and list(out.d) == list(info.d)
    listener.diagnostics.clear()
    assert spin_until(listener.node, lambda: len(listener.diagnostics) >= 1, 5)
    values = {kv.key: kv.value for kv in listener.diagnostics[-1].status[0].values}
    assert values["input_topic"] == "/test/image" and values["camera_info"] == "received"


def test_qos_overrides_from_a_params_file_set_input_and_output_qos(
    ros, ros_install, camvid_bundle, tmp_path
):
    params = tmp_path / "qos.yaml"
    params.write_text(
        "/**/perception_node:\n"
        "  ros__parameters:\n"
        "    qos_overrides:\n"
        "      /qos/image:\n"
        "        subscription: {reliability: reliable, depth: 3, history: keep_last}\n"
        "      /qos/perception_node/overlay:\n"
        "        publisher: {reliability: best_effort}\n"
    )
    process = start_node(
        ros_install,
        camvid_bundle,
        tmp_path / "node.log",
        "--params-file", str(params),
        "-r", "__ns:=/qos",
        "-r", "image:=/qos/image",
    )  # fmt: skip
    listener = Listener("qos_listener", "/qos/perception_node")
    graph = listener.node

    def reliability(infos) -> set:
        return {info.qos_profile.reliability for info in infos}

    try:
        assert process.wait_for_output("active: subscribed"), process.output()
        assert spin_until(graph, lambda: graph.get_subscriptions_info_by_topic("/qos/image"), 15)
        assert reliability(graph.get_subscriptions_info_by_topic("/qos/image")) == {
            ReliabilityPolicy.RELIABLE  # the default is best effort (reliable_input false)
        }
        overlay = graph.get_publishers_info_by_topic("/qos/perception_node/overlay")
        assert reliability(overlay) == {ReliabilityPolicy.BEST_EFFORT}
        mask = graph.get_publishers_info_by_topic("/qos/perception_node/obstacle_mask")
        assert reliability(mask) == {ReliabilityPolicy.RELIABLE}  # not overridden
        client = AsyncParameterClient(graph, "/qos/perception_node")
        assert client.wait_for_services(timeout_sec=10)
        future = client.get_parameters(["qos_overrides./qos/image.subscription.depth"])
        assert spin_until(graph, future.done, 10)
        assert future.result().values[0].integer_value == 3
        # the overridden (reliable) input still takes frames; outputs come
        publisher = graph.create_publisher(Image, "/qos/image", RELIABLE)
        msg = image_message(camvid_frames(1)[0], "rgb8", listener.next_stamp(), "c")
        listener.roundtrip(publisher, msg, ("obstacle_mask",))
    finally:
        listener.node.destroy_node()
        process.stop()


def test_compressed_input(ros, ros_install, camvid_bundle, tmp_path):
    process = start_node(
        ros_install,
        camvid_bundle,
        tmp_path / "node.log",
        "-p", "image_transport:=compressed",
        "-r", "image:=/test/camera",
        "-r", "__ns:=/compressed",
    )  # fmt: skip
    listener = Listener("compressed_listener", "/compressed/perception_node")
    try:
        assert process.wait_for_output("/test/camera/compressed"), process.output()
        publisher = listener.node.create_publisher(
            CompressedImage, "/test/camera/compressed", BEST_EFFORT
        )
        frame = camvid_frames(1)[0]
        for fmt, extension in (("jpeg", ".jpg"), ("png", ".png")):
            msg = CompressedImage(format=fmt)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(listener.next_stamp(), 10**9)
            msg.header.frame_id = "cam"
            msg.data = cv2.imencode(extension, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
            outputs = listener.roundtrip(publisher, msg)
            assert (outputs["overlay"].height, outputs["overlay"].width) == frame.shape[:2]
        garbage = CompressedImage(format="jpeg", data=b"\xff\xd8 not a jpeg")
        deadline = time.monotonic() + 10
        while "could not decode" not in process.output() and time.monotonic() < deadline:
            publisher.publish(garbage)
            spin_until(listener.node, lambda: False, 0.3)
        assert "could not decode a 13-byte CompressedImage" in process.output()
        assert process.process.poll() is None
    finally:
        listener.node.destroy_node()
        process.stop()


def test_start_up_warns_when_fast_dds_would_drop_large_frames(
    ros, ros_install, camvid_bundle, tmp_path, monkeypatch
):
    warning = "FASTDDS_DEFAULT_PROFILES_FILE="  # ... names a file that does not exist
    monkeypatch.delenv("FASTDDS_BUILTIN_TRANSPORTS")
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(tmp_path / "typo.xml"))
    process = start_node(ros_install, camvid_bundle, tmp_path / "node.log")
    try:
        assert process.wait_for_output(warning), process.output()
        assert "[WARN]" in next(line for line in process.output().splitlines() if warning in line)
    finally:
        process.stop()
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE")  # nothing set: the node loads the profile
    process = start_node(ros_install, camvid_bundle, tmp_path / "quiet.log")
    try:
        assert process.wait_for_output("on onnxruntime"), process.output()
        assert "FASTDDS" not in process.output()
    finally:
        process.stop()


@pytest.mark.parametrize("signal_sent", ["SIGINT to the process group", "SIGTERM"])
def test_a_signal_under_load_ends_the_node_cleanly(
    ros, ros_install, camvid_bundle, tmp_path, signal_sent
):
    process = start_node(
        ros_install,
        camvid_bundle,
        tmp_path / "node.log",
        "-r",
        "__ns:=/stop",
        "-r",
        "image:=/stop/image",
    )
    listener = Listener("stop_listener", "/stop/perception_node")
    try:
        assert process.wait_for_output("on onnxruntime"), process.output()
        publisher = listener.node.create_publisher(Image, "/stop/image", BEST_EFFORT)
        frame = camvid_frames(1)[0]
        listener.roundtrip(publisher, image_message(frame, "rgb8", listener.next_stamp(), "c"))
        big = cv2.resize(frame, (2048, 1024))  # 2 MP: each frame keeps the worker busy longer
        for _ in range(10):  # faster than the model: the worker is busy when the signal comes
            publisher.publish(image_message(big, "rgb8", listener.next_stamp(), "c"))
            spin_until(listener.node, lambda: False, 0.03)
        if signal_sent == "SIGTERM":
            process.process.send_signal(signal.SIGTERM)
        else:  # what Ctrl-C in a terminal does
            os.killpg(process.process.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while process.process.poll() is None and time.monotonic() < deadline:
            publisher.publish(image_message(frame, "rgb8", listener.next_stamp(), "c"))
            spin_until(listener.node, lambda: False, 0.03)
        assert process.wait_exit(5) == 0, process.output()
        output = process.output()
        warnings = [w for w in output.splitlines() if "[WARN]" in w and "no camera_info" not in w]
        assert "Traceback" not in output and not warnings, output
        assert "[ERROR]" not in output and "failed" not in output, output
        assert "stopping: waiting for the frame in work" in output, output  # it was busy
    finally:
        listener.node.destroy_node()
        process.stop()


def call(node, client, request, attempts: int = 4):
    """A service call, sent again when no answer comes: a request sent while discovery is still
    matching the reply path can go unanswered (seen with Fast DDS on a loaded machine)."""
    assert client.wait_for_service(timeout_sec=30), client.srv_name
    for _ in range(attempts):
        future = client.call_async(request)
        if spin_until(node, future.done, 15):
            return future.result()
        client.remove_pending_request(future)
    raise AssertionError(f"no answer from {client.srv_name}")


def test_lifecycle_transitions_start_and_stop_input_and_outputs(
    ros, ros_install, camvid_bundle, tmp_path
):
    process = start_node(
        ros_install,
        camvid_bundle,
        tmp_path / "node.log",
        "-p", "autostart:=false",
        "-r", "__ns:=/managed",
        "-r", "image:=/managed/image",
    )  # fmt: skip
    listener = Listener("lifecycle_listener", "/managed/perception_node")
    lifecycle = "/managed/perception_node"
    change = listener.node.create_client(ChangeState, f"{lifecycle}/change_state")
    get = listener.node.create_client(GetState, f"{lifecycle}/get_state")
    publisher = listener.node.create_publisher(Image, "/managed/image", BEST_EFFORT)
    frame = camvid_frames(1)[0]

    def transition(transition_id: int, expected_state: str | None) -> None:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        assert change.wait_for_service(timeout_sec=30)
        future = change.call_async(request)
        # an unanswered request (see call()) may still have been carried out: the state tells
        if spin_until(listener.node, future.done, 30):
            assert future.result().success, process.output()
        if expected_state:
            state = call(listener.node, get, GetState.Request()).current_state.label
            assert state == expected_state, process.output()

    def wired(subscribed: bool, published: bool) -> bool:
        """The node's input subscription and output publishers as the graph shows them."""
        return spin_until(
            listener.node,
            lambda: (
                listener.node.count_subscribers("/managed/image") == int(subscribed)
                and all(
                    listener.node.count_publishers(f"{lifecycle}/{o}") == int(published)
                    for o in OUTPUTS
                )
            ),
            15,
        )

    try:
        state = call(listener.node, get, GetState.Request()).current_state.label
        assert state == "unconfigured" and "on onnxruntime" not in process.output()
        assert wired(subscribed=False, published=False)
        transition(Transition.TRANSITION_CONFIGURE, "inactive")
        assert "on onnxruntime (cpu, " in process.output()  # the model is loaded in configure
        assert wired(subscribed=False, published=False)
        transition(Transition.TRANSITION_ACTIVATE, "active")
        assert wired(subscribed=True, published=True)
        listener.roundtrip(publisher, image_message(frame, "rgb8", listener.next_stamp(), "c"))
        transition(Transition.TRANSITION_DEACTIVATE, "inactive")
        assert wired(subscribed=False, published=False)
        transition(Transition.TRANSITION_ACTIVATE, "active")  # the model was kept: no reload
        listener.roundtrip(publisher, image_message(frame, "rgb8", listener.next_stamp(), "c"))
        assert process.output().count("configuring:") == 1
        transition(Transition.TRANSITION_DEACTIVATE, "inactive")
        transition(Transition.TRANSITION_CLEANUP, "unconfigured")
        assert "model released" in process.output()
        transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, None)
        assert process.wait_exit(30) == 0, process.output()  # finalized: the process ends
        assert "Traceback" not in process.output()
    finally:
        listener.node.destroy_node()
        process.stop()


def test_a_failed_configure_leaves_the_managed_node_unconfigured_and_says_why(
    ros, ros_install, camvid_bundle, tmp_path
):
    copy = truncated_onnx_bundle(camvid_bundle, tmp_path / "bundle")
    process = start_node(
        ros_install, copy, tmp_path / "node.log", "-p", "autostart:=false", "-r", "__ns:=/broken"
    )
    listener = Listener("broken_listener", "/broken/perception_node")
    node_name = "/broken/perception_node"
    change = listener.node.create_client(ChangeState, f"{node_name}/change_state")
    get = listener.node.create_client(GetState, f"{node_name}/get_state")
    try:
        call(listener.node, get, GetState.Request())  # the node is up and answering
        configure = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE))
        assert change.wait_for_service(timeout_sec=30)
        future = change.call_async(configure)
        if spin_until(listener.node, future.done, 30):  # an unanswered request: see call()
            assert not future.result().success
        assert call(listener.node, get, GetState.Request()).current_state.label == "unconfigured"
        assert process.wait_for_output("configure failed: cannot load model bundle")
        assert "re-export the bundle" in process.output()
        listener.diagnostics.clear()

        def reported() -> bool:
            return any(
                "configure failed" in status.message and "unconfigured" in status.message
                for array in listener.diagnostics
                for status in array.status
            )

        assert spin_until(listener.node, reported, 10)
        assert process.process.poll() is None  # still there, for a fixed bundle and configure
    finally:
        listener.node.destroy_node()
        process.stop()


def start_and_expect_failure(ros_install, tmp_path, *params: str) -> str:
    args = [a for p in params for a in ("-p", p)]
    process = NodeProcess(ros_install, tmp_path / "node.log", *args)
    try:
        assert process.wait_exit(60) == 1, process.output()
    finally:
        process.stop()
    fatal = [line for line in process.output().splitlines() if "[FATAL]" in line]
    assert len(fatal) == 1, process.output()  # one clear message, no traceback
    assert "Traceback" not in process.output()
    return fatal[0]


BAD_QOS = "qos_overrides./perception_node/overlay.publisher"  # .reliability


def test_a_bad_qos_override_fails_activate_naming_the_parameter(
    ros, ros_install, camvid_bundle, tmp_path
):
    """Autostart: one FATAL line. Over the lifecycle services: one ERROR per try, the node
    stays inactive (model kept), and no publisher it created before the bad one is left."""
    line = start_and_expect_failure(
        ros_install, tmp_path, f"model:={camvid_bundle}", f"{BAD_QOS}.reliability:=sometimes"
    )
    assert f"activate failed: {BAD_QOS}: Unexpected QoS override" in line, line
    assert "`reliability`: `sometimes`" in line, line
    bad_qos = BAD_QOS.replace("./", "./badqos/")  # its own namespace: the module's node is up
    process = start_node(
        ros_install, camvid_bundle, tmp_path / "managed.log",
        "-p", "autostart:=false", "-p", f"{bad_qos}.reliability:=sometimes", "-r", "__ns:=/badqos",
    )  # fmt: skip
    listener = Listener("bad_qos_listener", "/badqos/perception_node")
    change = listener.node.create_client(ChangeState, "/badqos/perception_node/change_state")
    get = listener.node.create_client(GetState, "/badqos/perception_node/get_state")
    try:
        for transition in ("CONFIGURE", "ACTIVATE", "ACTIVATE"):  # a retry duplicates nothing
            request = ChangeState.Request(
                transition=Transition(id=getattr(Transition, f"TRANSITION_{transition}"))
            )
            answer = call(listener.node, change, request)
            assert answer.success == (transition == "CONFIGURE"), process.output()
        assert call(listener.node, get, GetState.Request()).current_state.label == "inactive"
        errors = [line for line in process.output().splitlines() if "[ERROR]" in line]
        assert len(errors) == 2 and all(bad_qos in line for line in errors), process.output()
        spin_until(listener.node, lambda: False, 2)  # the graph catches up
        for name in (*OUTPUTS, "camera_info"):
            assert listener.node.count_publishers(f"/badqos/perception_node/{name}") == 0, name
        assert "Traceback" not in process.output()
    finally:
        listener.node.destroy_node()
        process.stop()


def test_a_missing_bundle_stops_the_node_with_one_message(ros_install, tmp_path):
    line = start_and_expect_failure(ros_install, tmp_path, f"model:={tmp_path / 'nowhere'}")
    assert "is not a folder" in line


def test_diagnostics_keep_coming_with_sim_time_and_no_clock(
    ros, ros_install, camvid_bundle, tmp_path
):
    process = start_node(
        ros_install,
        camvid_bundle,
        tmp_path / "node.log",
        "-p", "use_sim_time:=true",
        "-p", "diagnostics_period:=0.5",
        "-r", "__ns:=/simtime",
    )  # fmt: skip
    listener = Listener("simtime_listener", "/simtime/perception_node")
    try:
        assert process.wait_for_output("on onnxruntime"), process.output()
        seen = lambda: any(  # noqa: E731
            s.name == "perception_node: inference"
            for array in listener.diagnostics
            for s in array.status
        )
        assert spin_until(listener.node, seen, 10)
    finally:
        listener.node.destroy_node()
        process.stop()


def test_a_model_onnx_runtime_cannot_load_stops_the_node_with_one_message(
    ros_install, camvid_bundle, tmp_path
):
    copy = truncated_onnx_bundle(camvid_bundle, tmp_path / "bundle")
    line = start_and_expect_failure(ros_install, tmp_path, f"model:={copy}", "backend:=onnxruntime")
    assert "cannot load" in line and "re-export the bundle" in line


def test_a_corrupt_bundle_stops_the_node_with_one_message(ros_install, camvid_bundle, tmp_path):
    import shutil

    copy = shutil.copytree(camvid_bundle, tmp_path / "bundle")
    onnx = copy / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:1000])
    line = start_and_expect_failure(ros_install, tmp_path, f"model:={copy}")
    assert "does not match its SHA-256" in line


@pytest.mark.parametrize(
    ("param", "words"),
    [
        ("ood_threshold:=2.0", "ood_threshold"),
        ("operating_point:=fpr2", "it has ['fpr1', 'tpr95']"),
        ("operating_point:=tpr95 -p ood_threshold:=0.5", "both set a threshold"),
        ("temperature:=3.0", "T = 2.0 built into its graph"),
        ("backend:=tensorflow", "choose one of"),
        ("min_obstacle_area:=-5", "min_obstacle_area"),
    ],
)
def test_a_bad_parameter_stops_the_node_with_one_message(
    ros_install, camvid_bundle, tmp_path, param, words
):
    params = param.split(" -p ")  # one case sets two parameters
    line = start_and_expect_failure(ros_install, tmp_path, f"model:={camvid_bundle}", *params)
    assert words in line
