"""The ROS messages the bag tools write and read, built with rosbags (no ROS install needed).

Messages are serialized with rosbags' typestore for ROS 2 Jazzy; the definitions of every type
used here (Image, CameraInfo, TFMessage, Clock) hash identically in Jazzy and Kilted, so the
bags play on either.
"""

from __future__ import annotations

import struct

import numpy as np
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
CLOCK = "rosgraph_msgs/msg/Clock"

IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
OOD_MASK_TOPIC = "/ground_truth/ood_mask"
LABELS_TOPIC = "/ground_truth/labels"
TF_STATIC_TOPIC = "/tf_static"

_T = TYPESTORE.types
# encoding -> (numpy dtype, channels) for the encodings the tools write or score
ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "mono8": (np.uint8, 1),
    "32FC1": (np.float32, 1),
    "16FC1": (np.float16, 1),
}


def time_msg(ns: int):
    """builtin_interfaces/Time from integer nanoseconds."""
    return _T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def header(ns: int, frame_id: str):
    return _T["std_msgs/msg/Header"](stamp=time_msg(ns), frame_id=frame_id)


def stamp_ns(stamp) -> int:
    """A Time message (rosbags or rclpy) as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def serialize(msg) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes, msgtype: str):
    return TYPESTORE.deserialize_cdr(data, msgtype)


def image_msg(pixels: np.ndarray, ns: int, frame_id: str, encoding: str) -> bytes:
    """Serialized sensor_msgs/Image of an HxW or HxWxC array, rows packed (step = W*C*size)."""
    pixels = np.ascontiguousarray(pixels)
    dtype, channels = ENCODINGS[encoding]
    if pixels.dtype != dtype or (pixels.shape[2] if pixels.ndim == 3 else 1) != channels:
        raise ValueError(
            f"{encoding} needs {channels} channel(s) of {np.dtype(dtype)}, "
            f"got {pixels.shape} {pixels.dtype}"
        )
    msg = _T[IMAGE](
        header=header(ns, frame_id),
        height=pixels.shape[0],
        width=pixels.shape[1],
        encoding=encoding,
        is_bigendian=int(pixels.dtype.byteorder == ">"),
        step=pixels.strides[0],
        data=pixels.reshape(-1).view(np.uint8),
    )
    return serialize(msg)


def image_array(msg) -> np.ndarray:
    """A deserialized Image (rosbags) as HxW or HxWxC numpy, honouring ``step`` and endianness."""
    if msg.encoding not in ENCODINGS:
        raise ValueError(
            f"unsupported image encoding {msg.encoding!r}; expected one of {', '.join(ENCODINGS)}"
        )
    dtype, channels = ENCODINGS[msg.encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = msg.width * channels * dtype.itemsize
    data = np.frombuffer(msg.data, dtype=np.uint8)  # numpy (rosbags) or bytes (mcap_ros2)
    if msg.step < row_bytes or data.size < msg.step * msg.height:
        raise ValueError(
            f"{msg.encoding} image {msg.width}x{msg.height} with step {msg.step} "
            f"has {data.size} bytes"
        )
    rows = data[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).astype(dtype.newbyteorder("="))
    shape = (msg.height, msg.width, channels) if channels > 1 else (msg.height, msg.width)
    return pixels.reshape(shape)


def camera_info_msg(
    ns: int, frame_id: str, width: int, height: int, k: np.ndarray | None = None
) -> bytes:
    """Serialized CameraInfo for a rectified image; ``k`` None: uncalibrated (all zero, as the
    message definition asks: "K[0] == 0.0 indicates an uncalibrated camera")."""
    k = np.zeros((3, 3)) if k is None else np.asarray(k, dtype=np.float64)
    calibrated = k[0, 0] != 0
    p = np.zeros((3, 4))
    p[:, :3] = k
    msg = _T[CAMERA_INFO](
        header=header(ns, frame_id),
        height=height,
        width=width,
        # Cityscapes-style releases ship rectified, undistorted images: zero plumb_bob terms.
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=k.reshape(-1),
        r=(np.eye(3) if calibrated else np.zeros((3, 3))).reshape(-1),
        p=p.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=_T["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )
    return serialize(msg)


def tf_static_msg(
    ns: int, parent: str, child: str, translation: np.ndarray, quaternion_xyzw: np.ndarray
) -> bytes:
    """Serialized tf2_msgs/TFMessage with one transform parent -> child."""
    tx, ty, tz = (float(v) for v in translation)
    qx, qy, qz, qw = (float(v) for v in quaternion_xyzw)
    transform = _T["geometry_msgs/msg/TransformStamped"](
        header=header(ns, parent),
        child_frame_id=child,
        transform=_T["geometry_msgs/msg/Transform"](
            translation=_T["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
            rotation=_T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
        ),
    )
    return serialize(_T[TF_MESSAGE](transforms=[transform]))


def header_stamp_ns(cdr: bytes) -> int:
    """The header stamp of a serialized message whose first field is a std_msgs/Header.

    Reading the 8 bytes after the CDR encapsulation header avoids deserializing (and copying)
    a whole image just to learn which frame it belongs to.
    """
    little = cdr[1] & 1  # encapsulation kind: 0x0001 CDR_LE, 0x0000 CDR_BE
    sec, nanosec = struct.unpack_from("<iI" if little else ">iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec
