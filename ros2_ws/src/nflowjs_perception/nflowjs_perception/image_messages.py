"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

cv_bridge is a C++ extension of the ROS install; PyPI's copy is a stale ROS 1 build that breaks
on numpy 2, and the conversions the node needs are a handful of lines. Incoming pixels are viewed
in place (``np.frombuffer`` over the message's buffer, strided by ``step``); outgoing images copy
the array once into the message's ``array('B')``, the type rclpy would convert any value to.
"""

from __future__ import annotations

from array import array
from typing import NamedTuple

import cv2
import numpy as np


class Decoder(NamedTuple):
    channels: int  # values per pixel in the message
    dtype: str  # of each value: u1, or u2 (16-bit, scaled to 8 bit)
    conversion: int | None  # OpenCV conversion to RGB, None when already RGB


# ROS encoding names (sensor_msgs/image_encodings.hpp) -> how to turn them into RGB. Bayer
# names give the colours of the first 2x2 block; OpenCV names its codes after the second row's
# pattern, so bayer_rggb8 is OpenCV's BayerBG (as in cv_bridge). yuv422 is UYVY, yuv422_yuy2 YUYV.
DECODERS = {
    "rgb8": Decoder(3, "u1", None),
    "bgr8": Decoder(3, "u1", cv2.COLOR_BGR2RGB),
    "8UC3": Decoder(3, "u1", cv2.COLOR_BGR2RGB),  # OpenCV's 3 channels are BGR (cv_bridge too)
    "rgba8": Decoder(4, "u1", cv2.COLOR_RGBA2RGB),
    "bgra8": Decoder(4, "u1", cv2.COLOR_BGRA2RGB),
    "mono8": Decoder(1, "u1", cv2.COLOR_GRAY2RGB),
    "8UC1": Decoder(1, "u1", cv2.COLOR_GRAY2RGB),
    "bayer_rggb8": Decoder(1, "u1", cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": Decoder(1, "u1", cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": Decoder(1, "u1", cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": Decoder(1, "u1", cv2.COLOR_BayerGB2RGB),
    "yuv422": Decoder(2, "u1", cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": Decoder(2, "u1", cv2.COLOR_YUV2RGB_YUY2),
    "mono16": Decoder(1, "u2", cv2.COLOR_GRAY2RGB),
    "16UC1": Decoder(1, "u2", cv2.COLOR_GRAY2RGB),
    "rgb16": Decoder(3, "u2", None),
    "bgr16": Decoder(3, "u2", cv2.COLOR_BGR2RGB),
}
SIXTEEN_TO_EIGHT_BIT = 255.0 / 65535.0  # full range onto full range: 65535 -> 255, 0 -> 0
YUV422 = ("yuv422", "yuv422_yuy2")


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
    channels, dtype, conversion = DECODERS[encoding]
    if h == 0 or w == 0:
        raise FrameError("empty", f"empty image ({w}x{h}); the camera driver sent no pixels")
    if encoding in YUV422 and w % 2:
        raise FrameError(
            "size", f"{encoding} needs an even width (2 pixels share U and V), got {w}"
        )
    row_bytes = w * channels * int(dtype[1])
    if msg.step < row_bytes:
        raise FrameError(
            "step", f"step {msg.step} is less than width {w} x {row_bytes // w} bytes ({encoding})"
        )
    data = np.frombuffer(msg.data, np.uint8)
    if data.size < msg.step * h:
        raise FrameError(
            "truncated",
            f"truncated image: {data.size} bytes, {w}x{h} {encoding} with step {msg.step} "
            f"needs {msg.step * h}",
        )
    rows = data[: msg.step * h].reshape(h, msg.step)[:, :row_bytes]
    if dtype == "u2":
        order = ">" if msg.is_bigendian else "<"
        wide = rows.copy().view(f"{order}u2").reshape(h, w, channels)  # copy: rows may be padded
        pixels = cv2.convertScaleAbs(wide.astype(np.uint16, copy=False), alpha=SIXTEEN_TO_EIGHT_BIT)
        pixels = pixels.reshape(h, w, channels)
    else:
        pixels = rows.reshape(h, w, channels)
    if conversion is None:
        return pixels
    if channels == 1:
        pixels = pixels[..., 0]  # OpenCV wants single-channel images as HxW
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

    Once ``publish`` returns the message may be reused: rcl serialises it during the call (from
    rclpy's C copy, or straight from the buffer in direct_publish) and keeps no reference.
    Reusing it saves a fresh 2-8 MB buffer per output and frame, and with it the page faults of
    newly mapped memory: ~4 ms per 2 MP output on our 2-core machine, more than the copy itself.
    ``pixels`` goes one step further: the output is computed straight into the message's buffer,
    so ``fill`` has nothing left to copy.
    """

    def __init__(self, message_type, encoding: str):
        try:
            # Since Jazzy a message built without field checks copies every array assigned to
            # it (`array('B', value)`); with them an array('B') is taken as it is.
            self.msg = message_type(check_fields=True)
        except (AssertionError, TypeError):  # older messages always check
            self.msg = message_type()
        self.encoding = encoding

    def pixels(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A writable array of ``shape`` over the message's own data (resized when needed)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if len(self.msg.data) != nbytes or not isinstance(self.msg.data, array):
            self.msg.data = array("B", bytes(nbytes))
        return np.frombuffer(self.msg.data, dtype).reshape(shape)

    def fill(self, header, pixels: np.ndarray):
        data = self.msg.data
        if isinstance(data, array) and pixels.ctypes.data == data.buffer_info()[0]:
            # written in place by pixels(): only the header and the layout are left to set
            msg = self.msg
            msg.header, msg.encoding = header, self.encoding
            msg.height, msg.width = pixels.shape[:2]
            msg.is_bigendian = int(pixels.dtype.byteorder == ">")
            msg.step = pixels.strides[0]
            return msg
        return fill_image(self.msg, header, pixels, self.encoding, self.msg.data)
