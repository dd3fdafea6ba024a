"""From the backend's (labels, score, mask) to the node's output images, in OpenCV and numpy.

Each output is one or two whole-frame OpenCV/numpy calls (table look-ups, a weighted sum) that
write into buffers kept between frames: at 2 MP a fresh 2-6 MB array per step costs more than
the arithmetic (page faults on newly mapped memory), and numpy's fancy indexing costs several
milliseconds where a look-up table costs a fraction of one. The returned arrays are those
buffers, or into ``out`` (the output message's own buffer, image_messages.OutputImage.pixels):
publish (copy) them before the next frame is processed.
"""

from __future__ import annotations

import cv2
import numpy as np

from nflowjs_perception.bundle import Bundle

HEATMAP_SCALES = {"mono8": (255.0, cv2.CV_8U), "16UC1": (65535.0, cv2.CV_16U)}
UNKNOWN_COLOR = (255, 0, 255)  # magenta: no road-scene class uses it, so OOD stands out


class Postprocessor:
    def __init__(self, bundle: Bundle):
        self.unknown_id = np.uint8(bundle.unknown_id)
        palette = np.zeros((256, 1, 3), np.uint8)  # a user colour map: a plain 3-channel look-up
        for c in bundle.classes:
            palette[c.id, 0] = c.color
        palette[bundle.unknown_id, 0] = UNKNOWN_COLOR
        self.palette = palette
        self.drivable = np.zeros(256, np.uint8)
        self.drivable[bundle.drivable_class_ids] = 1
        self._shape = None

    def _buffers(self, shape: tuple[int, int]) -> None:
        if shape != self._shape:
            self._shape = shape
            self._scratch = np.empty(shape, np.uint8)
            self._segmentation = np.empty(shape, np.uint8)
            self._obstacles = np.empty(shape, np.uint8)
            self._colors = np.empty((*shape, 3), np.uint8)
            self._overlay = np.empty((*shape, 3), np.uint8)
            self._heat = {"mono8": np.empty(shape, np.uint8), "16UC1": np.empty(shape, np.uint16)}

    def segmentation(self, labels: np.ndarray, mask: np.ndarray, out=None) -> np.ndarray:
        """Outlier-aware labels: OOD pixels get the bundle's unknown id.

        ``unknown_id`` is larger than every class id (the bundle guarantees it) and ``mask`` is
        0/1, so a per-pixel maximum with ``mask * unknown_id`` is the masked assignment.
        """
        self._buffers(labels.shape)
        np.multiply(mask, self.unknown_id, out=self._scratch)
        return np.maximum(labels, self._scratch, out=self._segmentation if out is None else out)

    def obstacle_mask(
        self, labels: np.ndarray, mask: np.ndarray, min_area: int, out=None
    ) -> np.ndarray:
        """0/255: OOD regions on or touching drivable pixels; regions under ``min_area`` dropped.

        "On" uses the closed-set labels under the OOD pixels (the segmenter's best guess of what
        the object stands on), "touching" a 3x3 dilation of the drivable area. Components are
        found only inside the OOD pixels' bounding box (grown by the 1-pixel touch margin):
        anomalies are usually small, and labelling the whole frame costs ~7 ms at 2 MP.
        """
        self._buffers(labels.shape)
        out = self._obstacles if out is None else out
        out.fill(0)
        x, y, w, h = cv2.boundingRect(mask)
        if w == 0:
            return out
        x0, y0 = max(x - 1, 0), max(y - 1, 0)
        x1, y1 = min(x + w + 1, mask.shape[1]), min(y + h + 1, mask.shape[0])
        box_mask = mask[y0:y1, x0:x1]
        count, components, stats, _ = cv2.connectedComponentsWithStats(box_mask, connectivity=8)
        drivable = cv2.LUT(labels[y0:y1, x0:x1], self.drivable)
        near_drivable = cv2.dilate(drivable, np.ones((3, 3), np.uint8))
        touching = np.unique(components[(near_drivable & box_mask).view(bool)])
        keep = np.zeros(max(count, 256), np.uint8)
        keep[touching] = 255
        keep[:count][stats[:, cv2.CC_STAT_AREA] < min_area] = 0
        keep[0] = 0  # background
        if count <= 256:
            out[y0:y1, x0:x1] = cv2.LUT(components.astype(np.uint8), keep[:256])
        else:
            out[y0:y1, x0:x1] = keep[components]
        return out

    def heatmap(self, score: np.ndarray, encoding: str, out=None) -> np.ndarray:
        """The score as ``encoding``: 32FC1 as it is, mono8 x 255, 16UC1 x 65535.

        The integer forms are a quarter / half of the float's bytes and show in image_view
        without a colour range (a [0, 1] float image looks black there). One OpenCV pass each,
        the same rule for both: the exact product rounded to the nearest integer (the one tie, a
        score of 0.5, to even), saturated (below 0 -> 0, above 1 -> the maximum), NaN -> 0
        without a warning.
        """
        score = score.astype(np.float32, copy=False)
        if encoding == "32FC1":
            if out is None:
                return score
            np.copyto(out, score)
            return out
        self._buffers(score.shape)
        scale, depth = HEATMAP_SCALES[encoding]
        out = self._heat[encoding] if out is None else out
        return cv2.multiply(score, scale, dst=out, dtype=depth)

    def overlay(
        self, rgb: np.ndarray, segmentation: np.ndarray, opacity: float, out=None
    ) -> np.ndarray:
        """The camera image blended with class colours; OOD pixels in magenta."""
        self._buffers(segmentation.shape)
        cv2.applyColorMap(segmentation, self.palette, dst=self._colors)
        out = self._overlay if out is None else out
        return cv2.addWeighted(rgb, 1.0 - opacity, self._colors, opacity, 0.0, dst=out)


def to_input_size(labels, score, height: int, width: int):
    """Labels (nearest) and score (linear) at the model's size -> the camera's."""
    size = (width, height)
    return (
        cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST),
        cv2.resize(score.astype(np.float32, copy=False), size, interpolation=cv2.INTER_LINEAR),
    )


def to_model_size(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The camera frame at the model's input size (area averaging when shrinking)."""
    if rgb.shape[:2] == (height, width):
        return np.ascontiguousarray(rgb)
    shrinking = rgb.shape[0] > height or rgb.shape[1] > width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)
