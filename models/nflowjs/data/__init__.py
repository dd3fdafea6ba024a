"""Datasets (each yields uint8 images with labels in the project's ignore-255 convention)."""

from nflowjs.data.camvid import CAMVID_CLASSES, CAMVID_OOD_HELD_OUT, CamVid
from nflowjs.data.transforms import IGNORE_ID, training_transform

__all__ = ["CAMVID_CLASSES", "CAMVID_OOD_HELD_OUT", "IGNORE_ID", "CamVid", "training_transform"]
