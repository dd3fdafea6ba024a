"""2 MP camera frames between two processes: how many arrive, and how late, per DDS setting.

``python -m nflowjs_perception.transport_bench --setting profile`` publishes 2048x1024 ``bgr8``
frames (6.3 MB) best effort (the camera QoS) at ``--rate`` Hz from this process to a subscriber
in a child process, both on the same ``--setting``, and prints delivered/sent and the transport
latency (header stamp to the subscriber's callback, rclpy's copy into Python included). The
transport table in docs/ros-node.md comes from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from nflowjs_perception import dds

TOPIC = "/camera/image_raw"
SETTINGS = ("profile", "large_data", "single_host", "default")
DISCOVERY_TIMEOUT_S = 30.0
DRAIN_S = 2.0  # after the last frame, for late deliveries


def environment(setting: str, environ=None) -> dict[str, str]:
    """This process's environment with only ``setting``'s Fast DDS transport variables."""
    env = {k: v for k, v in (environ or os.environ).items() if k not in dds.TRANSPORT_VARIABLES}
    if setting == "profile":
        env[dds.PROFILE_VARIABLE] = str(dds.profile_path())
    elif setting == "large_data":
        env[dds.ENVIRONMENT_VARIABLE] = "LARGE_DATA"
    elif setting == "single_host":
        env[dds.ENVIRONMENT_VARIABLE] = dds.SINGLE_HOST
    return env


def subscribe(frames: int, timeout: float) -> None:
    """Child: count frames and their latency until ``frames`` arrived or ``timeout``; JSON out."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("transport_bench_subscriber")
    latencies: list[float] = []

    def on_image(msg: Image) -> None:
        sent_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies.append((time.time_ns() - sent_ns) / 1e6)

    node.create_subscription(Image, TOPIC, on_image, qos_profile_sensor_data)
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    while len(latencies) < frames and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps(latencies), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def publish(setting: str, frames: int, rate: float, height: int, width: int) -> dict:
    """Parent: start the subscriber, wait for it to match, send ``frames`` frames; the counts."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    env = environment(setting)
    os.environ.clear()
    os.environ.update(env)  # this process too: Fast DDS reads the variables at rclpy.init
    duration = frames / rate + DISCOVERY_TIMEOUT_S + DRAIN_S
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nflowjs_perception.transport_bench",
            "--subscribe",
            str(frames),
            "--timeout",
            str(duration),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout.readline().strip() == "ready"
    rclpy.init()
    node = rclpy.create_node("transport_bench_publisher")
    publisher = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # matched on discovery; let the data path settle before the first frame
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg = Image(height=height, width=width, encoding="bgr8", step=width * 3)
    msg.data = pixels.tobytes()
    period = 1.0 / rate
    start = time.monotonic()
    for i in range(frames):
        time.sleep(max(0.0, start + i * period - time.monotonic()))
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        publisher.publish(msg)
    out, _ = child.communicate(timeout=duration + 30)
    node.destroy_node()
    rclpy.shutdown()
    latencies = json.loads(out.strip().splitlines()[-1])
    result = {"setting": setting, "sent": frames, "delivered": len(latencies)}
    if latencies:
        result.update(
            p50_ms=round(float(np.percentile(latencies, 50)), 2),
            p99_ms=round(float(np.percentile(latencies, 99)), 2),
        )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=SETTINGS, default="profile")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second")
    parser.add_argument("--size", default="1024x2048", help="HEIGHTxWIDTH")
    parser.add_argument("--subscribe", type=int, help=argparse.SUPPRESS)  # the child's role
    parser.add_argument("--timeout", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscribe is not None:
        subscribe(args.subscribe, args.timeout)
        return
    height, width = map(int, args.size.split("x"))
    print(json.dumps(publish(args.setting, args.frames, args.rate, height, width)))


if __name__ == "__main__":
    main()
