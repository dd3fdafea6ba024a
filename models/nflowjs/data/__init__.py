"""Datasets (uint8 images, labels with 255 as ignore, OOD masks 0/1/255) and augmentations."""

from nflowjs.data.bsb import BSB_OOD_HELD_OUT, BSBAerial
from nflowjs.data.camvid import CAMVID_CLASSES, CAMVID_OOD_HELD_OUT, CamVid
from nflowjs.data.cityscapes import CITYSCAPES_CLASSES, Cityscapes, cityscapes_train_id
from nflowjs.data.ood_sets import FishyscapesLostAndFound, LostAndFound, SegmentMeIfYouCan
from nflowjs.data.registry import build_dataset, dataset_names, is_ood_only
from nflowjs.data.streethazards import STREETHAZARDS_RAW_CLASSES, StreetHazards
from nflowjs.data.transforms import IGNORE_ID, training_transform
from nflowjs.data.vistas import VISTAS_TO_CITYSCAPES, Vistas
from nflowjs.data.wilddash import WILDDASH_TO_CITYSCAPES, WildDash2

__all__ = [
    "BSB_OOD_HELD_OUT",
    "CAMVID_CLASSES",
    "CAMVID_OOD_HELD_OUT",
    "CITYSCAPES_CLASSES",
    "IGNORE_ID",
    "STREETHAZARDS_RAW_CLASSES",
    "VISTAS_TO_CITYSCAPES",
    "WILDDASH_TO_CITYSCAPES",
    "BSBAerial",
    "CamVid",
    "Cityscapes",
    "FishyscapesLostAndFound",
    "LostAndFound",
    "SegmentMeIfYouCan",
    "StreetHazards",
    "Vistas",
    "WildDash2",
    "build_dataset",
    "cityscapes_train_id",
    "dataset_names",
    "is_ood_only",
    "training_transform",
]
