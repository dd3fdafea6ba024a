"""Image and label files -> numpy arrays, as the repository's loaders read them (no torch).

16-bit images (LostAndFound ``leftImg16bit``). ROS consumers, our node included, take 8-bit
rgb8, so 16-bit pixels are mapped linearly: ``v8 = round(v16 * 255 / (2**bits - 1))``, where
``bits`` is how many of the 16 bits the sensor data uses (the HDR camera data of Cityscapes-style
releases typically fill 12; "auto" takes the smallest of 8, 10, 12, 14, 16 that holds the
brightest pixel of a sample of frames, and values above it are clipped and counted). This is a
plain linear scale, not the tone mapping the dataset authors used for ``leftImg8bit``: such
frames look darker and flatter than the 8-bit release and a model trained on 8-bit images
scores them differently. Use ``leftImg8bit`` to compare with published numbers; convert the
16-bit images to study the raw sensor data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def read_rgb8(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB, as ``nflowjs.data.samples.read_rgb`` (PIL, converted to RGB)."""
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def read_label(path: Path) -> np.ndarray:
    """HxW uint8 label ids (a palette PNG gives its indices, as the loaders read it)."""
    with Image.open(path) as image:
        ids = np.asarray(image)
    if ids.ndim != 2:
        raise ValueError(f"{path}: a label image must have one channel, found shape {ids.shape}")
    if ids.dtype != np.uint8:
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ValueError(f"{path}: label ids must fit 8 bits, found up to {ids.max()}")
        ids = ids.astype(np.uint8)
    return ids


def read_rgb16(path: Path) -> np.ndarray:
    """HxWx3 uint16 RGB from a 16-bit PNG (OpenCV: Pillow truncates 16-bit colour to 8 bits)."""
    try:
        import cv2  # only the 16-bit path needs OpenCV
    except ImportError as error:
        raise ImportError(
            "16-bit images need OpenCV: pip install opencv-python-headless (or apt install "
            "python3-opencv), or convert leftImg8bit instead"
        ) from error
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError(f"{path}: OpenCV could not read this image")
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2).astype(np.uint16)
    return np.ascontiguousarray(pixels[:, :, 2::-1]).astype(np.uint16)  # BGR(A) -> RGB


def detect_bits(paths: list[Path], samples: int = 8) -> int:
    """Bits the sensor data uses: from the brightest pixel of up to ``samples`` spread frames."""
    picks = sorted({round(i * (len(paths) - 1) / max(samples - 1, 1)) for i in range(samples)})
    brightest = max(int(read_rgb16(paths[i]).max()) for i in picks if i < len(paths))
    return next(b for b in (8, 10, 12, 14, 16) if brightest < 2**b)


def to_8bit(pixels: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """Linear map of ``bits``-bit data to uint8; returns the image and how many values clipped."""
    top = 2**bits - 1
    clipped = int((pixels > top).sum())
    scaled = (np.minimum(pixels, top).astype(np.uint32) * 255 + top // 2) // top
    return scaled.astype(np.uint8), clipped
