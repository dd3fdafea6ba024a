"""Images published straight from their buffer through rcl_publish: what reaches a subscriber,
and when the node falls back to rclpy's publish."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image

from nflowjs_perception import direct_publish
from nflowjs_perception.image_messages import OutputImage


def _image(height: int, width: int, frame_id: str = "camera_optical_frame") -> Image:
    """An output message as the node fills it: pixels in its array('B'), every field set."""
    output = OutputImage(Image, "32FC1")
    pixels = output.pixels((height, width), np.float32)
    pixels[:] = np.random.default_rng(height).random((height, width), np.float32)
    msg = output.msg
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 456_789
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding, msg.step = height, width, "32FC1", 4 * width
    msg.is_bigendian = 1  # not what this machine is: the field travels as set
    return msg


def _received(publish, msg: Image, topic: str) -> Image:
    node = rclpy.create_node("direct_publish_test")
    got = []
    node.create_subscription(Image, topic, got.append, 10)
    publisher = node.create_publisher(Image, topic, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 20.0
        while not got and time.monotonic() < deadline:
            if publisher.get_subscription_count():
                publish(publisher, msg)
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        node.destroy_node()
    assert got, f"nothing arrived on {topic}"
    return got[0]


def _fields(msg: Image) -> tuple:
    stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    layout = (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step)
    return stamp, msg.header.frame_id, layout, bytes(msg.data)


@pytest.mark.parametrize(
    ("height", "width", "frame_id"),
    [(37, 53, "camera_optical_frame"), (3, 5, "kamera_vorne_ü"), (0, 0, "empty")],
)  # odd sizes (no alignment saves a wrong layout), UTF-8 beyond ASCII, no pixels at all
def test_direct_images_arrive_as_rclpy_sends_them(ros, height, width, frame_id):
    assert direct_publish.unavailable_reason() is None  # the mirror fits the wheels CI installs
    msg = _image(height, width, frame_id)
    topic = f"/direct_{height}"
    direct = _received(direct_publish.publish_image, msg, topic)
    through_rclpy = _received(lambda publisher, m: publisher.publish(m), msg, f"{topic}_rclpy")
    assert _fields(direct) == _fields(through_rclpy) == _fields(msg)


def test_without_the_direct_path_images_go_through_rclpy(ros, monkeypatch):
    monkeypatch.setattr(direct_publish, "_rcl", lambda: "no librcl here")
    assert direct_publish.unavailable_reason() == "no librcl here"
    msg = _image(4, 6)
    assert _fields(_received(direct_publish.publish_image, msg, "/fallback")) == _fields(msg)


def test_anything_but_an_image_publisher_goes_through_rclpy(ros):
    """rcl cannot tell a message's type: the direct path must never see another one."""
    node = rclpy.create_node("direct_publish_types")
    try:
        info_publisher = node.create_publisher(CameraInfo, "/info", 1)
        with pytest.raises(TypeError):  # rclpy's own check, not a misread struct
            direct_publish.publish_image(info_publisher, _image(2, 2))
    finally:
        node.destroy_node()


def test_a_mirror_that_does_not_match_the_generated_code_is_refused(ros, monkeypatch):
    fields = list(direct_publish._CImage._fields_)
    fields[1], fields[2] = fields[2], fields[1]  # height and width swapped

    class Swapped(direct_publish.ctypes.Structure):
        _fields_ = fields

    assert direct_publish._mirror_matches_generated_code()
    monkeypatch.setattr(direct_publish, "_CImage", Swapped)
    assert not direct_publish._mirror_matches_generated_code()


def test_an_rcl_failure_raises_with_rcl_s_reason():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("direct_publish_orphan", context=context)
    publisher = node.create_publisher(Image, "/orphan", 1)
    # The context shut down in rcl under a live publisher, as when it goes under a publishing
    # thread (rclpy's own shutdown would destroy the publisher first).
    rcl = direct_publish.ctypes.CDLL("librcl.so")
    rcl.rcl_shutdown.argtypes = [direct_publish.ctypes.c_void_p]
    assert rcl.rcl_shutdown(context.handle.pointer) == 0
    try:
        with pytest.raises(RuntimeError, match=r"rcl_publish failed.*context is invalid"):
            direct_publish.publish_image(publisher, _image(2, 2))
    finally:
        node.destroy_node()
        context.try_shutdown()
