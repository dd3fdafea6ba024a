"""Publish a sensor_msgs/Image straight from its pixel buffer, through rcl_publish.

rclpy's ``publish`` first converts the Python message into a freshly allocated C message: a
calloc and a copy of every pixel. Fast DDS then serialises the C message (a copy) and hands it to
shared memory (a copy), so a 2 MP output costs four passes over its bytes before it leaves. Here
the C message is a ctypes mirror of ``sensor_msgs__msg__Image`` whose ``data`` points into the
message's own ``array('B')``: rcl serialises straight from it, two passes instead of four
(docs/ros-node.md, node overhead, has the measurement). rclpy offers no such path (no
loans for non-plain types, and ``publish_raw`` copies too), hence these few lines.

The mirror is checked once against the message's own generated C code (``_CONVERT_FROM_PY``
fills a C message from a probe; every field must read back the same through the mirror). Where
the check cannot run or fails (another ROS distribution's layout, no librcl by that name), and
for any publisher or message that is not a plain sensor_msgs/Image, images go through rclpy as
before: same bytes on the wire, only slower.
"""

from __future__ import annotations

import ctypes
import functools
from array import array
from typing import NamedTuple

from rclpy.publisher import Publisher
from sensor_msgs.msg import Image


class _Time(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_int32), ("nanosec", ctypes.c_uint32)]


class _String(ctypes.Structure):  # rosidl_runtime_c__String
    _fields_ = [("data", ctypes.c_char_p), ("size", ctypes.c_size_t), ("capacity", ctypes.c_size_t)]


class _Header(ctypes.Structure):  # std_msgs__msg__Header
    _fields_ = [("stamp", _Time), ("frame_id", _String)]


class _Bytes(ctypes.Structure):  # rosidl_runtime_c__uint8__Sequence
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_size_t), ("capacity", ctypes.c_size_t)]


class _CImage(ctypes.Structure):  # sensor_msgs__msg__Image (sensor_msgs/msg/detail/image__struct.h)
    _fields_ = [
        ("header", _Header),
        ("height", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("encoding", _String),
        ("is_bigendian", ctypes.c_uint8),
        ("step", ctypes.c_uint32),
        ("data", _Bytes),
    ]


class _ErrorString(ctypes.Structure):  # rcutils_error_string_t
    _fields_ = [("text", ctypes.c_char * 1024)]


def _string(text: str) -> _String:
    encoded = text.encode()  # the structure keeps a reference to it (ctypes' _objects)
    return _String(encoded, len(encoded), len(encoded) + 1)


def _mirror(msg: Image, pixels_address: int) -> _CImage:
    """The C message for ``msg`` with ``data`` at ``pixels_address``."""
    frame_id, encoding = _string(msg.header.frame_id), _string(msg.encoding)
    stamp = _Time(msg.header.stamp.sec, msg.header.stamp.nanosec)
    size = len(msg.data)
    return _CImage(
        _Header(stamp, frame_id),
        msg.height,
        msg.width,
        encoding,
        msg.is_bigendian,
        msg.step,
        _Bytes(pixels_address, size, size),
    )


_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi)
)


def _capsule_function(capsule, prototype):
    return prototype(_capsule_pointer(capsule, None))


def _mirror_matches_generated_code() -> bool:
    """Fill a C message from a probe with the message's generated converter; read it back."""
    type(Image).__import_type_support__()
    create = _capsule_function(Image._CREATE_ROS_MESSAGE, ctypes.PYFUNCTYPE(ctypes.c_void_p))
    convert = _capsule_function(
        Image._CONVERT_FROM_PY,
        ctypes.PYFUNCTYPE(ctypes.c_bool, ctypes.py_object, ctypes.c_void_p),
    )
    destroy = _capsule_function(
        Image._DESTROY_ROS_MESSAGE, ctypes.PYFUNCTYPE(None, ctypes.c_void_p)
    )
    probe = Image(height=0x01020304, width=0x05060708, encoding="probe-encoding", step=0x0A0B0C0D)
    probe.header.stamp.sec, probe.header.stamp.nanosec = -123456, 987654321
    probe.header.frame_id, probe.is_bigendian = "probe_frame", 1
    probe.data = array("B", b"\x11\x22\x33\x44\x55")
    address = create()
    if not address:
        return False
    try:
        if not convert(probe, address):
            return False
        c_image = _CImage.from_address(address)
        header, encoding, data = c_image.header, c_image.encoding, c_image.data
        # Numbers first: a pointer is read only once the fields around it proved where they are.
        return (
            (header.stamp.sec, header.stamp.nanosec) == (-123456, 987654321)
            and (c_image.height, c_image.width) == (0x01020304, 0x05060708)
            and (c_image.step, c_image.is_bigendian) == (0x0A0B0C0D, 1)
            and (header.frame_id.size, encoding.size, data.size) == (11, 14, 5)
            and ctypes.string_at(header.frame_id.data, 11) == b"probe_frame"
            and ctypes.string_at(encoding.data, 14) == b"probe-encoding"
            and ctypes.string_at(data.data, 5) == bytes(probe.data)
        )
    finally:
        destroy(address)


class _Rcl(NamedTuple):
    publish: object  # rcl_publish
    error_string: object  # rcutils_get_error_string
    reset_error: object  # rcutils_reset_error


@functools.cache
def _rcl() -> _Rcl | str:
    """The rcl functions the direct path calls, or why it cannot be used here."""
    try:
        # Already loaded by rclpy: dlopen by name returns that copy.
        rcl, rcutils = ctypes.CDLL("librcl.so"), ctypes.CDLL("librcutils.so")
        if not _mirror_matches_generated_code():
            return "this ROS distribution's sensor_msgs/Image does not match the ctypes mirror"
        publish = rcl.rcl_publish
        publish.restype, publish.argtypes = ctypes.c_int, [ctypes.c_void_p] * 3
        error_string = rcutils.rcutils_get_error_string
        error_string.restype, error_string.argtypes = _ErrorString, []
        rcutils.rcutils_reset_error.restype = None
        return _Rcl(publish, error_string, rcutils.rcutils_reset_error)
    except Exception as error:  # no librcl by that name (macOS, Windows), an odd rclpy, ...
        return f"{type(error).__name__}: {error}"


def unavailable_reason() -> str | None:
    """None when images go out through rcl_publish here, else why they go through rclpy."""
    functions = _rcl()
    return None if isinstance(functions, _Rcl) else functions


def publish_image(publisher, msg: Image) -> None:
    """``publisher.publish(msg)``, without rclpy's copy for a plain Image publisher and message."""
    functions, data = _rcl(), msg.data
    direct = (
        isinstance(functions, _Rcl)
        and type(msg) is Image  # rcl cannot tell a message of another type: it would misread it
        and publisher.msg_type is Image
        and type(publisher).publish is Publisher.publish  # no subclass gate (lifecycle) skipped
        and isinstance(data, array)
        and data.typecode == "B"
    )
    if not direct:
        publisher.publish(msg)
        return
    # The view pins the buffer: the array cannot be resized or freed while rcl reads it without
    # the GIL. The publisher's handle keeps it from being destroyed under the call, as in rclpy.
    with memoryview(data), publisher.handle:
        c_image = _mirror(msg, data.buffer_info()[0])
        result = functions.publish(publisher.handle.pointer, ctypes.byref(c_image), None)
    if result != 0:
        text = functions.error_string().text.decode(errors="replace")
        functions.reset_error()
        raise RuntimeError(f"rcl_publish failed ({result}): {text}")
