"""DenseFlow's coupling network: 1x1 conv, then Nystrom attention and a dense block in parallel,
concatenated, BN-ReLU-1x1, and a zero-initialised 1x1 that makes each coupling start as identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _iterative_pinv(a: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of row-stochastic matrices by Newton-Schulz iterations.

    Nystromformer's choice: only matmuls, so it is fast on GPUs and has well-behaved gradients,
    unlike an SVD-based ``torch.linalg.pinv``.
    """
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    scale = a.abs().sum(-1).amax(-1) * a.abs().sum(-2).amax(-1)
    z = a.transpose(-1, -2) / scale[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


class NystromAttention(nn.Module):
    """Multi-head self-attention over all pixels with the Nystrom approximation (Xiong et al. 2021).

    Landmarks are segment means of queries/keys taken with adaptive pooling, so any number of
    tokens works (no divisibility constraint); with at most ``landmarks`` tokens it is exact.
    """

    def __init__(self, channels: int, heads: int = 4, landmarks: int = 64):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels={channels} must be divisible by heads={heads}")
        self.heads = heads
        self.landmarks = landmarks
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        d = c // self.heads
        q, k, v = self.qkv(x).reshape(n, 3, self.heads, d, h * w).transpose(-1, -2).unbind(1)
        q = q * d**-0.5
        if h * w <= self.landmarks:
            attended = F.softmax(q @ k.transpose(-1, -2), -1) @ v
        else:
            q_land = _segment_means(q, self.landmarks)
            k_land = _segment_means(k, self.landmarks)
            kernel_q = F.softmax(q @ k_land.transpose(-1, -2), -1)
            kernel_land = F.softmax(q_land @ k_land.transpose(-1, -2), -1)
            kernel_k = F.softmax(q_land @ k.transpose(-1, -2), -1)
            attended = kernel_q @ (_iterative_pinv(kernel_land) @ (kernel_k @ v))
        attended = attended.transpose(-1, -2).reshape(n, c, h, w)
        return self.out(attended)


def _segment_means(tokens: torch.Tensor, segments: int) -> torch.Tensor:
    """(N, heads, L, d) -> (N, heads, segments, d), averaging consecutive runs of tokens."""
    n, heads, length, d = tokens.shape
    flat = tokens.reshape(n * heads, length, d).transpose(1, 2)
    return F.adaptive_avg_pool1d(flat, segments).transpose(1, 2).reshape(n, heads, segments, d)


class DenseBlock(nn.Module):
    """Densely connected 3x3 convolutions: each layer sees all earlier outputs."""

    def __init__(self, channels: int, layers: int, growth: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels + i * growth, growth, 3, padding=1), nn.ReLU())
            for i in range(layers)
        )
        self.out_channels = channels + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class DenseCouplingNet(nn.Module):
    """Maps the conditioning half to the coupling's (log-scale, shift) pair."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        dense_layers: int,
        dense_growth: int,
        heads: int,
        landmarks: int,
    ):
        super().__init__()
        self.entry = nn.Conv2d(in_channels, width, 1)
        self.attention = NystromAttention(width, heads, landmarks)
        self.dense = DenseBlock(width, dense_layers, dense_growth)
        merged = width + self.dense.out_channels
        self.merge = nn.Sequential(
            nn.BatchNorm2d(merged), nn.ReLU(), nn.Conv2d(merged, width, 1), nn.ReLU()
        )
        self.exit = nn.Conv2d(width, out_channels, 1)
        nn.init.zeros_(self.exit.weight)
        nn.init.zeros_(self.exit.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(x)
        x = torch.cat([self.attention(x), self.dense(x)], 1)
        return self.exit(self.merge(x))
