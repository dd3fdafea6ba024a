"""Play a bag into the ROS graph with rclpy publishers (see replay.py for the behaviour)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builtin_interfaces.msg import Time
from rclpy.context import Context
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import QosDurability, QosReliability
from rosgraph_msgs.msg import Clock

from nflowjs_perception.bag_tools.bagread import BagError, messages, open_bag
from nflowjs_perception.bag_tools.messages import CAMERA_INFO, IMAGE, IMAGE_TOPIC, header_stamp_ns
from nflowjs_perception.bag_tools.ros_node import RosNode, has_header, log_stderr, message_class

SENSOR_TYPES = (IMAGE, CAMERA_INFO, "sensor_msgs/msg/CompressedImage")
DEFAULT_WAIT_TYPE = IMAGE  # the node's outputs are Images
DISCOVERY_GRACE_S = 1.0


class _ReplyWaiter:
    """Remembers the stamps (or the count) of messages on the ``--wait-for`` topic."""

    def __init__(self, with_header: bool):
        self.with_header = with_header
        self.cond = threading.Condition()
        self.stamps: deque[int] = deque(maxlen=256)
        self.count = 0

    def on_message(self, raw: bytes) -> None:
        with self.cond:
            self.count += 1
            if self.with_header:
                self.stamps.append(header_stamp_ns(raw))
            self.cond.notify_all()

    def wait(
        self, stamp: int, count_at_publish: int, timeout: float, stop: threading.Event
    ) -> bool:
        def replied() -> bool:
            if self.with_header:
                return stamp in self.stamps
            return self.count > count_at_publish

        deadline = time.monotonic() + timeout
        with self.cond:
            while not replied() and not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.05))
        return True


def _qos_from_bag(connection) -> QoSProfile:
    offered = list(getattr(connection.ext, "offered_qos_profiles", None) or [])
    profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10)
    if offered:
        first = offered[0]
        profile.depth = max(int(first.depth), 1)
        if first.reliability == QosReliability.BEST_EFFORT:
            profile.reliability = ReliabilityPolicy.BEST_EFFORT
        if first.durability == QosDurability.TRANSIENT_LOCAL:
            profile.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return profile


def _play_qos(connection, image_topic: str, reliable: bool) -> QoSProfile:
    """Sensor-data QoS for the camera's topics (those beside ``image_topic``), else the bag's.

    Ground truth keeps the bag's (reliable) QoS: a reliable publisher serves reliable and
    best-effort subscribers alike, and an evaluation must not lose its ground truth.
    """
    camera_namespace = image_topic.rsplit("/", 1)[0] + "/"
    if connection.msgtype in SENSOR_TYPES and connection.topic.startswith(camera_namespace):
        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=reliability)
    return _qos_from_bag(connection)


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)
    wait_timeouts: int = 0
    wall_s: float = 0.0


def _discover_type(node: Node, topic: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        types = dict(node.get_topic_names_and_types())
        if types.get(topic):
            return types[topic][0]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def play(
    bag: str | Path,
    *,
    rate: float = 1.0,
    as_fast_as_possible: bool = False,
    topics: Sequence[str] | None = None,
    wait_for: str | None = None,
    wait_for_type: str | None = None,
    wait_timeout: float = 1.0,
    image_topic: str = IMAGE_TOPIC,
    clock: bool = False,
    reliable: bool = False,
    wait_for_subscribers: float = 0.0,
    min_subscribers: Mapping[str, int] | None = None,
    delay: float = 0.0,
    stop: threading.Event | None = None,
    context: Context | None = None,
    node_name: str = "bag_player",
    log: Callable[[str], None] = log_stderr,
) -> PlayStats:
    """Publish the messages of ``bag`` in log-time order; see the module docstring.

    ``min_subscribers`` (topic -> count), with ``wait_for_subscribers``: also wait until those
    topics have that many subscribers, e.g. a recorder beside the node on the camera topic.
    """
    if not rate > 0:
        raise ValueError(f"--rate must be > 0, got {rate}")
    stop = stop or threading.Event()
    stats = PlayStats()
    reader = open_bag(bag)
    try:
        _check_topics(bag, reader, topics, wait_for, image_topic)
        ros = RosNode(node_name, context)
    except BaseException:
        reader.close()
        raise
    try:
        publishers = _create_publishers(ros.node, reader, topics, image_topic, reliable, stats, log)
        if not publishers:
            raise BagError(
                f"{bag}: no topic to play: this Python has none of the message types "
                f"({', '.join(sorted(stats.skipped_topics.values()))}); source a ROS 2 install "
                "that has them"
            )
        image_publisher = next(
            (
                publishers[c.id]
                for c in reader.connections
                if c.topic == image_topic and c.id in publishers
            ),
            None,
        )
        clock_publisher = (
            ros.node.create_publisher(Clock, "/clock", QoSProfile(depth=1)) if clock else None
        )
        waiter, reply_subscription = None, None
        if wait_for:
            waiter, reply_subscription = _subscribe_replies(
                ros.node, wait_for, wait_for_type, max(2.0, wait_for_subscribers), log
            )
        ros.start()
        if wait_for_subscribers > 0 and image_publisher is not None:
            needed = {image_publisher: 1}
            for c in reader.connections:
                if c.id in publishers and c.topic in (min_subscribers or {}):
                    needed[publishers[c.id]] = max(1, min_subscribers[c.topic])
            _wait_for_match(needed, reply_subscription, wait_for_subscribers, stop, log)
        if delay > 0:
            stop.wait(delay)
        stats.wall_s = _play_loop(
            bag,
            reader,
            publishers,
            stats,
            stop,
            rate=rate,
            as_fast=as_fast_as_possible,
            image_topic=image_topic,
            waiter=waiter,
            wait_timeout=wait_timeout,
            clock_publisher=clock_publisher,
        )
        time.sleep(0.2)  # let the middleware send the last samples before the writers go
    finally:
        ros.close()
        reader.close()
    return stats


def _check_topics(bag, reader, topics, wait_for, image_topic) -> None:
    present = {c.topic for c in reader.connections}
    missing = sorted(set(topics or ()) - present)
    if missing:
        raise BagError(
            f"{bag} has no {', '.join(missing)} (--topics); it has "
            f"{', '.join(sorted(present)) or 'no topics'}: name some of those"
        )
    if wait_for and image_topic not in present:
        raise BagError(
            f"{bag} has no {image_topic} for --wait-for to pace; it has "
            f"{', '.join(sorted(present)) or 'no topics'}: name its camera with --image-topic"
        )


def _create_publishers(node, reader, topics, image_topic, reliable, stats, log) -> dict:
    """connection id -> rclpy publisher, for the bag's topics this Python has the types of."""
    publishers = {}
    for conn in reader.connections:
        if topics is not None and conn.topic not in topics:
            continue
        cls = message_class(conn.msgtype)
        if cls is None:
            stats.skipped_topics[conn.topic] = conn.msgtype
            log(
                f"play: skipping {conn.topic}: {conn.msgtype} is not importable in this "
                "Python (source a ROS 2 install that has it)"
            )
            continue
        qos_profile = _play_qos(conn, image_topic, reliable)
        publishers[conn.id] = node.create_publisher(cls, conn.topic, qos_profile)
        stats.published.setdefault(conn.topic, 0)
    return publishers


