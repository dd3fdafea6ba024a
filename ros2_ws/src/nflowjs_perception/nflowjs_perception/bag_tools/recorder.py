"""Record topics into an MCAP bag with rclpy raw subscriptions (see replay.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.context import Context
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from nflowjs_perception.bag_tools.bagio import open_writer, qos, staged_bag
from nflowjs_perception.bag_tools.messages import TYPESTORE
from nflowjs_perception.bag_tools.ros_node import RosNode, log_stderr, message_class


@dataclass
class RecordStats:
    path: Path
    messages: dict[str, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0


def _bag_qos(profile: QoSProfile):
    return qos(
        reliable=profile.reliability == ReliabilityPolicy.RELIABLE,
        transient_local=profile.durability == DurabilityPolicy.TRANSIENT_LOCAL,
        depth=max(int(profile.depth), 1),
    )


def record(
    out: str | Path,
    topics: Sequence[str],
    *,
    types: dict[str, str] | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    compress: bool = False,
    overwrite: bool = False,
    context: Context | None = None,
    node_name: str = "bag_recorder",
    log: Callable[[str], None] = log_stderr,
) -> RecordStats:
    """Record ``topics`` into the MCAP bag folder ``out`` until ``stop`` is set or ``duration``."""
    if not topics:
        raise ValueError("give at least one topic to record")
    wanted = [t if t.startswith("/") else f"/{t}" for t in topics]
    given = {(t if t.startswith("/") else f"/{t}"): v for t, v in (types or {}).items()}
    for topic, msgtype in given.items():
        if msgtype not in TYPESTORE.fielddefs:
            raise ValueError(f"--type {topic}={msgtype}: unknown message type (pkg/msg/Name)")
    stop = stop or threading.Event()
    stats = RecordStats(Path(out))
    started = time.monotonic()
    pending = list(wanted)
    with staged_bag(out, overwrite=overwrite, keep_on_error=True) as staged:
        writer = open_writer(staged, compress)
        try:
            ros = RosNode(node_name, context)
        except BaseException:
            writer.close()
            raise
        try:
            next_look = 0.0
            while not stop.is_set():
                now = time.monotonic()
                if duration is not None and now - started >= duration:
                    break
                if pending and now >= next_look:
                    pending = _subscribe_new(ros.node, writer, pending, given, stats, log)
                    next_look = now + 0.1
                ros.executor.spin_once(timeout_sec=0.02)
        finally:
            ros.close()
            writer.close()
            stats.wall_s = time.monotonic() - started
    for topic in pending:
        log(f"record: {topic} never appeared in the graph; nothing recorded for it")
    return stats


def _subscribe_new(node, writer, pending, given, stats, log) -> list[str]:
    """Subscribe to the pending topics that have publishers now; return those still pending."""
    graph = dict(node.get_topic_names_and_types())
    still = []
    for topic in pending:
        publishers = node.get_publishers_info_by_topic(topic)
        msgtype = given.get(topic) or (graph.get(topic) or [None])[0]
        if not publishers or msgtype is None:
            still.append(topic)
            continue
        cls = message_class(msgtype)
        if cls is None or msgtype not in TYPESTORE.fielddefs:
            stats.skipped_topics[topic] = msgtype
            log(f"record: skipping {topic}: no definition of {msgtype} here")
            continue
        profiles = [p.qos_profile for p in publishers]
        reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
        latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
        subscription_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=100,  # a burst waits here while the bag is written, instead of being dropped
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )
        connection = writer.add_connection(
            topic, msgtype, typestore=TYPESTORE, offered_qos_profiles=[_bag_qos(profiles[0])]
        )
        stats.messages[topic] = 0
        stats.types[topic] = msgtype

        def on_message(raw: bytes, topic=topic, connection=connection) -> None:
            writer.write(connection, time.time_ns(), raw)
            stats.messages[topic] += 1

        node.create_subscription(cls, topic, on_message, subscription_qos, raw=True)
    return still
