"""The fused inference head: segmenter logits -> (labels, OOD score, OOD mask) in one graph.

Paper Figure 4: arg-max gives the closed-set labels; temperature softmax and the JS divergence
to the uniform distribution give the dense OOD score; where the score exceeds the dataset-wide
threshold delta the pixel is flagged (and, with ``unknown_id``, relabelled as unknown).
Shapes are static given the input and there is no data-dependent Python control flow, so the
module traces and exports (ONNX / TensorRT) as one graph.
"""

from __future__ import annotations

import torch
from torch import nn

from nflowjs.scores import jsd_ood_score


class OutlierAwareSegmenter(nn.Module):
    """Wraps a segmenter ``f(rgb01 NCHW) -> logits NKHW`` (logits at input resolution).

    Returns ``labels`` uint8 (N, H, W), ``score`` float32 (N, H, W) in [0, 1] (see
    ``nflowjs.scores.jsd_ood_score``) and ``ood_mask`` uint8 (N, H, W), 1 where
    score >= threshold (as the metrics and their thresholds count it).
    """

    def __init__(
        self,
        segmenter: nn.Module,
        num_classes: int,
        temperature: float = 2.0,
        threshold: float = 0.5,
        unknown_id: int | None = None,
    ):
        super().__init__()
        if not 1 < num_classes <= 255:
            raise ValueError(f"num_classes={num_classes}: labels are uint8, so 2..255 classes fit")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0 (the paper uses T=2)")
        if unknown_id is not None and not 0 <= unknown_id <= 255:
            raise ValueError(f"unknown_id={unknown_id} must fit in uint8 (0..255)")
        self.segmenter = segmenter
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.threshold = float(threshold)
        self.unknown_id = unknown_id

    def forward(self, rgb01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.segmenter(rgb01).float()
        labels = logits.argmax(dim=1).to(torch.uint8)  # ONNX ArgMax is int64: cast in-graph
        score = jsd_ood_score(logits, self.temperature, dim=1)
        is_ood = score >= self.threshold
        if self.unknown_id is not None:
            labels = torch.where(is_ood, torch.full_like(labels, self.unknown_id), labels)
        return labels, score, is_ood.to(torch.uint8)
