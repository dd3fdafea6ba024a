"""What the ROS 2 tests share: a colcon-built workspace, the node as a real process, spinning.

Each test module talks on its own ROS_DOMAIN_ID so modules (and other programs on the machine)
never see each other's topics, and uses Fast DDS's shared memory with segments that 2 MP images
need (``nflowjs_perception.dds``: everything here runs on one host).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from PIL import Image as PILImage
from sensor_msgs.msg import Image

from nflowjs_perception import dds

REPO = Path(__file__).resolve().parents[1]
SHARED_CAMVID = REPO.parent / "shared" / "data" / "camvid"
CAMVID_CHECKPOINT = REPO / "models" / "checkpoints" / "camvid-ood-ldn-effl0-nflowjs.pt"


def use_private_domain() -> int:
    """Pick a ROS domain for this process and the nodes it starts (before any node exists)."""
    # <= 101: on Linux, higher ids put DDS ports into the ephemeral range (ROS 2 docs).
    domain = random.Random(os.getpid() ^ time.monotonic_ns()).randint(1, 101)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ[dds.ENVIRONMENT_VARIABLE] = dds.SINGLE_HOST
    return domain


def colcon_build(workspace: Path, out: Path) -> Path:
    """``colcon build`` of ``workspace`` into ``out``; returns the install folder."""
    result = subprocess.run(
        [
            str(Path(os.sys.executable).with_name("colcon")),
            "build",
            "--base-paths",
            str(workspace / "src"),
            "--build-base",
            str(out / "build"),
            "--install-base",
            str(out / "install"),
        ],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout}\n{result.stderr}"
    return out / "install"


class NodeProcess:
    """``perception_node`` from a colcon install, started the way a user starts it."""

    def __init__(self, install: Path, log: Path, *ros_args: str):
        self.log = log
        # what `ros2 run nflowjs_perception perception_node` runs (PyPI has no ros2 CLI)
        executable = (
            install / "nflowjs_perception" / "lib" / "nflowjs_perception" / "perception_node"
        )
        command = f"source {install}/setup.bash && exec {executable} --ros-args " + " ".join(
            ros_args
        )
        self.process = subprocess.Popen(
            ["bash", "-c", command],
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0"),
            start_new_session=True,  # a process group of its own, for Ctrl-C as a terminal sends it
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_output(self, text: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.process.poll() is not None:
                return text in self.output()
            time.sleep(0.05)
        return False

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def spin_until(node, predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        rclpy.spin_once(node, timeout_sec=0.02)
    return predicate()


def camvid_frames(n: int = 2) -> list[np.ndarray]:
    """Real CamVid test frames (360x480 RGB) when the shared data is here, else smooth noise."""
    files = sorted((SHARED_CAMVID / "test" / "images").glob("*.jpg"))[:n]
    if files:
        return [np.asarray(PILImage.open(f).convert("RGB")) for f in files]
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (n, 24, 31, 3), dtype=np.uint8)
    return [np.ascontiguousarray(c.repeat(16, 0).repeat(16, 1)[:360, :480]) for c in coarse]


def image_message(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Image:
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = pixels.shape[:2]
    msg.encoding = encoding
    msg.step = pixels.strides[0]
    msg.data = pixels.tobytes()
    return msg


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def run_module(*args: str) -> subprocess.Popen:
    """``replay`` (play/record) as a process, on this process's ROS domain and transport."""
    return subprocess.Popen(
        [sys.executable, "-m", "nflowjs_perception.bag_tools.replay", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess:
    """A bag tool run to its end; on a domain of its own unless a test chose one (``context``)."""
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    env.setdefault(dds.ENVIRONMENT_VARIABLE, dds.SINGLE_HOST)
    return subprocess.run(
        [sys.executable, "-m", f"nflowjs_perception.bag_tools.{module}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def read_back(bag: Path) -> dict[str, list]:
    """topic -> [(log time, message)] read with rosbags, checked against the mcap reader."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.rosbag2 import Reader

    from nflowjs_perception.bag_tools.messages import deserialize

    topics: dict[str, list] = {}
    with Reader(bag) as reader:
        for conn, log_ns, raw in reader.messages():
            topics.setdefault(conn.topic, []).append((log_ns, deserialize(raw, conn.msgtype)))
    with next(bag.glob("*.mcap")).open("rb") as file:
        reader = make_reader(file, decoder_factories=[DecoderFactory()])
        counts: dict[str, int] = {}
        for _, channel, _message, _ in reader.iter_decoded_messages(log_time_order=True):
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
    assert counts == {topic: len(messages) for topic, messages in topics.items()}
    return topics
