"""Segmentation networks."""

from nflowjs.networks.ldn import LDN_PRESETS, LadderDenseNet, LDNConfig, ldn_config

__all__ = ["LDN_PRESETS", "LDNConfig", "LadderDenseNet", "ldn_config"]
