"""Class colours for overlays: the datasets' own palettes, looked up by class name."""

from __future__ import annotations

import colorsys

# CamVid's colours as in the SegNet release (the 11-class subset).
CAMVID_COLORS = {
    "sky": (128, 128, 128),
    "building": (128, 0, 0),
    "pole": (192, 192, 128),
    "road": (128, 64, 128),
    "pavement": (60, 40, 222),
    "tree": (128, 128, 0),
    "sign/symbol": (192, 128, 128),
    "fence": (64, 64, 128),
    "car": (64, 0, 128),
    "pedestrian": (64, 64, 0),
    "bicyclist": (0, 128, 192),
}

# Names of drivable surfaces across our datasets, for the obstacle mask's default.
DRIVABLE_NAMES = ("road", "road line")


def _cityscapes_colors() -> dict[str, tuple[int, int, int]]:
    from cityscapesscripts.helpers.labels import labels

    return {label.name: tuple(label.color) for label in labels if 0 <= label.trainId < 255}


def class_colors(names: list[str]) -> list[tuple[int, int, int]]:
    """A colour per class: dataset palettes first, evenly spaced hues for unknown names."""
    known = {**_cityscapes_colors(), **CAMVID_COLORS}
    colors = []
    for i, name in enumerate(names):
        if name in known:
            colors.append(known[name])
        else:
            r, g, b = colorsys.hsv_to_rgb(i / max(len(names), 1), 0.7, 0.9)
            colors.append((round(255 * r), round(255 * g), round(255 * b)))
    return colors
