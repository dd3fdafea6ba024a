"""Bag play and record with real rclpy and Fast DDS: in this process and in subprocesses.

Each test runs on its own random ROS_DOMAIN_ID (passed to its subprocesses) so tests and other
ROS processes on the machine do not hear each other.
"""

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from conftest import write_fake_camvid
from nflowjs_perception import dds
from nflowjs_perception.bag_tools import convert, frames, player, replay
from nflowjs_perception.bag_tools.bagread import BagError
from nflowjs_perception.bag_tools.messages import (
    IMAGE_TOPIC,
    OOD_MASK_TOPIC,
    header_stamp_ns,
    image_array,
    stamp_ns,
)
from ros_support import read_back, run_module, wait_until

BEST_EFFORT_1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
RELIABLE_10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class Spinning:
    """Spin ``node`` in a thread for the duration of a with-block."""

    def __init__(self, node: Node):
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self):
        while not self.done.is_set():
            self.executor.spin_once(timeout_sec=0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.executor.shutdown()


def camvid_bag(tmp_path: Path, n: int, fps: float = 10.0) -> tuple[Path, list[int]]:
    root = write_fake_camvid(tmp_path / "camvid", frames=n, size=(36, 48))
    bag = tmp_path / "input"
    convert.write_bag(frames.camvid_frames(root), bag, fps=fps, progress=False)
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == IMAGE_TOPIC]
        stamps = [header_stamp_ns(raw) for _, _, raw in reader.messages(connections=conns)]
    return bag, stamps


def test_play_paced_by_a_slow_node_delivers_every_frame(tmp_path, context):
    bag, stamps = camvid_bag(tmp_path, n=6)
    node = Node("fake_perception_node", context=context)
    received, masks, clock = [], [], []
    echo = node.create_publisher(Image, "/fake_perception_node/ood_heatmap", RELIABLE_10)

    def on_image(msg: Image):
        received.append(stamp_ns(msg.header.stamp))
        time.sleep(0.05)  # slower than "as fast as possible": unpaced, frames would be lost
        echo.publish(Image(header=msg.header))

    node.create_subscription(Image, OOD_MASK_TOPIC, masks.append, RELIABLE_10)
    node.create_subscription(Clock, "/clock", clock.append, RELIABLE_10)
    with Spinning(node):
        playing = run_module(
            "play",
            str(bag),
            "--as-fast-as-possible",
            "--clock",
            "--wait-timeout",
            "2",
            "--wait-for",
            "/fake_perception_node/ood_heatmap",
            "--wait-for-subscribers",
            "15",
        )
        # Like a node that was up before the bag started: DDS discovery is not symmetric (one
        # side may see the other seconds earlier), so the image input is created only once
        # this side sees the player's image publisher and its subscription to our replies.
        wait_until(
            lambda: node.count_publishers(IMAGE_TOPIC) and echo.get_subscription_count(),
            15,
            "the player",
        )
        # Depth 1, best effort: the node's own input QoS.
        node.create_subscription(Image, IMAGE_TOPIC, on_image, BEST_EFFORT_1)
        _, err = playing.communicate(timeout=30)
    node.destroy_node()
    assert playing.returncode == 0, err
    assert received == stamps
    assert "0 waits timed out" in err
    assert "is not set" not in err  # the fixture set the transport: no warning
    assert len(masks) == 6
    assert {stamp_ns(c.clock) for c in clock} >= set(stamps[1:])


