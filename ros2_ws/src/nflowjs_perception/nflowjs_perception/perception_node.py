"""``perception_node``: camera images in; segmentation, OOD heatmap, obstacle mask, overlay out.

Threads: the executor thread only receives (a one-slot mailbox keeps the newest frame, so frames
never queue behind a slow model; a frame replaced before it was processed counts as a drop), one
worker thread decodes, runs the backend, post-processes and publishes. Outputs carry the input's
header unchanged; an output nobody subscribes to costs nothing but a subscriber-count check.
"""

from __future__ import annotations

import copy
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from nflowjs_perception.backends import open_backend
from nflowjs_perception.dds import transport_warning, use_shipped_profile
from nflowjs_perception.direct_publish import publish_image, unavailable_reason
from nflowjs_perception.image_messages import (
    FrameError,
    OutputImage,
    compressed_to_rgb,
    image_to_rgb,
)
from nflowjs_perception.node_stats import NodeStats, warnings_from
from nflowjs_perception.parameters import BUNDLE_THRESHOLD, StartupError, check, declare
from nflowjs_perception.postprocess import Postprocessor, to_input_size, to_model_size

OUTPUTS = {  # topic (under ~/) -> encoding (the heatmap's: parameter heatmap_encoding)
    "segmentation": "mono8",
    "ood_heatmap": "32FC1",
    "obstacle_mask": "mono8",
    "overlay": "rgb8",
}
HEATMAP_DTYPES = {"32FC1": np.float32, "mono8": np.uint8, "16UC1": np.uint16}
LOG_EVERY_S = 5.0  # bad-input warnings of one kind at most this often
MAX_TRANSPORT_MS = 60_000.0  # a stamp older than this is not a transport time
# ROS 2's standard QoS overrides (reliability, depth, history) on the inputs and outputs:
# read-only parameters qos_overrides.<topic>.<publisher|subscription>.<policy>, set in a params file
QOS_OVERRIDES = QoSOverridingOptions.with_default_policies()
OVERRIDABLE = {"RELIABILITY", "HISTORY", "DEPTH"}  # the policies QOS_OVERRIDES offers
# Longest wait for the frame in work when stopping. ros2 launch sends SIGINT, SIGTERM 5 s later
# and SIGKILL 5 s after that: 4 s leaves time to destroy the node and exit inside the first 5 s.
# A frame slower than that (a big CPU model) fails the transition instead (see _stop).
WORKER_JOIN_S = 4.0
QOS_WARN_S = 30.0  # an incompatible-QoS event stays in diagnostics this long after the last one


class LatestFrame:
    """One-slot mailbox between the subscription and the worker: the newest frame wins."""

    def __init__(self):
        self._ready = threading.Condition()
        self._item = None
        self._closed = False

    def put(self, item) -> bool:
        """Store ``item``; True if it replaced a frame the worker had not taken (a drop)."""
        with self._ready:
            replaced = self._item is not None
            self._item = item
            self._ready.notify()
        return replaced

    def take(self):
        """The newest frame, waiting for one; None once closed (a pending frame is dropped)."""
        with self._ready:
            while self._item is None and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class Activation:
    """What one activation's worker uses. The worker holds its own references, so a stop that
    outlived its join timeout, a cleanup (backend None) or the next activation never changes
    them under a frame in work."""

    def __init__(self, node: PerceptionNode):
        self.mailbox = LatestFrame()
        self.backend, self.bundle, self.post = node.backend, node.bundle, node.post
        self.outputs: dict = {}  # filled one publisher at a time, so a failure leaks none
        self.messages = {name: OutputImage(Image, encoding) for name, encoding in OUTPUTS.items()}
        self.camera_info_out = None
        self.busy = False  # a frame is in work (read by _stop, for its log line)


