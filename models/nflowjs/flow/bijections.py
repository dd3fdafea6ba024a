"""Invertible layers on NCHW tensors, each with ``forward(x, ldj) -> (y, ldj)`` and ``inverse(y)``.

``ldj`` is the per-sample log|det dy/dx| accumulated so far, shape (N,). The same layers build the
image flow (``DenseFlow``) and the 2-D toy flow, where a point is a (N, 2, 1, 1) tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def squeeze2x2(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4C, H/2, W/2): space-to-depth, volume preserving."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * 4, h // 2, w // 2)


def unsqueeze2x2(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``squeeze2x2``."""
    n, c, h, w = x.shape
    x = x.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, h * 2, w * 2)


class ActNorm(nn.Module):
    """Per-channel affine map, initialised from the first training batch to zero mean, unit std."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-3)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-std.log())
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor, ldj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not self.initialized:
            self._initialize(x)
        y = (x + self.bias) * self.log_scale.exp()
        return y, ldj + x.shape[2] * x.shape[3] * self.log_scale.sum()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * (-self.log_scale).exp() - self.bias


class InvertibleConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution, LU-parametrised so log|det W| is a sum of logs."""

    def __init__(self, channels: int):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", s.sign())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(s.abs().log())

    def weight(self) -> torch.Tensor:
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.perm @ lower @ upper

    def forward(self, x: torch.Tensor, ldj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.einsum("oc,nchw->nohw", self.weight(), x)
        return y, ldj + x.shape[2] * x.shape[3] * self.log_s.sum()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,nchw->nohw", torch.linalg.inv(self.weight()), y)


class AffineCoupling(nn.Module):
    """y_b = x_b * exp(2 tanh(s/2)) + t with (s, t) = net(x_a); x_a passes through unchanged.

    ``net_factory(in_channels, out_channels)`` builds the coupling network; it must start at the
    identity map (zero-initialised last layer) for stable training.
    """

    def __init__(self, channels: int, net_factory: Callable[[int, int], nn.Module]):
        super().__init__()
        self.split = channels // 2
        self.net = net_factory(self.split, 2 * (channels - self.split))

    def _scale_shift(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(x_a).chunk(2, dim=1)
        return 2.0 * torch.tanh(s / 2.0), t

    def forward(self, x: torch.Tensor, ldj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_a, x_b = x[:, : self.split], x[:, self.split :]
        log_scale, shift = self._scale_shift(x_a)
        y_b = x_b * log_scale.exp() + shift
        return torch.cat([x_a, y_b], 1), ldj + log_scale.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y_a, y_b = y[:, : self.split], y[:, self.split :]
        log_scale, shift = self._scale_shift(y_a)
        return torch.cat([y_a, (y_b - shift) * (-log_scale).exp()], 1)


class ChannelSwap(nn.Module):
    """Reverses the channel order so the next coupling transforms the half that passed through."""

    def forward(self, x: torch.Tensor, ldj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flip(1), ldj

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(1)


class FlowSequence(nn.Module):
    """Invertible layers applied in order; the inverse runs them backwards."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, ldj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            x, ldj = layer(x, ldj)
        return x, ldj

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class FlowStep(FlowSequence):
    """ActNorm -> invertible 1x1 conv -> affine coupling -> channel swap (one coupling step)."""

    def __init__(self, channels: int, net_factory: Callable[[int, int], nn.Module]):
        super().__init__(
            [
                ActNorm(channels),
                InvertibleConv1x1(channels),
                AffineCoupling(channels, net_factory),
                ChannelSwap(),
            ]
        )