def test_play_keeps_the_recorded_pace_scaled_by_rate(tmp_path, context):
    bag, stamps = camvid_bag(tmp_path, n=6, fps=20)  # 250 ms of log time
    node = Node("listener", context=context)
    arrivals, result = [], {}
    playing = threading.Thread(
        target=lambda: result.update(
            stats=replay.play(bag, rate=0.5, wait_for_subscribers=15, reliable=True)
        )
    )
    with Spinning(node):
        playing.start()
        wait_until(lambda: node.count_publishers(IMAGE_TOPIC), 15, "the player")
        node.create_subscription(
            Image, IMAGE_TOPIC, lambda m: arrivals.append((time.monotonic(), m)), RELIABLE_10
        )
        playing.join(timeout=30)
        wait_until(lambda: len(arrivals) == 6, 5, "six frames")
    node.destroy_node()
    stats = result["stats"]
    assert stats.published[IMAGE_TOPIC] == 6
    assert [stamp_ns(m.header.stamp) for _, m in arrivals] == stamps
    span = arrivals[-1][0] - arrivals[0][0]
    assert 0.4 < span < 0.8, span  # 250 ms of bag at half speed: 500 ms
    assert stats.wall_s >= 0.45


def test_play_waits_for_as_many_subscribers_as_asked(tmp_path, context):
    """A recorder beside the node must hear the first frame too: with ``min_subscribers`` the
    player holds until the camera topic has that many readers, and says what it lacked."""
    bag, _ = camvid_bag(tmp_path, n=2)
    node = Node("listeners", context=context)
    node.create_subscription(Image, IMAGE_TOPIC, lambda m: None, BEST_EFFORT_1)
    said = []

    def play_timed(wait_s: float) -> float:
        started = time.monotonic()
        replay.play(
            bag,
            as_fast_as_possible=True,
            wait_for_subscribers=wait_s,
            min_subscribers={IMAGE_TOPIC: 2},
            log=said.append,
        )
        return time.monotonic() - started

    with Spinning(node):
        assert play_timed(2.0) >= 2.0  # one reader of two: it waits the whole time
        assert any(f"no {IMAGE_TOPIC} (1 of 2 subscribers)" in line for line in said), said
        said.clear()
        node.create_subscription(Image, IMAGE_TOPIC, lambda m: None, BEST_EFFORT_1)
        assert play_timed(20.0) < 15.0  # both readers there: it plays once they match
    node.destroy_node()
    assert not any("playing anyway" in line for line in said), said


def test_min_subscribers_on_the_command_line(capsys):
    args = replay.build_parser().parse_args(
        ["play", "bag", "--min-subscribers", "/camera/image_raw=2", "--min-subscribers", "/gt=1"]
    )
    assert dict(args.min_subscribers) == {"/camera/image_raw": 2, "/gt": 1}
    for bad in ("/camera/image_raw", "/camera/image_raw=0", "/camera/image_raw=two"):
        with pytest.raises(SystemExit):
            replay.build_parser().parse_args(["play", "bag", "--min-subscribers", bad])
        assert "expected TOPIC=N with N >= 1" in capsys.readouterr().err


def test_play_skips_topics_whose_type_this_python_lacks(tmp_path, context, monkeypatch):
    bag, _ = camvid_bag(tmp_path, n=2)
    known = player.message_class
    monkeypatch.setattr(
        player, "message_class", lambda t: None if t.endswith("CameraInfo") else known(t)
    )
    lines = []
    stats = replay.play(bag, as_fast_as_possible=True, log=lines.append)
    assert stats.skipped_topics == {"/camera/camera_info": "sensor_msgs/msg/CameraInfo"}
    assert stats.published[IMAGE_TOPIC] == 2
    assert any("skipping /camera/camera_info" in line for line in lines)
    with pytest.raises(BagError, match="not a rosbag2 folder"):
        replay.play(tmp_path / "camvid", as_fast_as_possible=True)


