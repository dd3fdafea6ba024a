"""The exported graph: raw camera pixels in, (labels, OOD score, OOD mask) out.

Input ``(1, H, W, 3)`` uint8 RGB, exactly what a ROS ``rgb8`` image holds, so the runtime copies
no pixels; scaling to [0, 1] and the mean/std normalisation happen in the graph (the segmenter
normalises inside). Outputs are ``(1, H, W)``: labels uint8, score float32 or float16, mask uint8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nflowjs.head import OutlierAwareSegmenter
from nflowjs.networks import LadderDenseNet


class CameraFrameModel(nn.Module):
    def __init__(self, head: OutlierAwareSegmenter, score_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.head = head
        self.score_dtype = score_dtype

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = rgb.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
        labels, score, mask = self.head(image)
        return labels, score.to(self.score_dtype), mask


class ResizingSegmenter(nn.Module):
    """Runs the segmenter at a fixed ``size`` and returns logits at the caller's size.

    This is the dynamic-size graph: any camera resolution goes in, the network always sees
    the bundle's resolution (so SPP grids, cost and accuracy are those it was exported for),
    and the stride-4 logits are upsampled straight to the input size. A graph that ran the
    network itself at any size cannot be exported: the SPP's adaptive pooling becomes index
    tables fixed at the export size.
    """

    def __init__(self, segmenter: LadderDenseNet, size: tuple[int, int]):
        super().__init__()
        self.segmenter = segmenter
        self.size = size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # No antialiasing: TensorRT's ONNX parser rejects antialiased Resize nodes.
        resized = F.interpolate(image, self.size, mode="bilinear", align_corners=False)
        logits = self.segmenter.forward_stride4(resized)
        return F.interpolate(logits, image.shape[-2:], mode="bilinear", align_corners=False)
