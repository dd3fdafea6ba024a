"""The node's parts: message conversions, post-processing, parameters, lazy outputs in-process."""

from __future__ import annotations

import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from nflowjs_perception.image_messages import (
    FrameError,
    OutputImage,
    compressed_to_rgb,
    fill_image,
    image_to_rgb,
)
from nflowjs_perception.parameters import SPECS, check
from nflowjs_perception.postprocess import Postprocessor
from ros_support import camvid_frames, image_message

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


class SlowBackend:
    """Wraps a backend: ``busy`` is set when a frame starts, which then waits for ``release``."""

    name, device = "slow", "cpu"

    def __init__(self, backend, busy, release, wait_s: float):
        self.backend, self.bundle = backend, backend.bundle
        self.busy, self.release, self.wait_s = busy, release, wait_s

    def infer(self, rgb):
        self.busy.set()
        self.release.wait(self.wait_s)
        return self.backend.infer(rgb)


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("rgb8", RGB),
        ("bgr8", RGB[..., ::-1]),
        ("rgba8", np.dstack([RGB, np.zeros((5, 7), np.uint8)])),
        ("bgra8", np.dstack([RGB[..., ::-1], np.zeros((5, 7), np.uint8)])),
    ],
)
def test_colour_encodings_decode_to_rgb(encoding, pixels):
    msg = image_message(np.ascontiguousarray(pixels), encoding, 0, "cam")
    assert np.array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize(("encoding", "channels"), [("mono16", 1), ("rgb16", 3)])
def test_16_bit_images_with_padded_rows(encoding, channels, big_endian):
    """step > width x 2 x channels (padding bytes set, so reading them would show), either byte
    order: x 255/65535 to 8 bit, as the unpadded little-endian case."""
    wide = RGB[..., :channels].astype(np.uint16) * 257 + 100  # below half a step: rounds back
    padded = np.full((5, 7 * channels + 3), 0xABCD, ">u2" if big_endian else "<u2")
    padded[:, : 7 * channels] = wide.reshape(5, -1)
    msg = image_message(np.zeros((5, 7 * channels + 3), np.uint8), "mono8", 0, "cam")
    msg.encoding, msg.width, msg.is_bigendian = encoding, 7, int(big_endian)
    msg.step, msg.data = padded.strides[0], padded.tobytes()
    rgb = image_to_rgb(msg)
    expected = RGB if channels == 3 else np.repeat(RGB[..., :1], 3, axis=2)
    assert rgb.shape == (5, 7, 3) and np.array_equal(rgb, expected)


def test_mono8_and_padded_rows():
    gray = RGB[..., 0].copy()
    padded = np.zeros((5, 12), np.uint8)  # step 12 > width 7: rows padded, as drivers may do
    padded[:, :7] = gray
    msg = image_message(padded, "mono8", 0, "cam")
    msg.width = 7
    rgb = image_to_rgb(msg)
    assert rgb.shape == (5, 7, 3) and np.array_equal(rgb[..., 1], gray)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"encoding": "32FC1"}, "encoding"),
        ({"height": 0}, "empty"),
        ({"step": 20}, "step"),
        ({"data": bytes(50)}, "truncated"),
    ],
)
def test_bad_images_raise_frame_errors(change, kind):
    msg = image_message(RGB, "rgb8", 0, "cam")
    for name, value in change.items():
        setattr(msg, name, value)
    with pytest.raises(FrameError) as error:
        image_to_rgb(msg)
    assert error.value.kind == kind


def test_compressed_images_decode_and_garbage_is_refused():
    frame = camvid_frames(1)[0]
    png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
    assert np.array_equal(compressed_to_rgb(CompressedImage(format="png", data=png)), frame)
    with pytest.raises(FrameError, match="could not decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"garbage"))
    with pytest.raises(FrameError, match="empty CompressedImage"):
        compressed_to_rgb(CompressedImage(format="jpeg"))


def test_outgoing_images_carry_pixels_header_and_layout():
    header = Header(frame_id="cam")
    heat = RNG.random((4, 6), dtype=np.float32)
    msg = fill_image(Image(), header, heat, "32FC1")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 6, 24, "32FC1")
    assert msg.header.frame_id == "cam" and msg.is_bigendian == 0
    assert np.array_equal(np.frombuffer(msg.data, np.float32).reshape(4, 6), heat)


