"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

cv_bridge is a C++ extension of the ROS install; PyPI's copy is a stale ROS 1 build that breaks
on numpy 2, and the conversions the node needs are a handful of lines. Incoming pixels are viewed
in place (``np.frombuffer`` over the message's buffer, strided by ``step``); outgoing images copy
the array once into the message's ``array('B')``, the type rclpy would convert any value to.
"""

from __future__ import annotations

from array import array

import cv2
import numpy as np

# encoding -> (channels, OpenCV conversion to RGB or None)
DECODERS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}


class FrameError(ValueError):
    """A message that is not a usable image; ``kind`` groups errors for throttled logging."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def image_to_rgb(msg) -> np.ndarray:
    """A sensor_msgs/Image as HxWx3 uint8 RGB (a view of the message when it is already rgb8)."""
    h, w, encoding = msg.height, msg.width, msg.encoding
    if encoding not in DECODERS:
        raise FrameError(
            "encoding",
            f"unsupported image encoding {encoding!r}; publish one of {', '.join(DECODERS)} "
            "(or use image_transport: compressed for JPEG/PNG)",
        )
    channels, conversion = DECODERS[encoding]
    if h == 0 or w == 0:
        raise FrameError("empty", f"empty image ({w}x{h}); the camera driver sent no pixels")
    if msg.step < w * channels:
        raise FrameError(
            "step", f"step {msg.step} is less than width {w} x {channels} bytes ({encoding})"
        )
    data = np.frombuffer(msg.data, np.uint8)
    if data.size < msg.step * h:
        raise FrameError(
            "truncated",
            f"truncated image: {data.size} bytes, {w}x{h} {encoding} with step {msg.step} "
            f"needs {msg.step * h}",
        )
    pixels = data[: msg.step * h].reshape(h, msg.step)[:, : w * channels].reshape(h, w, channels)
    if conversion is None:
        return pixels
    return cv2.cvtColor(pixels, conversion)


def compressed_to_rgb(msg) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG or PNG, any depth OpenCV reads) as HxWx3 RGB."""
    data = np.frombuffer(msg.data, np.uint8)
    if data.size == 0:
        raise FrameError("decode", "empty CompressedImage; the camera driver sent no bytes")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FrameError(
            "decode",
            f"could not decode a {data.size}-byte CompressedImage (format {msg.format!r}); "
            "JPEG and PNG are supported",
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fill_image(msg, header, pixels: np.ndarray, encoding: str, buffer: array | None = None):
    """Fill ``msg`` (a sensor_msgs/Image) with ``pixels`` (HxW or HxWxC).

    With ``buffer`` (an ``array('B')`` of the right size) the pixels are copied into it in place.
    """
    pixels = np.ascontiguousarray(pixels)
    msg.header = header
    msg.height, msg.width = pixels.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = int(pixels.dtype.byteorder == ">")
    msg.step = pixels.strides[0]
    if buffer is None or len(buffer) != pixels.nbytes:
        buffer = array("B")
        buffer.frombytes(memoryview(pixels).cast("B"))  # the one copy: numpy -> message
    else:
        np.frombuffer(buffer, np.uint8)[:] = pixels.reshape(-1).view(np.uint8)
    msg.data = buffer
    return msg


class OutputImage:
    """One output topic's message, refilled in place frame after frame.

    rclpy copies a message into its C form during ``publish``, so after ``publish`` returns the
    message may be reused. Reusing it saves a fresh 2-8 MB buffer per output and frame, and
    with it the page faults of newly mapped memory: ~4 ms per 2 MP output on our 2-core
    machine, more than the copy itself.
    """

    def __init__(self, message_type, encoding: str):
        try:
            # Since Jazzy a message built without field checks copies every array assigned to
            # it (`array('B', value)`); with them an array('B') is taken as it is.
            self.msg = message_type(check_fields=True)
        except (AssertionError, TypeError):  # older messages always check
            self.msg = message_type()
        self.encoding = encoding

    def fill(self, header, pixels: np.ndarray):
        return fill_image(self.msg, header, pixels, self.encoding, self.msg.data)
