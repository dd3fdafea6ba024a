"""Building blocks of the ladder-style upsampling path (BN-ReLU-conv units, SPP, ladder stage)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_checkpointed(module: nn.Module, x: torch.Tensor, enabled: bool) -> torch.Tensor:
    """Run ``module(x)``, recomputing its activations in backward when ``enabled`` and training.

    The recomputation in backward runs BatchNorm again: wrap backward passes in
    ``batchnorm_statistics_kept`` so that running statistics are updated by the forward only.
    """
    if enabled and module.training and torch.is_grad_enabled():
        return checkpoint(module, x, use_reentrant=False)
    return module(x)


@contextmanager
def batchnorm_statistics_kept(model: nn.Module) -> Iterator[None]:
    """Inside the block, train-mode BatchNorm layers of ``model`` leave their running statistics
    (and batch counters) as they were; they still normalise with batch statistics.

    For backward passes under gradient checkpointing: each recomputation would otherwise update
    the running statistics again with the same batch (twice per stage-1 step, three times per
    stage-2 step, which backpropagates through the segmenter twice). Momentum 0 makes the update
    a no-op; gradients do not depend on it.
    """
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, batches) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(batches)


class BNReluConv(nn.Sequential):
    """Pre-activation unit BN -> ReLU -> conv (k x k, 'same' padding), as in ladder DenseNets."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, bias: bool = False
    ):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias
        )


class SpatialPyramidPooling(nn.Module):
    """SPP over the stride-32 features, with pooling grids that follow the image's aspect ratio.

    Level ``g`` pools to ``(g, max(1, round(g * W / H)))`` cells, so a 1024x2048 image gets grids
    8x16, 4x8, 2x4, 1x2 and a 360x480 one 8x11, 4x5, 2x3, 1x1.
    """

    def __init__(
        self,
        in_channels: int,
        bottleneck: int,
        level_width: int,
        out_channels: int,
        grids: tuple[int, ...],
    ):
        super().__init__()
        self.grids = grids
        self.bottleneck = BNReluConv(in_channels, bottleneck)
        self.levels = nn.ModuleList(BNReluConv(bottleneck, level_width) for _ in grids)
        self.fuse = BNReluConv(bottleneck + len(grids) * level_width, out_channels)
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = run_checkpointed(self.bottleneck, x, self.checkpointing)
        h, w = x.shape[-2:]
        pyramid = [x]
        for g, level in zip(self.grids, self.levels, strict=True):
            pooled = F.adaptive_avg_pool2d(x, (g, max(1, round(g * w / h))))
            pooled = level(pooled)
            pyramid.append(F.interpolate(pooled, (h, w), mode="bilinear", align_corners=False))
        return run_checkpointed(self.fuse, torch.cat(pyramid, 1), self.checkpointing)


class LadderUpsample(nn.Module):
    """One ladder stage: project the skip to the current width, add the upsampled map, blend 3x3."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.skip = BNReluConv(skip_channels, in_channels)
        self.blend = BNReluConv(in_channels, out_channels, kernel_size=3)
        self.checkpointing = False

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        skip = run_checkpointed(self.skip, skip, self.checkpointing)
        x = F.interpolate(x, skip.shape[-2:], mode="bilinear", align_corners=False)
        return run_checkpointed(self.blend, x + skip, self.checkpointing)
