"""Record topics into an MCAP bag with rclpy raw subscriptions (see replay.py).

The bag is written where the user asked from the first message on, its chunks flushed as they
close (bagio.RecordingWriter): a SIGKILL loses at most the last chunk (a power cut also what
was not fsync'ed yet, about a second more), and ``repair_bag`` gives back the rest.
SIGINT/SIGTERM close it with its summary and metadata.yaml.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.context import Context
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from nflowjs_perception.bag_tools.bagio import make_parent, open_writer, qos
from nflowjs_perception.bag_tools.messages import TYPESTORE
from nflowjs_perception.bag_tools.ros_node import RosNode, log_stderr, message_class


@dataclass
class RecordStats:
    path: Path
    messages: dict[str, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int | None] = field(default_factory=dict)  # None: cannot tell
    wall_s: float = 0.0


# Deep enough for a burst of frames to wait while the bag is written; KEEP_LAST bounds the memory
# (depth x message size) a stalled disk can take, where KEEP_ALL would stall the publisher.
DEFAULT_QUEUE_DEPTH = 200


class _SequenceGaps:
    """Counts messages a publisher sent, after the first we received from it, that never reached
    the bag: lost in transport or pushed out of a full queue. DDS numbers each writer's samples
    consecutively, and rmw hands the number and the writer's id to the subscriber.

    rclpy added ``publisher_gid`` to MessageInfo only in 2025: without it, the numbers alone
    still count while the topic has one publisher (``publishers()``); ``count`` is None where a
    message could not be accounted for, so a report says "unknown" rather than 0.
    """

    def __init__(self, publishers: Callable[[], int]) -> None:
        self.publishers = publishers
        self.last: dict[bytes, int] = {}
        self.count: int | None = 0

    def see(self, info) -> None:
        sequence, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
        if gid is not None:
            writer = bytes(gid["data"]) if isinstance(gid, dict) else bytes(gid)
        elif sequence is not None and self.publishers() == 1:
            writer = b""  # the only publisher (were it replaced, its numbers restart: no gap)
        else:  # an rmw that does not report them, or several publishers we cannot tell apart
            self.count = None
            return
        last = self.last.get(writer)
        if last is not None and sequence > last + 1 and self.count is not None:
            self.count += sequence - last - 1
        if last is None or sequence > last:
            self.last[writer] = sequence


def _bag_qos(subscribed: QoSProfile, publishers: Sequence[QoSProfile]):
    """What ``ros2 bag play`` will offer: the reliability and durability the recorder subscribed
    with (decided over all publishers), the deepest publisher history."""
    return qos(
        reliable=subscribed.reliability == ReliabilityPolicy.RELIABLE,
        transient_local=subscribed.durability == DurabilityPolicy.TRANSIENT_LOCAL,
        depth=max(max(int(p.depth) for p in publishers), 1),
    )


DRAIN_S = 10.0  # at most this long to take what DDS delivered before a stop


def record(
    out: str | Path,
    topics: Sequence[str],
    *,
    types: dict[str, str] | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    compress: bool = False,
    overwrite: bool = False,
    queue_depth: int = DEFAULT_QUEUE_DEPTH,
    context: Context | None = None,
    node_name: str = "bag_recorder",
    log: Callable[[str], None] = log_stderr,
) -> RecordStats:
    """Record ``topics`` into the MCAP bag folder ``out`` until ``stop`` is set or ``duration``."""
    if not topics:
        raise ValueError("give at least one topic to record")
    if queue_depth < 1:
        raise ValueError(f"--queue-depth must be >= 1, got {queue_depth}")
    wanted = [t if t.startswith("/") else f"/{t}" for t in topics]
    given = {(t if t.startswith("/") else f"/{t}"): v for t, v in (types or {}).items()}
    for topic, msgtype in given.items():
        if msgtype not in TYPESTORE.fielddefs:
            raise ValueError(f"--type {topic}={msgtype}: unknown message type (pkg/msg/Name)")
    stop = stop or threading.Event()
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{out} exists: choose another --out or pass --overwrite")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    make_parent(out)
    stats = RecordStats(out)
    started = time.monotonic()
    pending = list(wanted)
    writer = open_writer(out, compress, recording=True, log=log)
    try:
        ros = RosNode(node_name, context)
    except BaseException:
        writer.abort()
        shutil.rmtree(out, ignore_errors=True)  # nothing was recorded into it
        raise
    subscribe = _Subscriber(ros.node, writer, given, stats, queue_depth, log)
    try:
        next_look = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            if pending and now >= next_look:
                pending = subscribe.new_publishers(pending)
                next_look = now + 0.1
            ros.executor.spin_once(timeout_sec=0.02)
            writer.close_chunk_if_due()
        _drain(ros, stats)
    finally:
        try:
            ros.close()
        finally:  # the bag must get its summary and metadata.yaml whatever rclpy does
            writer.close()
        stats.wall_s = time.monotonic() - started
        stats.dropped = {topic: gaps.count for topic, gaps in subscribe.gaps.items()}
    for topic in pending:
        log(f"record: {topic} never appeared in the graph; nothing recorded for it")
    return stats


def _drain(ros, stats: RecordStats, seconds: float = DRAIN_S) -> None:
    """Take the messages DDS has already delivered before the bag closes.

    A reliable publisher counts a message as received once the reader's DDS queue holds it; a
    recorder stopped (SIGINT, SIGTERM, --duration) while its callbacks lag behind, as on a loaded
    machine, would otherwise lose those. Ends once a spin brings nothing new, or after ``seconds``.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = sum(stats.messages.values())
        ros.executor.spin_once(timeout_sec=0.05)
        if sum(stats.messages.values()) == before:
            return