class PerceptionNode(LifecycleNode):
    """A managed node (REP 2000's lifecycle, as Nav2 and yolo_ros use it).

    unconfigured: parameters declared, /diagnostics reports the state. configure: the bundle and
    backend are opened (a first-start TensorRT build happens here). activate: output publishers,
    input subscription and the worker start. deactivate: they stop, the model stays loaded.
    cleanup / shutdown: everything is released. ``main`` drives it to active when ``autostart``.
    """

    def __init__(self, **node_options):
        super().__init__("perception_node", **node_options)
        try:
            self.settings = declare(self)
        except StartupError:
            # Destroyed now, not by the garbage collector after rclpy's shutdown, which can
            # crash the process (seen once as SIGSEGV instead of the exit code 1).
            self.destroy_node()
            raise
        self.backend = self.bundle = self.post = None
        self.transition_error = ""  # why the last configure or activate failed ('' if none)
        self.stats = NodeStats()
        self._last_warning: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.outputs: dict = {}
        self._run: Activation | None = None
        self._input = None
        self._worker = None
        self._last_input = time.monotonic()  # last frame received, or activation
        self._input_timed_out = False
        self._incompatible_qos = ("", 0.0)  # (policy, monotonic time) of the last mismatch
        self._camera_info = None  # the latest on camera_info_topic; its header is replaced
        self._camera_info_in = None
        self._camera_info_missing_said = False
        self.camera_info_topic = self._camera_info_topic()
        self.input_topic = self._input_topic()
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Wall time, not the ROS clock: with use_sim_time, diagnostics must not stop with /clock.
        self.create_timer(
            self.settings["diagnostics_period"],
            self._publish_diagnostics,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

    @property
    def state(self) -> str:
        """The lifecycle state's label: unconfigured, inactive, active, finalized..."""
        return self._state_machine.current_state[1]

    # -- lifecycle transitions (executor thread) ------------------------------------------------

    def on_configure(self, state) -> TransitionCallbackReturn:
        self.get_logger().info(
            f"configuring: opening {self.settings['model']!r} on {self.settings['backend']} "
            "(a TensorRT engine built on first start takes minutes)"
        )
        try:
            self._open_backend()
        except StartupError as error:
            self._close_backend()  # opened, then refused (a temperature the graph cannot take)
            self.bundle = None
            return self._failed("configure", error)
        self.transition_error = ""
        self.post = Postprocessor(self.bundle)
        if getattr(self.backend, "fallback_reason", ""):
            self.get_logger().warning(f"backend auto: {self.backend.fallback_reason}")
        warning = transport_warning()
        if warning:
            self.get_logger().warning(warning)
        self.get_logger().info(
            f"bundle {self.bundle.name!r} ({self.bundle.height}x{self.bundle.width}) on "
            f"{self.backend.name} ({self._device_text()}); OOD threshold {self.threshold:.6g}; "
            f"input {self.input_topic}"
        )
        if self._device_mismatch():
            self.get_logger().warning(self._device_mismatch())
        return TransitionCallbackReturn.SUCCESS

    def _device_text(self) -> str:
        provider = getattr(self.backend, "provider", "")
        return f"{self.backend.device}, {provider}" if provider else self.backend.device

    def _device_mismatch(self) -> str:
        """Why the model runs elsewhere than ``device`` asked, or ''."""
        asked = self.settings["device"]
        if not asked or asked == self.backend.device:
            return ""
        return (
            f"device = {asked!r}, but {self.backend.name} runs the model on "
            f"{self.backend.device} ({getattr(self.backend, 'provider', '') or 'its choice'}); "
            "install a CUDA-enabled build (onnxruntime-gpu) or set device to "
            f"{self.backend.device!r}"
        )

    def _failed(self, transition: str, error: Exception) -> TransitionCallbackReturn:
        """Keep and log why a transition failed: rclpy swallows exceptions in transition
        callbacks without a word, and with autostart main() says it as the one FATAL line."""
        self.transition_error = f"{transition} failed: {error}"
        if not self.settings["autostart"]:
            self.get_logger().error(self.transition_error)
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state) -> TransitionCallbackReturn:
        if self._worker is not None:  # it outlived the last stop and still publishes
            return self._failed("activate", RuntimeError(self._worker_busy_text()))
        self._incompatible_qos = ("", 0.0)
        self.stats.reset()  # the last activation's latencies and counts are not this one's
        self._run = run = Activation(self)
        try:
            for name in OUTPUTS:  # a profile each: a QoS override changes the profile it is given
                run.outputs[name] = self._create("publisher", Image, f"~/{name}", output_qos())
            self.outputs = run.outputs
            run.camera_info_out = self._create(
                "publisher", CameraInfo, "~/camera_info", output_qos()
            )
            self._subscribe_input(run.mailbox)
        except Exception as error:  # a bad qos_overrides value, most likely
            self._stop()  # what was created before the failure
            return self._failed("activate", error)
        slow_path = unavailable_reason()  # checked once, before the worker first publishes
        self._worker = threading.Thread(
            target=self._work, args=(run,), name="inference", daemon=True
        )
        self._worker.start()
        self.transition_error = ""
        path = (
            "straight from their buffers (rcl_publish)"
            if slow_path is None
            else f"through rclpy's copy ({slow_path})"
        )
        self.get_logger().info(
            f"active: subscribed to {self.input_topic} and {self.camera_info_topic}; "
            f"outputs published {path}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        if not self._stop():
            return TransitionCallbackReturn.FAILURE  # still active: try again
        self.get_logger().info("inactive: input and outputs stopped, model kept")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        stopped = self._stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS if stopped else TransitionCallbackReturn.FAILURE

    def on_error(self, state) -> TransitionCallbackReturn:
        # After an exception in a transition (ours catch theirs): everything released, back to
        # unconfigured. model, backend and device are read-only, so configure again only helps
        # when the cause was outside the node (a bundle folder repaired in place); else restart.
        stopped = self._stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS if stopped else TransitionCallbackReturn.FAILURE

    def _stop(self) -> bool:
        """Inputs first (nothing new arrives), then the worker (its frame finishes), then outputs.

        False when the frame in work outlives WORKER_JOIN_S: its thread and the publishers it
        still uses are kept (destroying them under it would fail its publish), the transition
        fails and may be tried again. Each handle is released on its own, so a partly failed
        activate is undone too.
        """
        for name in ("_input", "_camera_info_in"):
            if getattr(self, name) is not None:
                self.destroy_subscription(getattr(self, name))
                setattr(self, name, None)
        self._camera_info, self._camera_info_missing_said = None, False
        if self._worker is not None:
            run = self._run
            run.mailbox.close()
            if run.busy:
                self.get_logger().info("stopping: waiting for the frame in work")
            self._worker.join(timeout=WORKER_JOIN_S)
            if self._worker.is_alive():
                self.get_logger().error(self._worker_busy_text())
                return False
            self._worker = None
        if self._run is not None:
            for publisher in (*self._run.outputs.values(), self._run.camera_info_out):
                if publisher is not None:
                    self.destroy_publisher(publisher)
            self._run = None
        self.outputs = {}
        return True

    def _worker_busy_text(self) -> str:
        return (
            f"the frame in work has taken more than WORKER_JOIN_S = {WORKER_JOIN_S:g} s (a model "
            "this slow on this device?); its outputs are kept until it ends: try again later"
        )

    def _release(self) -> None:
        self._close_backend()
        self.bundle = self.post = None
        self._camera_info, self._camera_info_missing_said = None, False

    def _close_backend(self) -> None:
        """Drop the backend and free what it holds (TensorRT: CUDA buffers and stream).

        Only once the worker is joined: the outputs it publishes are views of those buffers. A
        worker that outlived its join keeps the backend; it is dropped unclosed then.
        """
        backend, self.backend = self.backend, None
        close = getattr(backend, "close", None)
        if close is None:
            return
        if self._worker is not None:
            self.get_logger().warning(
                "the backend is not closed: the frame in work still uses its buffers"
            )
            return
        try:
            close()
        except Exception as error:  # a failed free must not fail the transition
            self.get_logger().error(f"closing the backend failed: {error}")

    def close(self) -> None:
        """Stop and release everything (the shutdown transition where the state allows one)."""
        if self.state in ("unconfigured", "inactive", "active"):
            self.trigger_shutdown()
        else:
            self._stop()
            self._release()

    # -- start-up ---------------------------------------------------------------------------

    def _open_backend(self) -> None:
        s = self.settings
        try:
            self.backend = open_backend(
                s["model"],
                s["backend"],
                s["device"] or None,
                **self._tensorrt_options(),
            )
        except (ValueError, RuntimeError, OSError, ImportError) as error:  # BundleError: ValueError
            raise StartupError(f"cannot load model bundle {s['model']!r}: {error}") from error
        self.bundle = self.backend.bundle
        t = s["temperature"]
        if t and t != self.bundle.temperature and not self.bundle.temperature_overridable:
            raise StartupError(
                f"temperature = {t}, but bundle {self.bundle.name!r} has T = "
                f"{self.bundle.temperature} built into its graph; set temperature to 0 (the "
                "bundle's) or re-export the bundle with `--temperature`"
            )
        reason = self._unknown_operating_point(s["operating_point"]) or _both_thresholds(s)
        if reason:
            raise StartupError(reason)
        self.threshold = self._threshold(s)

    def _unknown_operating_point(self, name: str) -> str | None:
        if self.bundle is None:  # unconfigured: configure checks it against the bundle
            return None
        points = self.bundle.operating_points
        if name and name not in points:
            return (
                f"operating_point = {name!r} is not in bundle {self.bundle.name!r}; it has "
                f"{sorted(points) or 'none (re-export it with --threshold-from)'}"
            )
        return None

    def _threshold(self, settings: dict) -> float:
        """ood_threshold when set, else the named operating point, else the bundle's default."""
        if settings["ood_threshold"] != BUNDLE_THRESHOLD:
            return settings["ood_threshold"]
        if settings["operating_point"]:
            return self.bundle.operating_points[settings["operating_point"]]["threshold"]
        return self.bundle.ood_threshold

    def _tensorrt_options(self) -> dict:
        s = self.settings
        if s["backend"] not in ("auto", "tensorrt"):
            return {}
        cache = Path(s["engine_cache_dir"]).expanduser() if s["engine_cache_dir"] else None
        return {
            "engine_cache_dir": cache,
            "build_if_missing": s["build_engine_if_missing"],
            "progress": self.get_logger().info,  # a first-start engine build takes minutes
        }

    def _input_topic(self) -> str:
        base = self.resolve_topic_name("image")  # remappings of `image` apply to both transports
        return f"{base}/compressed" if self.settings["image_transport"] == "compressed" else base

    def _camera_info_topic(self) -> str:
        """image_transport's convention: ``camera_info`` beside the (remapped) image topic."""
        image = self.resolve_topic_name("image")
        return f"{image.rsplit('/', 1)[0]}/camera_info"

    def _subscribe_input(self, mailbox: LatestFrame) -> None:
        s = self.settings
        reliability = (
            ReliabilityPolicy.RELIABLE if s["reliable_input"] else ReliabilityPolicy.BEST_EFFORT
        )
        # Sensor-data QoS (REP 2003) with depth 1: a slow model never works through a backlog.
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability)
        if s["image_transport"] == "compressed":
            message_type, decode = CompressedImage, compressed_to_rgb
        else:
            message_type, decode = Image, image_to_rgb
        self._input = self._create(
            "subscription",
            message_type,
            self.input_topic,
            self._receiver(decode, mailbox),
            qos,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos),
        )
        self._last_input, self._input_timed_out = time.monotonic(), False
        self._camera_info_in = self._create(
            "subscription",
            CameraInfo,
            self.camera_info_topic,
            self._on_camera_info,
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=qos.reliability),
        )

    def _create(self, kind: str, message_type, topic: str, *args, **kwargs):
        """create_publisher or create_subscription with the QoS overrides; a bad override value
        is reported with the parameter it came from (rclpy names only the policy)."""
        create = self.create_publisher if kind == "publisher" else self.create_subscription
        try:
            return create(
                message_type, topic, *args, qos_overriding_options=QOS_OVERRIDES, **kwargs
            )
        except (RuntimeError, ValueError) as error:  # "Unexpected QoS override for policy ..."
            name = f"qos_overrides.{self.resolve_topic_name(topic)}.{kind}"
            raise StartupError(f"{name}: {error}") from error

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg  # one reference assignment: the worker reads it without a lock

    def _on_incompatible_qos(self, event) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        self._incompatible_qos = (policy, time.monotonic())
        if policy in OVERRIDABLE:
            fix = f"set qos_overrides.{self.input_topic}.subscription.{policy.lower()}"
            if policy == "RELIABILITY":
                fix += " or reliable_input"
        else:  # not offered as an override here: only the publisher can change it
            fix = f"the publisher must change its {policy.lower()} to one this subscription accepts"
        self.get_logger().warning(
            f"a publisher on {self.input_topic} offers QoS incompatible with this subscription "
            f"({policy}; {event.total_count} so far): its frames never arrive. Fix: {fix}"
        )

    # -- receive (executor thread) ------------------------------------------------------------

    def _receiver(self, decode, mailbox: LatestFrame):
        def receive(msg) -> None:
            received = time.perf_counter()
            self._last_input = time.monotonic()
            self.stats.count("received")
            if mailbox.put((msg, decode, received, self._transport_ms(msg.header.stamp))):
                self.stats.count("dropped")

        return receive

    def _transport_ms(self, stamp) -> float | None:
        """Header stamp -> now, or None where that is no transport time: an unset or negative
        stamp, a bag's recorded time, a clock on another machine more than a minute off."""
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        return ms if stamp_ns > 0 and 0.0 <= ms <= MAX_TRANSPORT_MS else None

    # -- process (worker thread) --------------------------------------------------------------

    def _work(self, run: Activation) -> None:
        while (item := run.mailbox.take()) is not None:
            run.busy = True
            try:
                self._process(run, *item)
            except FrameError as error:
                self.stats.count("bad")
                self._warn(error.kind, f"dropped a frame on {self.input_topic}: {error}")
            except Exception as error:  # the node outlives any single frame
                self.stats.count("failed")
                self._warn("failure", f"frame failed in {run.backend.name}: {error!r}")
            finally:
                run.busy = False

    def _process(
        self, run: Activation, msg, decode, received: float, transport_ms: float | None
    ) -> None:
        started = time.perf_counter()
        rgb = decode(msg)
        height, width = rgb.shape[:2]
        if run.bundle.dynamic_size:
            model_input = np.ascontiguousarray(rgb)
        else:
            model_input = to_model_size(rgb, run.bundle.height, run.bundle.width)
        inferred = time.perf_counter()
        labels, score, mask = run.backend.infer(model_input)
        done = time.perf_counter()

        threshold = self.threshold
        resized = labels.shape != (height, width)
        if resized:
            labels, score = to_input_size(labels, score, height, width)
        if resized or threshold != run.bundle.ood_threshold:
            # the mask of what is published: exactly the heatmap's pixels at or above the threshold
            mask = np.greater_equal(score, threshold).view(np.uint8)
        messages = self._outputs(run, msg.header, rgb, labels, score, mask)
        converted = time.perf_counter()
        for name, message in messages.items():
            publish_image(run.outputs[name], message)
        self._publish_camera_info(run, msg.header, height, width)
        published = time.perf_counter()
        timings = {
            "preprocess": 1000 * (inferred - started),
            "inference": 1000 * (done - inferred),
            "postprocess": 1000 * (converted - done),
            "publish": 1000 * (published - converted),
            "end_to_end": 1000 * (published - received),
        }
        if transport_ms is not None:
            timings["transport"] = transport_ms
        self.stats.record(timings)

    def _publish_camera_info(self, run: Activation, header, height: int, width: int) -> None:
        """The input's camera_info stamped like the outputs: they are at the input resolution,
        so the intrinsics hold for them unchanged. Missing camera_info never holds outputs back."""
        info = self._camera_info
        if info is None:
            if not self._camera_info_missing_said:
                self._camera_info_missing_said = True
                topic = self.camera_info_topic  # derived and absolute: remap it by that name
                self.get_logger().warning(
                    f"no camera_info on {topic}: outputs go out without ~/camera_info until one "
                    f"arrives (published elsewhere? remap it: -r {topic}:=/your/camera_info)"
                )
            return
        if (info.height, info.width) != (height, width):
            self._warn(
                "camera_info",
                f"camera_info on {self.camera_info_topic} is {info.width}x{info.height}, the "
                f"image {width}x{height}: ~/camera_info passes it on unchanged",
            )
        stamped = copy.copy(info)  # shallow: only the header is replaced
        stamped.header = header
        run.camera_info_out.publish(stamped)

    def _outputs(self, run: Activation, header, rgb, labels, score, mask) -> dict[str, Image]:
        """The subscribed outputs, each computed straight into its message's buffer."""
        wanted = {n for n, p in run.outputs.items() if p.get_subscription_count() > 0}
        shape = labels.shape

        def target(name: str, dtype, channels: int = 1):
            if name not in wanted:
                return None  # computed into the postprocessor's buffer, if needed at all
            return run.messages[name].pixels(shape if channels == 1 else (*shape, channels), dtype)

        images = {}
        if wanted & {"segmentation", "overlay"}:
            images["segmentation"] = run.post.segmentation(
                labels, mask, target("segmentation", np.uint8)
            )
            if "overlay" in wanted:
                images["overlay"] = run.post.overlay(
                    rgb,
                    images["segmentation"],
                    self.overlay_opacity,
                    target("overlay", np.uint8, 3),
                )
        if "ood_heatmap" in wanted:
            encoding = self.settings["heatmap_encoding"]  # may change at run time
            run.messages["ood_heatmap"].encoding = encoding
            images["ood_heatmap"] = run.post.heatmap(
                score, encoding, target("ood_heatmap", HEATMAP_DTYPES[encoding])
            )
        if "obstacle_mask" in wanted:
            images["obstacle_mask"] = run.post.obstacle_mask(
                labels, mask, self.min_obstacle_area, target("obstacle_mask", np.uint8)
            )
        return {name: run.messages[name].fill(header, images[name]) for name in wanted}

    def _warn(self, kind: str, text: str) -> None:
        """Log ``text`` unless a message of the same kind went out in the last LOG_EVERY_S."""
        now = time.monotonic()
        if now - self._last_warning.get(kind, -LOG_EVERY_S) < LOG_EVERY_S:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            text += f" ({suppressed} more like it since the last message)"
        self._last_warning[kind] = now
        self.get_logger().warning(text)

    # -- parameters and diagnostics (executor thread) -----------------------------------------

    @property
    def overlay_opacity(self) -> float:
        return self.settings["overlay_opacity"]

    @property
    def min_obstacle_area(self) -> int:
        return self.settings["min_obstacle_area"]

    def _on_set_parameters(self, params) -> SetParametersResult:
        ours = [p for p in params if p.name in self.settings]  # use_sim_time is rclpy's
        for p in ours:  # all or nothing: one bad value rejects the whole request
            reason = check(p.name, p.value)
            if p.name == "operating_point":
                reason = reason or self._unknown_operating_point(p.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        reason = _both_thresholds({**self.settings, **{p.name: p.value for p in ours}})
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        for p in ours:
            self.settings[p.name] = p.value
        if self.bundle is not None:
            self.threshold = self._threshold(self.settings)
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        if self.bundle is None or self.state != "active":
            self._publish_status(
                DiagnosticStatus.WARN,
                f"{self.state}: not processing images"
                + (f" ({self.transition_error})" if self.transition_error else ""),
                {"lifecycle_state": self.state},
            )
            return
        summary = self.stats.summary()
        s = self.settings
        warnings = warnings_from(summary, s["max_drop_rate"], s["latency_budget_ms"])
        silent_s = time.monotonic() - self._last_input
        if silent_s > s["input_timeout"]:
            warnings.insert(0, f"no images on {self.input_topic} for {silent_s:.0f} s")
            if not self._input_timed_out:  # one line per silence, not one per report
                self._input_timed_out = True
                self.get_logger().warning(
                    f"no images on {self.input_topic} for input_timeout = {s['input_timeout']:g} "
                    "s: check the camera driver, the topic remapping and the QoS"
                )
        else:
            self._input_timed_out = False
        if self._device_mismatch():
            warnings.append(self._device_mismatch())
        policy, when = self._incompatible_qos
        if policy and time.monotonic() - when < QOS_WARN_S:  # the event comes once per publisher
            warnings.append(f"a publisher on {self.input_topic} has incompatible QoS ({policy})")
        level = DiagnosticStatus.WARN if warnings else DiagnosticStatus.OK
        message = "; ".join(warnings) or (
            f"{summary['input_fps']:.1f} fps in, {summary['processed_fps']:.1f} fps processed"
        )
        if summary["input_fps"] > 0 and summary["processed_fps"] == 0:
            level = DiagnosticStatus.ERROR
            message = "; ".join(["images arrive but none is processed", *warnings])
        values = {
            "lifecycle_state": self.state,
            "backend": self.backend.name,
            "device": self._device_text(),
            "bundle": self.bundle.name,
            "model_size": f"{self.bundle.height}x{self.bundle.width}",
            "input_topic": self.input_topic,
            "camera_info": "received" if self._camera_info else f"none on {self.camera_info_topic}",
            "ood_threshold": f"{self.threshold:.6g}",
            **{k: f"{v:.2f}" for k, v in summary.items()},
        }
        self._publish_status(level, message, values)

    def _publish_status(self, level, message: str, values: dict) -> None:
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: inference",
            message=message,
            hardware_id=self.bundle.name if self.bundle else self.settings["model"],
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics.publish(array)


def output_qos() -> QoSProfile:
    """Reliable, keep last 1: best-effort and reliable subscribers (RViz's default) both match."""
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)