def _subscribe_replies(node, wait_for, wait_for_type, discovery_s, log):
    """A _ReplyWaiter fed by a raw subscription to ``wait_for``, and that subscription."""
    msgtype = wait_for_type or _discover_type(node, wait_for, discovery_s)
    if msgtype is None:
        msgtype = DEFAULT_WAIT_TYPE
        log(f"play: {wait_for} is not in the graph yet; subscribing as {msgtype}")
    cls = message_class(msgtype)
    if cls is None:
        raise ValueError(f"--wait-for {wait_for}: type {msgtype} is not importable here")
    waiter = _ReplyWaiter(has_header(cls))
    # Best effort matches reliable and best-effort repliers alike.
    reply_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    subscription = node.create_subscription(cls, wait_for, waiter.on_message, reply_qos, raw=True)
    return waiter, subscription


def _wait_for_match(needed: dict, reply_subscription, timeout, stop, log) -> None:
    """Until each publisher in ``needed`` has that many subscribers (the images: someone who
    takes them) and, with --wait-for, we hear the replies."""

    def missing() -> list[str]:
        short = [
            f"{p.topic_name} ({p.get_subscription_count()} of {n} subscribers)"
            for p, n in needed.items()
            if p.get_subscription_count() < n
        ]
        if reply_subscription is not None and reply_subscription.get_publisher_count() == 0:
            short.append(f"a publisher of --wait-for {reply_subscription.topic_name}")
        return short

    deadline = time.monotonic() + timeout
    while (short := missing()) and not stop.is_set():
        if time.monotonic() >= deadline:
            log(f"play: within {timeout:g} s no {', '.join(short)}; playing anyway")
            return
        time.sleep(0.02)
    # Discovery is not symmetric: we may see their reader (and writer) a while before they
    # see our writer (and reader); until then what we publish is dropped on their side and
    # their replies are not sent to us.
    stop.wait(DISCOVERY_GRACE_S)


def _play_loop(
    bag,
    reader,
    publishers,
    stats,
    stop,
    *,
    rate,
    as_fast,
    image_topic,
    waiter,
    wait_timeout,
    clock_publisher,
) -> float:
    connections = [c for c in reader.connections if c.id in publishers]
    started = time.monotonic()
    first_log = None
    paused = 0.0  # seconds spent waiting for the node: real-time playback resumes after them
    last_image: tuple[int, int] | None = None  # (header stamp, waiter count) of the last image
    last_clock = None
    for conn, log_ns, raw in messages(reader, bag, connections):
        if stop.is_set():
            break
        if first_log is None:
            first_log, started = log_ns, time.monotonic()
        is_image = conn.topic == image_topic
        if is_image and waiter is not None and last_image is not None:
            waited = time.monotonic()
            if not waiter.wait(*last_image, wait_timeout, stop):
                stats.wait_timeouts += 1
            paused += time.monotonic() - waited
        if not as_fast:
            due = started + paused + (log_ns - first_log) / 1e9 / rate
            if stop.wait(max(0.0, due - time.monotonic())):
                break
        if clock_publisher is not None and log_ns != last_clock:
            clock_publisher.publish(
                Clock(clock=Time(sec=log_ns // 1_000_000_000, nanosec=log_ns % 1_000_000_000))
            )
            last_clock = log_ns
        data = raw if isinstance(raw, bytes) else bytes(raw)
        replies_before = waiter.count if waiter is not None else 0
        publishers[conn.id].publish(data)
        stats.published[conn.topic] += 1
        if is_image and waiter is not None:
            last_image = (header_stamp_ns(data), replies_before)
    if waiter is not None and last_image is not None and not stop.is_set():
        if not waiter.wait(*last_image, wait_timeout, stop):  # the node's answer to the last
            stats.wait_timeouts += 1
    return time.monotonic() - started
