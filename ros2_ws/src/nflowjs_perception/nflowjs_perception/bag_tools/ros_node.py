"""What the bag player and recorder share: an rclpy node on its own context, spun in a thread,
and rclpy message classes looked up by type name."""

from __future__ import annotations

import importlib
import sys
import threading

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


def log_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``, or None where this Python lacks it."""
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError):
        return None


def has_header(cls) -> bool:
    fields = iter(cls.get_fields_and_field_types().items())
    return next(fields, (None, None)) == ("header", "std_msgs/Header")


class RosNode:
    """A node on its own (or the given) context, spun by a background thread."""

    def __init__(self, name: str, context: Context | None):
        self.own_context = context is None
        self.context = Context() if context is None else context
        if self.own_context:
            rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        while not self._done.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def start(self) -> RosNode:
        self._thread.start()
        return self

    def close(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        self.executor.shutdown()
        self.node.destroy_node()
        if self.own_context:
            self.context.try_shutdown()