def _both_thresholds(settings: dict) -> str | None:
    """A named operating point with ood_threshold set too: one of them would be ignored."""
    if settings["operating_point"] and settings["ood_threshold"] != BUNDLE_THRESHOLD:
        return (
            f"operating_point = {settings['operating_point']!r} and ood_threshold = "
            f"{settings['ood_threshold']} both set a threshold; set ood_threshold to -1.0 to use "
            "the operating point, or operating_point to '' to use ood_threshold"
        )
    return None


def main(args=None) -> int:
    # rclpy's own SIGINT/SIGTERM handlers shut the context down at once, while the worker may be
    # publishing (RCLError "publisher's context is invalid"), and Python's turns Ctrl-C into a
    # KeyboardInterrupt wherever the main thread is. Ours only ask the spin loop to stop; the
    # worker is joined, the node destroyed, and only then the context shut down.
    use_shipped_profile()  # `ros2 run` too, not only the launch file; a user's choice is kept
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        node = PerceptionNode()
    except StartupError as error:
        rclpy.logging.get_logger("perception_node").fatal(str(error))
        rclpy.try_shutdown()
        return 1
    if node.settings["autostart"] and not _autostart(node):
        rclpy.logging.get_logger("perception_node").fatal(node.transition_error)
        node.destroy_node()
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        # spin_once returns at least every 0.1 s to see `stop`; a node shut down over its
        # lifecycle services (finalized) has nothing left to do, so the process ends too.
        while not stop.is_set() and node.state != "finalized":
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _autostart(node: PerceptionNode) -> bool:
    """Configure and activate, as Nav2's lifecycle manager does with autostart."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return False
    return node.trigger_activate() == TransitionCallbackReturn.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
