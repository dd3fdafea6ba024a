"""Liveness probe for the Docker HEALTHCHECK: is the perception node publishing diagnostics?

Exits 0 as soon as a ``DiagnosticStatus`` whose name starts with ``--name-prefix`` arrives on
/diagnostics (the node publishes "<node name>: inference"), 1 after ``--timeout`` seconds
without one. Seeing the node's own message, rather than its name in the graph, proves the node
is alive *and* that DDS traffic reaches this process with the container's transport settings.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

from nflowjs_perception import dds

LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait (default: %(default)s)"
    )
    parser.add_argument(
        "--name-prefix",
        default="perception_node",
        help="healthy when a status name starts with this (default: %(default)s)",
    )
    parser.add_argument("--topic", default="/diagnostics", help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    return args


def wait_for_status(topic: str, prefix: str, timeout: float) -> DiagnosticStatus | None:
    """The first matching status seen within ``timeout`` seconds, or None."""
    context = Context()
    rclpy.init(args=[], context=context)
    found: list[DiagnosticStatus] = []

    def on_array(msg: DiagnosticArray) -> None:
        found.extend(s for s in msg.status if s.name.startswith(prefix))

    try:
        # pid in the name: overlapping probes must not share a node name.
        node = rclpy.create_node(f"nflowjs_healthcheck_{os.getpid()}", context=context)
        # Best effort matches reliable and best-effort publishers alike.
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        node.create_subscription(DiagnosticArray, topic, on_array, qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + timeout
        while not found and (left := deadline - time.monotonic()) > 0:
            executor.spin_once(timeout_sec=min(0.1, left))
    finally:
        context.try_shutdown()
    return found[0] if found else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dds.use_shipped_profile()  # the node's transports, unless the user chose others
    status = wait_for_status(args.topic, args.name_prefix, args.timeout)
    if status is None:
        print(
            f"unhealthy: no DiagnosticStatus named '{args.name_prefix}*' on {args.topic} within "
            f"{args.timeout:g} s (ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}); is "
            "perception_node running, on the same domain and DDS transport settings?",
            file=sys.stderr,
        )
        return 1
    level = LEVELS.get(int.from_bytes(bytes(status.level), "little"), str(status.level))
    print(f"healthy: '{status.name}' {level}: {status.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