def test_an_output_message_is_refilled_in_place_and_resized_when_needed():
    output = OutputImage(Image, "mono8")
    first = output.fill(Header(frame_id="a"), np.full((4, 6), 7, np.uint8))
    buffer = first.data
    second = output.fill(Header(frame_id="b"), np.full((4, 6), 9, np.uint8))
    assert second.data is buffer and set(second.data) == {9} and second.header.frame_id == "b"
    third = output.fill(Header(frame_id="c"), np.full((2, 3), 5, np.uint8))
    assert (third.height, third.width, len(third.data)) == (2, 3, 6) and set(third.data) == {5}


def small_bundle(drivable=(0,)):
    classes = [SimpleNamespace(id=i, color=(10 * i, 20 * i, 30 * i)) for i in range(3)]
    return SimpleNamespace(unknown_id=3, classes=classes, drivable_class_ids=list(drivable))


def test_segmentation_marks_ood_pixels_unknown_and_overlay_blends_colours():
    post = Postprocessor(small_bundle())
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    mask = np.array([[0, 1], [0, 0]], np.uint8)
    seg = post.segmentation(labels, mask)
    assert seg.tolist() == [[0, 3], [2, 1]]
    rgb = np.full((2, 2, 3), 100, np.uint8)
    overlay = post.overlay(rgb, seg, 0.5)
    assert overlay[1, 0].tolist() == [60, 70, 80]  # (100 + (20, 40, 60)) / 2
    assert overlay[0, 1].tolist() == [178, 50, 178]  # magenta for OOD
    assert np.array_equal(post.overlay(rgb, seg, 0.0), rgb)


def test_obstacles_are_ood_regions_on_or_touching_the_drivable_area():
    post = Postprocessor(small_bundle(drivable=(0,)))
    labels = np.ones((40, 40), np.uint8)  # class 1: not drivable
    labels[20:, :] = 0  # road in the lower half
    mask = np.zeros((40, 40), np.uint8)
    mask[22:26, 5:9] = 1  # on the road (16 px)
    mask[16:20, 15:19] = 1  # touching the road from above (16 px)
    mask[2:6, 30:34] = 1  # far from the road
    mask[30, 30] = 1  # on the road but tiny
    out = post.obstacle_mask(labels, mask, min_area=4)
    assert set(np.unique(out)) == {0, 255}
    assert (out[22:26, 5:9] == 255).all() and (out[16:20, 15:19] == 255).all()
    assert not out[2:6, 30:34].any() and out[30, 30] == 0
    assert post.obstacle_mask(labels, np.zeros_like(mask), 4).sum() == 0
    assert post.obstacle_mask(labels, mask, min_area=0)[30, 30] == 255