def test_record_until_sigint_keeps_every_message(tmp_path, context):
    out = tmp_path / "recorded"
    recorder = run_module("record", "--out", str(out), "/cam", "chatter", "/never")
    node = Node("talker", context=context)
    cam = node.create_publisher(Image, "/cam", RELIABLE_10)
    chatter = node.create_publisher(String, "/chatter", RELIABLE_10)
    wait_until(
        lambda: cam.get_subscription_count() and chatter.get_subscription_count(),
        15,
        "the recorder to subscribe",
    )
    started = time.time_ns()
    for i in range(5):
        msg = Image(height=2, width=3, encoding="mono8", step=3, data=bytes(range(i, i + 6)))
        msg.header.stamp.sec, msg.header.frame_id = 100 + i, "cam"
        cam.publish(msg)
        chatter.publish(String(data=f"hello {i}"))
    assert cam.wait_for_all_acked(Duration(seconds=5))
    assert chatter.wait_for_all_acked(Duration(seconds=5))
    time.sleep(0.2)
    recorder.send_signal(signal.SIGINT)
    _, err = recorder.communicate(timeout=15)
    finished = time.time_ns()
    node.destroy_node()
    assert recorder.returncode == 0, err
    assert "/never never appeared in the graph" in err
    topics = read_back(out)
    assert set(topics) == {"/cam", "/chatter"}
    assert [m.data for _, m in topics["/chatter"]] == [f"hello {i}" for i in range(5)]
    for i, (log_ns, msg) in enumerate(topics["/cam"]):
        assert started <= log_ns <= finished  # log time = receive time
        assert stamp_ns(msg.header.stamp) == (100 + i) * 1_000_000_000
        np.testing.assert_array_equal(image_array(msg), np.arange(i, i + 6).reshape(2, 3))
    with Reader(out) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
    assert qos["/cam"].reliability.name == "RELIABLE"
    assert not list(tmp_path.glob(".recorded*"))  # the staging folder is gone


def test_record_in_process_stops_after_duration(tmp_path, context):
    duration_s = 8.0  # discovery on a loaded 2-core machine took up to 4.8 s
    out = tmp_path / "short"
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(
            stats=replay.record(
                out, ["/cam"], types={"/cam": "sensor_msgs/msg/Image"}, duration=duration_s
            )
        )
    )
    started = time.monotonic()
    thread.start()
    node = Node("talker", context=context)
    cam = node.create_publisher(Image, "/cam", BEST_EFFORT_1)
    wait_until(lambda: cam.get_subscription_count(), 10, "the recorder to subscribe")
    # This writer has matched the recorder's reader; give the reader time to match this writer
    # (best-effort samples from a writer it does not know yet are discarded).
    time.sleep(0.5)
    for i in range(3):
        msg = Image(height=1, width=1, encoding="mono8", step=1, data=bytes([i]))
        msg.header.stamp.sec = i + 1
        cam.publish(msg)
        time.sleep(0.05)
    sent_after = time.monotonic() - started
    assert sent_after < duration_s - 1.0, (
        f"discovery took most of the recording ({sent_after:.1f} s)"
    )
    thread.join(timeout=15)
    node.destroy_node()
    stats = result["stats"]
    assert duration_s - 0.1 < stats.wall_s < duration_s + 1.5
    assert stats.types == {"/cam": "sensor_msgs/msg/Image"}
    topics = read_back(out)
    assert [stamp_ns(m.header.stamp) for _, m in topics["/cam"]] == [1e9, 2e9, 3e9]
    with Reader(out) as reader:
        (conn,) = reader.connections
        assert conn.ext.offered_qos_profiles[0].reliability.name == "BEST_EFFORT"


def test_play_and_record_load_the_shipped_profile_or_say_what_is_wrong(tmp_path, monkeypatch):
    for name in dds.TRANSPORT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # a missing bag and an existing --out: each stops with an error right after any warning
    commands = (("play", str(tmp_path / "no-bag")), ("record", "--out", str(tmp_path), "/a"))
    for command in commands:  # nothing set: the tools select the profile themselves
        _, err = run_module(*command).communicate(timeout=60)
        assert "warning" not in err, err
    monkeypatch.setenv(dds.PROFILE_VARIABLE, str(tmp_path / "typo.xml"))
    for command in commands:
        _, err = run_module(*command).communicate(timeout=60)
        assert f"{command[0]}: warning: {dds.PROFILE_VARIABLE}={tmp_path}/typo.xml is not" in err
