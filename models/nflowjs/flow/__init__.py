"""Normalizing flows: the DenseFlow-style image flow and its invertible layers."""

from nflowjs.flow.denseflow import DENSEFLOW_PRESETS, DenseFlow, DenseFlowConfig

__all__ = ["DENSEFLOW_PRESETS", "DenseFlow", "DenseFlowConfig"]
