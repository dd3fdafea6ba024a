"""Node overhead benchmark: what perception_node costs around the model, at 2 MP.

``python -m nflowjs_perception.node_bench`` runs the real node in this process with a backend that
returns precomputed outputs (so only the node's own work is timed) while a driver process
publishes camera frames over Fast DDS and subscribes to every output (so no output is skipped
as unsubscribed). It prints a table: per-frame p50/p99 of each stage, the node's total
(callback entry -> last output published), transport (header stamp -> callback), and a plain
numpy copy of the same bytes (one frame in, the subscribed outputs out) timed in the same run;
for all four outputs, then for the two a planner needs, then for the obstacle mask alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from nflowjs_perception.bundle import Bundle, BundleClass
from nflowjs_perception.dds import use_single_host_transport
from nflowjs_perception.image_messages import fill_image
from nflowjs_perception.perception_node import OUTPUTS, PerceptionNode
from nflowjs_perception.postprocess import Postprocessor

CLASSES = 19  # Cityscapes-sized palette; road (0) drivable
DISCOVERY_TIMEOUT_S = 60.0
WARM_UP_SETTLE_S = 1.0  # between the last warm-up frame and the first measured one


def synthetic_scene(height: int, width: int, seed: int = 0):
    """A camera frame and model outputs that look like a road scene with two small obstacles."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 32, width // 32, 3), dtype=np.uint8)
    frame = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    labels = cv2.resize(
        rng.integers(1, CLASSES, (height // 64, width // 64), dtype=np.uint8),
        (width, height),
        interpolation=cv2.INTER_NEAREST,
    )
    labels[height // 2 :] = 0  # road
    score = cv2.GaussianBlur(rng.random((height // 8, width // 8), dtype=np.float32), (0, 0), 2)
    score = cv2.resize(score * 0.6, (width, height), interpolation=cv2.INTER_LINEAR)
    for cx in (width // 3, 2 * width // 3):  # two obstacles on the road, ~0.5 % of the frame
        cv2.ellipse(score, (cx, 3 * height // 4), (width // 40, height // 30), 0, 0, 360, 0.95, -1)
    mask = (score >= 0.7).view(np.uint8)
    return frame, (labels, score, mask)


class PrecomputedBackend:
    name, device = "precomputed", "none"

    def __init__(self, bundle: Bundle, outputs):
        self.bundle, self.outputs = bundle, outputs

    def infer(self, rgb):
        return self.outputs


def bench_bundle(height: int, width: int) -> Bundle:
    classes = [BundleClass(i, f"class{i}", (11 * i, 255 - 11 * i, 7 * i)) for i in range(CLASSES)]
    return Bundle(
        name="precomputed", model_file="none", height=height, width=width, classes=classes,
        temperature=2.0, ood_threshold=0.7, drivable_class_ids=[0], unknown_id=CLASSES,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), files={"none": ""},
    )  # fmt: skip


class BenchNode(PerceptionNode):
    """perception_node with the precomputed backend instead of a bundle from disk."""

    def __init__(self, outputs, height: int, width: int, heatmap_encoding: str = "32FC1"):
        self._precomputed = (outputs, height, width)
        super().__init__(
            parameter_overrides=[
                rclpy.parameter.Parameter("model", value=os.getcwd()),
                rclpy.parameter.Parameter("heatmap_encoding", value=heatmap_encoding),
            ]
        )

    def _open_backend(self) -> None:
        outputs, height, width = self._precomputed
        self.bundle = bench_bundle(height, width)
        self.backend = PrecomputedBackend(self.bundle, outputs)
        self.threshold = self.bundle.ood_threshold


def drive(frames: int, height: int, width: int, rate: float, encoding: str, outputs) -> None:
    """The driver process: publishes ``frames`` camera frames, subscribes to ``outputs``."""
    rclpy.init()
    node = rclpy.create_node("bench_driver")
    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    for output in outputs:  # raw: the driver takes the bytes, not Python messages (less CPU)
        node.create_subscription(
            Image, f"/perception_node/{output}", lambda m: None, reliable, raw=True
        )
    publisher = node.create_publisher(
        Image, "/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    )
    frame, _ = synthetic_scene(height, width)
    if encoding == "bgr8":
        frame = frame[..., ::-1]
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin)
    spinner.start()
    # Best-effort frames are lost until discovery has finished on both sides, which can take
    # seconds on a loaded 2-core machine: send warm-up frames until the benchmark process has
    # seen the node process one and says "go" (run()), then the measured ones.
    go = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), go.set()), daemon=True).start()
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while not go.wait(0.1):
        publish(publisher, node, frame, encoding)
        if time.monotonic() > deadline:
            raise SystemExit("node_bench driver: no go from the benchmark process")
    time.sleep(WARM_UP_SETTLE_S)
    for _ in range(frames):
        publish(publisher, node, frame, encoding)
        time.sleep(1.0 / rate)
    time.sleep(1.0)
    executor.shutdown()
    spinner.join()
    rclpy.shutdown()


def publish(publisher, node, frame: np.ndarray, encoding: str) -> None:
    msg = Image()
    msg.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(fill_image(msg, msg.header, frame, encoding))


def copy_baseline(arrays: list[np.ndarray], repeats: int) -> list[float]:
    """Per-frame ms of copying the same bytes with numpy: the frame in, the outputs out."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for a in arrays:
            a.copy()
        times.append(1000 * (time.perf_counter() - started))
    return times


def _warm_up(executor, node: BenchNode, driver: subprocess.Popen, outputs) -> None:
    """Spin until the node has processed a warm-up frame with every output matched, then
    start the measured frames and forget the warm-up's numbers."""
    output_publishers = [node.outputs[o] for o in outputs]
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while node.stats.counts["processed"] == 0 or not all(
        p.get_subscription_count() for p in output_publishers
    ):
        executor.spin_once(timeout_sec=0.05)
        if time.monotonic() > deadline or driver.poll() is not None:
            driver.kill()
            raise RuntimeError(
                f"node_bench: no frame from the driver on ROS_DOMAIN_ID "
                f"{os.environ.get('ROS_DOMAIN_ID', '0')} within {DISCOVERY_TIMEOUT_S:.0f} s; "
                "check that DDS discovery works on this machine"
            )
    driver.stdin.write("go\n")
    driver.stdin.flush()
    settled = time.monotonic() + WARM_UP_SETTLE_S / 2  # the last warm-up frames get processed
    while time.monotonic() < settled:
        executor.spin_once(timeout_sec=0.05)
    node.stats.reset()


def run(
    frames: int,
    height: int,
    width: int,
    rate: float,
    encoding: str,
    outputs,
    heatmap_encoding: str = "32FC1",
) -> dict:
    """One configuration: the node's stage timings and the copy baseline, as p50/p99 ms."""
    use_single_host_transport()
    frame, results = synthetic_scene(height, width)
    rclpy.init()
    node = BenchNode(results, height, width, heatmap_encoding)
    node.trigger_configure()
    node.trigger_activate()
    driver = subprocess.Popen(
        [sys.executable, "-m", "nflowjs_perception.node_bench", "--driver",
         "--frames", str(frames), "--size", f"{height}x{width}", "--rate", str(rate),
         "--encoding", encoding, "--outputs", ",".join(outputs)],
        stdin=subprocess.PIPE, text=True,
    )  # fmt: skip
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        _warm_up(executor, node, driver, outputs)
        while driver.poll() is None:
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown()
    if driver.returncode != 0:
        raise RuntimeError(f"node_bench driver failed (exit {driver.returncode}); see above")
    labels, score, mask = results
    heatmap = Postprocessor(bench_bundle(height, width)).heatmap(score, heatmap_encoding)
    published = {"segmentation": labels, "ood_heatmap": heatmap, "obstacle_mask": mask}
    published["overlay"] = frame
    stats = {stage: list(v) for stage, v in node.stats.latency_ms.items()}
    stats["copy"] = copy_baseline([frame, *(published[o] for o in outputs)], 50)
    names = [f"ood_heatmap ({heatmap_encoding})" if o == "ood_heatmap" else o for o in outputs]
    row = {"outputs": ", ".join(names), **node.stats.counts}
    for stage, values in stats.items():
        if values:
            row[f"{stage}_p50"], row[f"{stage}_p99"] = np.percentile(values, [50, 99])
    return row


def format_table(rows: list[dict], height: int, width: int, encoding: str) -> str:
    lines = [
        f"perception_node overhead per frame at {width}x{height} {encoding} in (ms; model "
        "outputs precomputed, so inference costs nothing here)",
        "",
        "| outputs subscribed | decode | outputs built | publish | node total p50 | p99 "
        "| numpy copy of the same bytes | node / copy | transport p50 | frames (dropped) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['outputs']} | {r['preprocess_p50']:.2f} | {r['postprocess_p50']:.2f} "
            f"| {r['publish_p50']:.2f} | **{r['end_to_end_p50']:.2f}** | {r['end_to_end_p99']:.2f} "
            f"| {r['copy_p50']:.2f} | {r['end_to_end_p50'] / r['copy_p50']:.1f}x "
            f"| {r['transport_p50']:.2f} | {r['processed']} ({r['dropped']}) |"
        )
    return "\n".join(lines)


CONFIGURATIONS = (  # (outputs subscribed, heatmap_encoding)
    (tuple(OUTPUTS), "32FC1"),
    (tuple(OUTPUTS), "mono8"),
    (("obstacle_mask", "ood_heatmap"), "32FC1"),
    (("obstacle_mask", "ood_heatmap"), "mono8"),
    (("obstacle_mask",), "32FC1"),
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per configuration")
    parser.add_argument("--size", default="1024x2048", help="HxW")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second sent")
    parser.add_argument("--encoding", default="bgr8", choices=["bgr8", "rgb8"])
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    height, width = map(int, args.size.lower().split("x"))
    if args.driver:
        drive(args.frames, height, width, args.rate, args.encoding, args.outputs.split(","))
        return
    rows = [
        run(args.frames, height, width, args.rate, args.encoding, outputs, heatmap)
        for outputs, heatmap in CONFIGURATIONS
    ]
    print(format_table(rows, height, width, args.encoding))


if __name__ == "__main__":
    main()