def test_obstacle_mask_with_more_than_255_regions():
    post = Postprocessor(small_bundle())
    labels = np.zeros((64, 64), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[::2, ::2] = 1  # 1024 isolated pixels
    assert (post.obstacle_mask(labels, mask, 1) == mask * 255).all()


def test_parameter_checks_name_the_problem(tmp_path, monkeypatch):
    assert check("ood_threshold", 0.3) is None and check("ood_threshold", -1.0) is None
    assert "[0, 1]" in check("ood_threshold", -0.2)
    assert "choose one of" in check("backend", "tflite")
    assert "model is empty" in check("model", "")
    assert "not a folder" in check("model", str(tmp_path / "missing"))
    assert check("model", str(tmp_path)) is None
    # engine_cache_dir's "~" is the user's home (the default is ~/.cache/...)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "file").write_text("")
    assert "exists and is not a folder" in check("engine_cache_dir", "~/file")
    assert check("engine_cache_dir", "~/.cache/nflowjs_perception/engines") is None
    assert {s.name for s in SPECS if s.dynamic} == {
        "operating_point",
        "ood_threshold",
        "overlay_opacity",
        "min_obstacle_area",
        "heatmap_encoding",
        "max_drop_rate",
        "latency_budget_ms",
        "input_timeout",
    }


def test_the_mailbox_keeps_the_newest_frame_and_counts_replacements():
    from nflowjs_perception.perception_node import LatestFrame

    mailbox = LatestFrame()
    assert mailbox.put("frame 1") is False
    assert mailbox.put("frame 2") is True  # frame 1 was never taken: a drop
    assert mailbox.take() == "frame 2"
    assert mailbox.put("frame 3") is False
    mailbox.close()
    assert mailbox.take() is None  # closed: a pending frame is not processed any more


def test_unsubscribed_outputs_cost_nothing(ros, camvid_bundle, monkeypatch):
    from nflowjs_perception import perception_node

    made = []
    real_fill = perception_node.OutputImage.fill

    def counting_fill(self, header, pixels):
        made.append(self.encoding)
        return real_fill(self, header, pixels)

    monkeypatch.setattr(perception_node.OutputImage, "fill", counting_fill)
    node = perception_node.PerceptionNode(
        parameter_overrides=[
            Parameter("model", value=str(camvid_bundle)),
            Parameter("backend", value="onnxruntime"),
        ]
    )
    node.trigger_configure()
    node.trigger_activate()
    tester = rclpy.create_node("lazy_tester")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(tester)
    heatmaps, overlays = [], []
    tester.create_subscription(Image, "/perception_node/ood_heatmap", heatmaps.append, 1)
    publisher = tester.create_publisher(Image, "/image", 1)
    frame = camvid_frames(1)[0]

    def run_until(predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            publisher.publish(image_message(frame, "rgb8", time.time_ns(), "cam"))
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.02)
        return predicate()

    try:
        assert run_until(lambda: len(heatmaps) >= 2)
        check_drops_are_counted(node, frame)
        assert set(made) == {"32FC1"}  # only the heatmap was built
        processed = node.stats.counts["processed"]
        assert processed >= 2
        tester.create_subscription(Image, "/perception_node/overlay", overlays.append, 1)
        assert run_until(lambda: len(overlays) >= 1)
        assert "rgb8" in made and "mono8" not in made  # segmentation computed, not published
        check_incompatible_qos_reports(node)
        check_a_frame_slower_than_the_join_timeout_fails_deactivate(node, frame, monkeypatch)
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        tester.destroy_node()


def test_tensorrt_engines_come_from_the_bundle_the_cache_or_a_first_start_build(
    camvid_bundle, tmp_path, monkeypatch
):
    from nflowjs_perception import backends
    from nflowjs_perception.bundle import BundleError, load_bundle
    from nflowjs_perception.tensorrt_engine import engine_file_name

    bundle = load_bundle(camvid_bundle)
    gpu, version = "NVIDIA H100 80GB HBM3", "10.13.0.35"
    cache = tmp_path / "engines"
    with pytest.raises(BundleError, match="build_engine_if_missing"):
        backends.find_or_build_engine(camvid_bundle, bundle, gpu, version, None, cache, False)

    builds = []

    def fake_build(onnx_file, precision, input_size):
        builds.append((onnx_file.name, precision, input_size))
        return b"serialized engine"

    monkeypatch.setattr(backends, "build_serialized_engine", fake_build)
    said = []
    built = backends.find_or_build_engine(
        camvid_bundle, bundle, gpu, version, None, cache, True, said.append
    )
    assert built == cache / engine_file_name("fp16", gpu, version)
    assert len(said) == 2 and "building a TensorRT fp16 engine" in said[0]  # the log's progress
    assert said[1].startswith("TensorRT engine built in") and str(built) in said[1]
    assert built.read_bytes() == b"serialized engine"
    assert builds == [("model.onnx", "fp16", None)]  # a static bundle needs no profile
    again = backends.find_or_build_engine(camvid_bundle, bundle, gpu, version, None, cache, True)
    assert again == built and len(builds) == 1  # the cached engine is reused
    other_gpu = backends.find_or_build_engine(
        camvid_bundle, bundle, "NVIDIA L4", version, "fp32", cache, True
    )
    assert other_gpu.name == engine_file_name("fp32", "NVIDIA L4", version)
    assert [p.name for p in cache.iterdir() if p.name.startswith("tmp")] == []


def check_drops_are_counted(node, frame):
    """Frames that arrive while the model is busy replace each other; each replaced one counts."""
    import threading

    busy, release = threading.Event(), threading.Event()
    run = node._run  # the worker's own references, for this activation
    real_backend = run.backend

    run.backend = SlowBackend(real_backend, busy, release, 10)
    receive = node._receiver(lambda msg: frame, run.mailbox)
    dropped = node.stats.counts["dropped"]
    try:
        receive(image_message(frame, "rgb8", time.time_ns(), "cam"))
        assert busy.wait(10)  # the worker holds frame 1
        for _ in range(4):  # frames 2..5 arrive meanwhile: 2, 3, 4 are replaced
            receive(image_message(frame, "rgb8", time.time_ns(), "cam"))
        assert node.stats.counts["dropped"] - dropped == 3
    finally:
        release.set()
        run.backend = real_backend


def check_incompatible_qos_reports(node):
    """A fix named only where QoS overrides offer one; the diagnostics WARN expires."""
    from rclpy.qos import QoSPolicyKind

    from nflowjs_perception import perception_node

    said, reported = [], []
    node.get_logger = lambda: SimpleNamespace(warning=said.append, info=said.append)
    node._publish_status = lambda level, message, values: reported.append(message)
    try:
        for kind in (QoSPolicyKind.RELIABILITY, QoSPolicyKind.DURABILITY):
            node._on_incompatible_qos(SimpleNamespace(last_policy_kind=kind, total_count=1))
        assert "qos_overrides./image.subscription.reliability or reliable_input" in said[0]
        assert "publisher must change its durability" in said[1]
        assert "qos_overrides" not in said[1]
        node._publish_diagnostics()
        assert "has incompatible QoS (DURABILITY)" in reported[-1]
        policy, when = node._incompatible_qos
        node._incompatible_qos = (policy, when - perception_node.QOS_WARN_S)  # quiet since
        node._publish_diagnostics()
        assert "incompatible QoS" not in reported[-1]
    finally:
        del node.get_logger, node._publish_status  # the class's own again


def check_a_frame_slower_than_the_join_timeout_fails_deactivate(node, frame, monkeypatch):
    """The worker keeps its references: deactivate fails (and keeps the worker and its
    publishers) while a frame outlives the join timeout, then succeeds; a second activate while
    the old worker runs is refused; cleanup under a finished worker breaks nothing."""
    import threading

    from rclpy.lifecycle import TransitionCallbackReturn

    from nflowjs_perception import perception_node

    monkeypatch.setattr(perception_node, "WORKER_JOIN_S", 0.2)
    busy, release = threading.Event(), threading.Event()
    run = node._run
    real_backend = run.backend

    run.backend = SlowBackend(real_backend, busy, release, 20)
    node._receiver(lambda msg: frame, run.mailbox)(image_message(frame, "rgb8", 1, "cam"))
    try:
        assert busy.wait(10)
        assert node.trigger_deactivate() == TransitionCallbackReturn.FAILURE
        assert node.state == "active" and node._worker.is_alive()
        assert set(node.outputs) == set(perception_node.OUTPUTS)  # still the worker's
        assert node.on_activate(None) == TransitionCallbackReturn.FAILURE  # no second worker
        assert "WORKER_JOIN_S = 0.2 s" in node.transition_error
    finally:
        release.set()
    node._worker.join(10)
    failed = node.stats.counts["failed"]
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node._worker is None and node.outputs == {} and node._run is None
    assert node.stats.counts["failed"] == failed  # the slow frame finished without an error
    # the next activation starts clean: no old QoS mismatch, no old frames in the statistics
    node._incompatible_qos = ("RELIABILITY", time.monotonic())
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node._incompatible_qos[0] == "" and node.stats.counts["processed"] == 0
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS


def test_auto_says_why_tensorrt_was_not_used(camvid_bundle):
    from nflowjs_perception.backends import open_backend

    backend = open_backend(camvid_bundle, "auto")
    assert backend.name == "onnxruntime" and backend.device == "cpu"  # no GPU here
    assert backend.fallback_reason.startswith("TensorRT not used: ")
    assert "tensorrt" in backend.fallback_reason.lower()
    assert open_backend(camvid_bundle, "auto", "cpu").fallback_reason.endswith("device is cpu")


def test_a_fast_dds_without_large_data_settings_is_named_at_start_up(tmp_path):
    from nflowjs_perception.dds import profile_path, transport_warning

    fast_dds = "rmw_fastrtps_cpp"
    warning = transport_warning({}, fast_dds)
    assert "neither FASTDDS_DEFAULT_PROFILES_FILE nor FASTDDS_BUILTIN_TRANSPORTS" in warning
    assert "nflowjs_perception/config/fastdds.xml" in warning
    missing = str(tmp_path / "nowhere.xml")
    warning = transport_warning({"FASTDDS_DEFAULT_PROFILES_FILE": missing}, fast_dds)
    assert f"FASTDDS_DEFAULT_PROFILES_FILE={missing} is not a file" in warning
    profile = {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile_path())}
    assert transport_warning(profile, fast_dds) is None
    assert transport_warning({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, fast_dds) is None
    assert transport_warning({}, "rmw_cyclonedds_cpp") is None  # other middleware: not ours to say


def test_the_shipped_profile_is_selected_unless_the_user_chose():
    from nflowjs_perception import dds

    # a dict, not os.environ: Fast DDS in this process must not see the variable change
    environ = {"ROS_DOMAIN_ID": "7"}
    assert dds.use_shipped_profile(environ) == str(dds.profile_path())
    assert environ[dds.PROFILE_VARIABLE] == str(dds.profile_path())
    assert dds.profile_path().name == "fastdds.xml" and dds.profile_path().is_file()
    chosen = {dds.ENVIRONMENT_VARIABLE: "LARGE_DATA"}
    assert dds.use_shipped_profile(chosen) is None
    assert chosen == {dds.ENVIRONMENT_VARIABLE: "LARGE_DATA"}


def test_diagnostics_warn_on_drops_and_latency_over_budget():
    from nflowjs_perception.node_stats import MIN_LATENCY_SAMPLES, NodeStats, warnings_from

    stats = NodeStats()
    for _ in range(10):
        stats.count("received")
    for _ in range(3):
        stats.count("dropped")
    for ms in (20.0, 30.0, 80.0):
        stats.record({"end_to_end": ms})
    early = stats.summary()
    assert len(warnings_from(early, max_drop_rate=0.2, latency_budget_ms=54.0)) == 1  # drops only
    for _ in range(MIN_LATENCY_SAMPLES - 3):
        stats.record({"end_to_end": 80.0})
    for _ in range(10):
        stats.count("received")
    for _ in range(3):
        stats.count("dropped")
    summary = stats.summary()
    assert summary["drop_rate"] == 0.3
    drops, latency = warnings_from(summary, max_drop_rate=0.2, latency_budget_ms=54.0)
    assert "30% of frames dropped (max_drop_rate 20%)" in drops
    assert "exceeds latency_budget_ms 54" in latency
    assert warnings_from(summary, max_drop_rate=0.5, latency_budget_ms=100.0) == []
    assert stats.summary()["drop_rate"] == 0.0  # a window without frames drops none


def test_outputs_computed_into_the_message_buffer_are_not_copied_again():
    from std_msgs.msg import Header

    from nflowjs_perception.image_messages import OutputImage

    output = OutputImage(Image, "32FC1")
    heat = output.pixels((4, 6), np.float32)
    heat[:] = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    buffer = output.msg.data
    msg = output.fill(Header(frame_id="cam"), heat)
    assert msg.data is buffer and msg.header.frame_id == "cam"
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 6, 24, "32FC1")
    assert np.array_equal(np.frombuffer(msg.data, np.float32).reshape(4, 6), heat)
    elsewhere = np.full((4, 6), 0.5, np.float32)  # not the message's buffer: copied in
    msg = output.fill(Header(), elsewhere)
    assert np.array_equal(np.frombuffer(msg.data, np.float32), elsewhere.ravel())


