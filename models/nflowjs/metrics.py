"""Dense OOD and segmentation metrics, accumulated over a whole dataset in bounded memory.

Conventions (REFERENCE.md; SegmentMeIfYouCan style): pixel level, pooled over every pixel of the
dataset, ground truth 0 = inlier, 1 = anomaly, 255 = void (excluded); a higher score means more
anomalous. AP is scikit-learn's step-wise ``average_precision_score``, AUROC the trapezoid rule,
FPR95 the false-positive rate at the first threshold (from high to low) where TPR >= 0.95.

A 2 MP test set has billions of pixels, so scores are not kept: each one lands in one of 2^20
buckets that are ordered like the float32 values (the top 20 bits of an order-preserving integer
view: sign, exponent and 11 mantissa bits, so scores within 2^-11 relative may share a bucket
and count as tied). Two histograms of 2^20 int64 counts (16 MiB) hold a dataset of any size;
tests bound the difference to the exact scikit-learn values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

IGNORE = 255
_BUCKET_BITS = 20


def _order_preserving_buckets(scores: torch.Tensor) -> torch.Tensor:
    """float32 scores -> int64 bucket ids in [0, 2^20), monotone non-decreasing in the score."""
    bits = scores.float().contiguous().view(torch.int32).long() & 0xFFFFFFFF
    negative = bits >= 0x80000000
    keys = torch.where(negative, 0xFFFFFFFF - bits, bits + 0x80000000)
    return keys >> (32 - _BUCKET_BITS)


@dataclass(frozen=True)
class OODMetrics:
    ap: float
    fpr95: float
    auroc: float
    inliers: int
    anomalies: int

    def as_dict(self) -> dict[str, float]:
        return {"AP": self.ap, "FPR95": self.fpr95, "AUROC": self.auroc}


class OODMetricAccumulator:
    """Streams (score, ood ground truth) pairs; ``compute()`` gives pooled AP, FPR95 and AUROC."""

    def __init__(self, device: torch.device | str = "cpu"):
        size = 1 << _BUCKET_BITS
        self.inlier_counts = torch.zeros(size, dtype=torch.int64, device=device)
        self.anomaly_counts = torch.zeros(size, dtype=torch.int64, device=device)

    def update(self, scores: torch.Tensor, ood_gt: torch.Tensor) -> None:
        """``scores`` float of any shape; ``ood_gt`` the same shape with 0 / 1 / 255 (void)."""
        if scores.shape != ood_gt.shape:
            raise ValueError(f"scores {tuple(scores.shape)} vs ground truth {tuple(ood_gt.shape)}")
        ood_gt = ood_gt.to(scores.device)
        valid = ood_gt != IGNORE
        bad = valid & (ood_gt != 0) & (ood_gt != 1)
        if bad.any():
            found = sorted({int(v) for v in ood_gt[bad].unique()})
            raise ValueError(f"OOD ground truth must be 0, 1 or {IGNORE}; found values {found}")
        if torch.isnan(scores[valid]).any():
            raise ValueError("OOD scores contain NaN; check the model output")
        buckets = _order_preserving_buckets(scores[valid])
        is_anomaly = ood_gt[valid] == 1
        size = self.inlier_counts.numel()
        self.anomaly_counts += torch.bincount(buckets[is_anomaly], minlength=size)
        self.inlier_counts += torch.bincount(buckets[~is_anomaly], minlength=size)

    def compute(self) -> OODMetrics:
        inl = self.inlier_counts.cpu().numpy()[::-1]  # from the highest score down
        ano = self.anomaly_counts.cpu().numpy()[::-1]
        occupied = (inl + ano) > 0
        fp = np.cumsum(inl)[occupied].astype(np.float64)
        tp = np.cumsum(ano)[occupied].astype(np.float64)
        n_in, n_ano = int(inl.sum()), int(ano.sum())
        if n_in == 0 or n_ano == 0:
            return OODMetrics(math.nan, math.nan, math.nan, n_in, n_ano)
        tpr = tp / n_ano
        fpr = fp / n_in
        precision = tp / (tp + fp)
        ap = float(np.sum(np.diff(np.r_[0.0, tpr]) * precision))
        auroc = float(np.trapezoid(np.r_[0.0, tpr], np.r_[0.0, fpr]))
        fpr95 = float(fpr[np.searchsorted(tpr, 0.95 - 1e-12)])
        return OODMetrics(ap, fpr95, auroc, n_in, n_ano)

    def threshold_at_tpr(self, tpr_target: float = 0.95) -> float:
        """The highest threshold whose TPR reaches ``tpr_target`` (a lower bucket edge).

        Scores >= the returned value are flagged; used for open-mIoU (StreetHazards style).
        """
        if self.anomaly_counts.sum() == 0:
            raise ValueError("no anomaly pixels were seen, so no TPR threshold exists")
        tpr = self._flagged_from_top(self.anomaly_counts)
        return _bucket_floor(len(tpr) - 1 - int(np.searchsorted(tpr, tpr_target - 1e-12)))

    def threshold_at_fpr(self, fpr_target: float) -> float:
        """The lowest threshold (a bucket edge) that flags at most ``fpr_target`` of inliers.

        The operating point a robot wants: the most anomalies found within a false-alarm budget.
        """
        if self.inlier_counts.sum() == 0:
            raise ValueError("no inlier pixels were seen, so no false-positive rate exists")
        fpr = self._flagged_from_top(self.inlier_counts)
        within = int(np.searchsorted(fpr, fpr_target + 1e-12, side="right"))  # buckets from top
        return _bucket_floor(len(fpr) - within) if within else math.inf

    def rates_at(self, threshold: float) -> tuple[float, float]:
        """(TPR, FPR) of flagging scores >= ``threshold``."""
        if math.isinf(threshold):
            return 0.0, 0.0
        first = int(_order_preserving_buckets(torch.tensor([threshold]))[0])
        rates = []
        for counts in (self.anomaly_counts, self.inlier_counts):
            counts = counts.cpu().numpy()
            rates.append(float(counts[first:].sum() / max(1, counts.sum())))
        return rates[0], rates[1]

    @staticmethod
    def _flagged_from_top(counts: torch.Tensor) -> np.ndarray:
        """Fraction of ``counts`` at or above each bucket, from the highest bucket down."""
        counts = counts.cpu().numpy()
        return np.cumsum(counts[::-1]) / counts.sum()


def _bucket_floor(bucket: int) -> float:
    """The smallest float32 score in ``bucket`` (the inverse of ``_order_preserving_buckets``)."""
    key = np.uint32(bucket << (32 - _BUCKET_BITS))
    bits = key - np.uint32(0x80000000) if key >= 0x80000000 else np.uint32(0xFFFFFFFF) - key
    value = float(np.array([bits], dtype=np.uint32).view(np.float32)[0])
    return -math.inf if math.isnan(value) else value  # the bucket of -inf starts in NaN codes


class ConfusionMatrix:
    """Pixel confusion matrix for mIoU; rows ground truth, columns prediction, void ignored."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        k = self.num_classes
        valid = target != IGNORE
        target, prediction = target[valid].long(), prediction.to(target.device)[valid].long()
        if target.numel() and (int(target.max()) >= k or int(prediction.max()) >= k):
            raise ValueError(f"labels must be < {k} (or {IGNORE} for void)")
        self.matrix += torch.bincount(target * k + prediction, minlength=k * k).view(k, k)

    def iou(self) -> np.ndarray:
        m = self.matrix.cpu().numpy().astype(np.float64)
        tp = np.diag(m)
        union = m.sum(0) + m.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        return float(np.nanmean(self.iou()))


def open_set_labels(
    closed_prediction: torch.Tensor, is_ood: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Closed-set predictions with pixels flagged OOD relabelled as class ``num_classes``."""
    return torch.where(is_ood, torch.full_like(closed_prediction, num_classes), closed_prediction)


def open_miou(open_confusion: ConfusionMatrix) -> float:
    """Open-mIoU (Grcić et al.): IoU over the K inlier classes of a (K+1)-class confusion.

    Anomalies predicted as a known class count as false positives of that class and inliers
    flagged OOD as false negatives; true-positive anomalies are not rewarded.
    """
    inlier_iou = open_confusion.iou()[:-1]
    return float(np.nanmean(inlier_iou))
