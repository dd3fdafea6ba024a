"""Play a bag into the ROS graph and record topics into a bag, with rclpy (no ``ros2 bag``).

PyPI has no ``ros2`` CLI or rosbag2, so CI and laptops without a ROS install use these:

    python -m nflowjs_perception.bag_tools.replay play BAG [--rate 1 | --as-fast-as-possible]
        [--wait-for /perception_node/ood_heatmap] [--clock] [--reliable]
    python -m nflowjs_perception.bag_tools.replay record --out BAG TOPIC [TOPIC ...]
        [--duration S]

``play`` reads the raw CDR bytes with rosbags and hands them to rclpy publishers unchanged (no
deserialization, no copy into message objects). It keeps the recorded pace (log time, scaled by
``--rate``) or, with ``--as-fast-as-possible``, publishes at once; ``--wait-for TOPIC`` holds
each image until a message on TOPIC for the previous image arrived (its header stamp matches,
for types with a header) or ``--wait-timeout`` passed, so a node paces the playback and no
frame is dropped for being faster than the model. The camera's Image and CameraInfo topics
(beside ``--image-topic``) are published best effort (REP 2003 sensor data) unless
``--reliable``; other topics with the QoS the bag recorded (ground truth reliable,
``/tf_static`` latched). ``--clock`` publishes the log time on ``/clock`` for nodes with
``use_sim_time``.

``record`` subscribes to the topics as they appear in the graph (type from the graph unless
``--type TOPIC=TYPE``), with reliable QoS only where every publisher is reliable (as
``ros2 bag record`` does) and a queue of ``--queue-depth`` messages, and writes raw CDR with log
time = receive time. The bag is written at ``--out`` from the start, each MCAP chunk flushed
once it is 1 MiB or 1 s old, so a SIGKILL loses at most that last chunk (``repair_bag`` recovers
the rest). It stops on SIGINT/SIGTERM or after ``--duration``, closes the bag with its summary,
and prints how many messages each topic's publishers sent that never reached the bag.

Processes exchanging large images need ``FASTDDS_BUILTIN_TRANSPORTS`` set (see
``nflowjs_perception.dds``): with Fast DDS's default transports, best-effort 2 MP frames are
dropped between processes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from rosbags.rosbag2.errors import ReaderError, WriterError

from nflowjs_perception.bag_tools.bagread import BagError
from nflowjs_perception.bag_tools.messages import IMAGE_TOPIC
from nflowjs_perception.bag_tools.player import PlayStats, play
from nflowjs_perception.bag_tools.recorder import DEFAULT_QUEUE_DEPTH, RecordStats, record
from nflowjs_perception.bag_tools.ros_node import log_stderr
from nflowjs_perception.dds import transport_warning, use_shipped_profile

__all__ = ["PlayStats", "RecordStats", "main", "play", "play_main", "record", "record_main"]


def _type_pair(text: str) -> tuple[str, str]:
    topic, sep, msgtype = text.partition("=")
    if not sep or msgtype.count("/") != 2:
        raise argparse.ArgumentTypeError(f"expected TOPIC=pkg/msg/Type, got {text!r}")
    return topic, msgtype


def _subscriber_count(text: str) -> tuple[str, int]:
    topic, sep, count = text.partition("=")
    if not sep or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected TOPIC=N with N >= 1, got {text!r}")
    return topic, int(count)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replay",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("play", help="publish a bag's messages")
    p.add_argument("bag", type=Path)
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    p.add_argument("--as-fast-as-possible", action="store_true", help="ignore log times")
    p.add_argument("--topics", nargs="+", help="play only these topics")
    p.add_argument(
        "--wait-for",
        metavar="TOPIC",
        help="publish the next image only after a message on TOPIC (or a timeout)",
    )
    p.add_argument("--wait-for-type", help="type of --wait-for (default: from the graph)")
    p.add_argument("--wait-timeout", type=float, default=1.0, help="seconds (default 1)")
    p.add_argument("--image-topic", default=IMAGE_TOPIC, help="the topic --wait-for paces")
    p.add_argument("--clock", action="store_true", help="publish /clock from the log time")
    p.add_argument("--reliable", action="store_true", help="reliable QoS for images")
    p.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for a subscriber of --image-topic (and a publisher of "
        "--wait-for)",
    )
    p.add_argument(
        "--min-subscribers",
        type=_subscriber_count,
        action="append",
        default=[],
        metavar="TOPIC=N",
        help="with --wait-for-subscribers: wait for N subscribers of TOPIC (a recorder beside "
        "the node: /camera/image_raw=2)",
    )
    p.add_argument("--delay", type=float, default=0.0, help="seconds to sleep before playing")
    r = sub.add_parser("record", help="record topics into a bag")
    r.add_argument("topics", nargs="+")
    r.add_argument("--out", type=Path, required=True, help="bag folder to create")
    r.add_argument(
        "--type",
        dest="types",
        type=_type_pair,
        action="append",
        default=[],
        metavar="TOPIC=TYPE",
        help="type of a topic (default: from the graph)",
    )
    r.add_argument("--duration", type=float, help="stop after this many seconds")
    r.add_argument("--compress", action="store_true", help="zstd chunk compression")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    r.add_argument(
        "--queue-depth",
        type=int,
        default=DEFAULT_QUEUE_DEPTH,
        metavar="N",
        help=f"messages per topic waiting to be written (default {DEFAULT_QUEUE_DEPTH}; memory "
        "up to N x message size)",
    )
    return parser


def _record_report(stats: RecordStats) -> str:
    counts = ", ".join(f"{t} x{n}" for t, n in stats.messages.items()) or "nothing"
    known = {t: n for t, n in stats.dropped.items() if n is not None}
    unknown = [t for t, n in stats.dropped.items() if n is None]
    dropped = sum(known.values())
    lost = ", ".join(f"{t} {n}" for t, n in known.items() if n)
    text = f"recorded {stats.path} in {stats.wall_s:.1f} s: {counts}; "
    if not unknown or known:
        text += f"dropped {dropped}" + (
            f" ({lost}: sent by their publishers but never written: lost on the way, or pushed "
            "out of a full queue while the recorder was busy; raise --queue-depth)"
            if dropped
            else ""
        )
    if unknown:  # better no number than a 0 that is not known
        text += "; " if known else ""
        text += (
            f"dropped: unknown for {', '.join(unknown)} (the middleware reports no publisher "
            "sequence numbers, or several publishers share the topic without their ids)"
        )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_shipped_profile()  # 2 MP frames between processes; a user's choice is kept
    warning = transport_warning()
    if warning:
        log_stderr(f"{args.command}: warning: {warning}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if args.command == "play":
            stats = play(
                args.bag,
                rate=args.rate,
                as_fast_as_possible=args.as_fast_as_possible,
                topics=args.topics,
                wait_for=args.wait_for,
                wait_for_type=args.wait_for_type,
                wait_timeout=args.wait_timeout,
                image_topic=args.image_topic,
                clock=args.clock,
                reliable=args.reliable,
                wait_for_subscribers=args.wait_for_subscribers,
                min_subscribers=dict(args.min_subscribers),
                delay=args.delay,
                stop=stop,
            )
            counts = ", ".join(f"{t} x{n}" for t, n in stats.published.items())
            timeouts = f", {stats.wait_timeouts} waits timed out" if args.wait_for else ""
            log_stderr(f"played {args.bag} in {stats.wall_s:.1f} s: {counts}{timeouts}")
        else:
            stats = record(
                args.out,
                args.topics,
                types=dict(args.types),
                duration=args.duration,
                stop=stop,
                compress=args.compress,
                overwrite=args.overwrite,
                queue_depth=args.queue_depth,
            )
            log_stderr(_record_report(stats))
    except (BagError, OSError, ValueError, ReaderError, WriterError) as error:
        log_stderr(f"{args.command}: error: {error}")
        return 2
    return 0


def play_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``play_bag``: ``replay play``."""
    return main(["play", *(sys.argv[1:] if argv is None else argv)])


def record_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``record_bag``: ``replay record``."""
    return main(["record", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