@pytest.mark.parametrize(
    ("encoding", "dtype", "scale"), [("mono8", np.uint8, 255), ("16UC1", np.uint16, 65535)]
)
def test_integer_heatmaps_round_to_nearest_and_saturate_exactly(encoding, dtype, scale):
    """Both integer encodings by one rule: below 0 -> 0 (not |score|), above 1 -> the maximum,
    NaN -> 0 without a warning, else the nearest integer to score x scale. The float32
    neighbours of each half-way point (k + 0.5) / scale decide the rounding; the only exact tie
    (float32 x 255 or 65535 is exact in float64) is score 0.5, rounded half to even."""
    post = Postprocessor(small_bundle())
    edges = np.array([-0.1, -0.0, 0.0, 1.0, 1.2, 7.0, np.nan], np.float32)
    assert post.heatmap(edges[None], encoding).tolist() == [[0, 0, 0, scale, scale, scale, 0]]
    halfway = ((np.arange(scale, dtype=np.float64) + 0.5) / scale).astype(np.float32)
    near = np.concatenate(
        [
            np.nextafter(halfway, np.float32(0)),
            halfway,
            np.nextafter(halfway, np.float32(1)),
            np.linspace(0, 1, 1001, dtype=np.float32),
        ]
    )
    exact = np.rint(near.astype(np.float64) * scale)  # float32 x scale is exact in float64
    ties = np.abs(exact - near.astype(np.float64) * scale) == 0.5
    assert near[ties].tolist() == [0.5] * ties.sum() and exact[ties][0] % 2 == 0  # half to even
    out = np.empty(near.shape, dtype)[None]
    with np.errstate(all="raise"):
        result = post.heatmap(near[None], encoding, out)
    assert result is out  # written into the given buffer (the message's), not a scratch one
    assert result.dtype == dtype and np.array_equal(result[0], exact.astype(dtype))
    k = np.tile(np.arange(scale), 3)  # each half-way point's lower integer
    assert set(exact[: 3 * scale] - k) == {0.0, 1.0}  # rounded down and up near the .5 points
    assert post.heatmap(near[None], "32FC1").tobytes() == near.tobytes()