class _Subscriber:
    """Subscribes to topics once they have publishers, with QoS matched to those publishers."""

    def __init__(self, node, writer, given, stats, queue_depth, log):
        self.node, self.writer, self.given, self.stats = node, writer, given, stats
        self.queue_depth, self.log = queue_depth, log
        self.gaps: dict[str, _SequenceGaps] = {}

    def new_publishers(self, pending: list[str]) -> list[str]:
        """Subscribe to the pending topics that have publishers now; return those still pending."""
        graph = dict(self.node.get_topic_names_and_types())
        still = []
        for topic in pending:
            publishers = self.node.get_publishers_info_by_topic(topic)
            msgtype = self.given.get(topic) or (graph.get(topic) or [None])[0]
            if not publishers or msgtype is None:
                still.append(topic)
                continue
            cls = message_class(msgtype)
            if cls is None or msgtype not in TYPESTORE.fielddefs:
                self.stats.skipped_topics[topic] = msgtype
                self.log(
                    f"record: skipping {topic}: no definition of {msgtype} here (record it with "
                    "ros2 bag record on a ROS install that has the package)"
                )
                continue
            self._subscribe(topic, msgtype, cls, [p.qos_profile for p in publishers])
        return still

    def _subscribe(self, topic, msgtype, cls, profiles) -> None:
        # As ros2 bag record: reliable only where every publisher is (a reliable reader does not
        # match a best-effort writer), latched only where every publisher is.
        reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
        latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
        subscription_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self.queue_depth,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )
        connection = self.writer.add_connection(
            topic,
            msgtype,
            typestore=TYPESTORE,
            offered_qos_profiles=[_bag_qos(subscription_qos, profiles)],
        )
        self.stats.messages[topic] = 0
        self.stats.types[topic] = msgtype
        gaps = self.gaps[topic] = _SequenceGaps(lambda: self.node.count_publishers(topic))
        writer, messages = self.writer, self.stats.messages

        def on_message(raw: bytes, info) -> None:
            writer.write(connection, time.time_ns(), raw)
            messages[topic] += 1
            gaps.see(info)

        self.node.create_subscription(cls, topic, on_message, subscription_qos, raw=True)
