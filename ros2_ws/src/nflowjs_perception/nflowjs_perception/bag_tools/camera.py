"""Cityscapes-style camera JSON -> intrinsics for CameraInfo and the vehicle -> optical frame TF.

The file (``camera/<split>/<sequence>/<frame>_camera.json`` in Cityscapes and, by the same
convention, LostAndFound) reads ``{"intrinsic": {"fx", "fy", "u0", "v0"}, "extrinsic": {"x",
"y", "z", "yaw", "pitch", "roll", "baseline"}}`` (metres, radians).

Axes. The vehicle frame V is ISO 8855: x forward, y left, z up, origin on the ground below the
rear-axle centre (what vehicle stacks such as Autoware call ``base_link``). The extrinsic places
the camera at (x, y, z) in V, oriented by R_V_C = Rz(yaw) Ry(pitch) Rx(roll), where the camera
frame C keeps V's axis directions (cityscapesScripts, docs/csCalibration.pdf). A ROS optical
frame (REP 103, ``*_optical_frame``) has z forward, x right, y down, so it is C rotated:
x_O = -y_C, y_O = -z_C, z_O = x_C. The bag carries this as a ``/tf_static`` transform
``base_link -> camera_optical_frame`` and the intrinsics as CameraInfo K and P.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Columns: the optical frame's x, y, z axes written in the ISO 8855 camera frame C.
R_CAMERA_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class Calibration:
    k: np.ndarray  # 3x3 intrinsic matrix of the (rectified) image
    translation: np.ndarray  # camera position in the vehicle frame, metres
    rotation: np.ndarray  # 3x3 R_V_O: optical-frame axes in vehicle coordinates

    def quaternion_xyzw(self) -> np.ndarray:
        return quaternion_from_matrix(self.rotation)

    def same_pose(self, other: Calibration | None) -> bool:
        return (
            other is not None
            and np.allclose(self.translation, other.translation)
            and np.allclose(self.rotation, other.rotation)
        )


def rotation_ypr(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    cy, sy, cp, sp, cr, sr = (f(a) for a in (yaw, pitch, roll) for f in (np.cos, np.sin))
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def quaternion_from_matrix(r: np.ndarray) -> np.ndarray:
    """(x, y, z, w) of a rotation matrix, w >= 0 (Shepperd's method: stable for any angle)."""
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0, 0.0, 0.0, (r[k, j] - r[j, k]) / s]
        q[i], q[j], q[k] = s / 4, (r[j, i] + r[i, j]) / s, (r[k, i] + r[i, k]) / s
    q = np.array(q)
    return q if q[3] >= 0 else -q


def read_camera_json(path: Path) -> Calibration:
    """A Cityscapes-style camera JSON as a Calibration; errors name the file and the key."""
    try:
        data = json.loads(Path(path).read_text())
        intrinsic, extrinsic = data["intrinsic"], data["extrinsic"]
        fx, fy, u0, v0 = (float(intrinsic[key]) for key in ("fx", "fy", "u0", "v0"))
        position = [float(extrinsic[key]) for key in ("x", "y", "z")]
        angles = [float(extrinsic[key]) for key in ("yaw", "pitch", "roll")]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: not a Cityscapes-style camera file ({type(error).__name__}: {error}); "
            'expected {"intrinsic": {fx, fy, u0, v0}, "extrinsic": {x, y, z, yaw, pitch, roll}}'
        ) from error
    k = np.array([[fx, 0.0, u0], [0.0, fy, v0], [0.0, 0.0, 1.0]])
    rotation = rotation_ypr(*angles) @ R_CAMERA_OPTICAL
    return Calibration(k=k, translation=np.array(position), rotation=rotation)