def test_cleanup_and_shutdown_close_the_backend(ros, camvid_bundle, monkeypatch):
    """The backend's close() (TensorRT: CUDA buffers, stream) runs on each release, once the
    worker is joined; a backend without close() is simply dropped."""
    from nflowjs_perception import perception_node

    opened = []

    class RecordingBackend:
        def __init__(self, backend):
            self.backend, self.closed = backend, 0
            self.name, self.device, self.bundle = backend.name, backend.device, backend.bundle

        def infer(self, rgb):
            return self.backend.infer(rgb)

        def close(self):
            self.closed += 1

    real_open = perception_node.open_backend

    def recording_open(*args, **kwargs):
        opened.append(RecordingBackend(real_open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(perception_node, "open_backend", recording_open)
    node = perception_node.PerceptionNode(
        parameter_overrides=[
            Parameter("model", value=str(camvid_bundle)),
            Parameter("backend", value="onnxruntime"),
        ]
    )
    try:
        for _ in range(2):  # configure / cleanup cycles: each backend closed, none leaked
            node.trigger_configure()
            node.trigger_activate()
            node.trigger_deactivate()
            assert opened[-1].closed == 0  # inactive keeps the model
            node.trigger_cleanup()
            assert node.state == "unconfigured" and opened[-1].closed == 1
        node.trigger_configure()
        node.trigger_activate()
        node.close()  # shutdown from active: worker joined, then the backend closed
        assert [b.closed for b in opened] == [1, 1, 1]
    finally:
        node.destroy_node()
