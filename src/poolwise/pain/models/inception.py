"""InceptionTime (Ismail Fawaz et al., Data Mining and Knowledge Discovery 2020) in PyTorch.

The published architecture: each network stacks ``depth`` = 6 Inception modules with a residual
shortcut (1x1 convolution + batch norm) around every 3; a module squeezes its input through a
1x1 "bottleneck" convolution to 32 channels (when the input has more than one channel), runs
three convolutions of 32 filters with kernel lengths 40, 20 and 10 side by side (here 39, 19
and 9, so that "same" padding is symmetric and needs no padded copy), adds a branch
of max pooling (width 3) followed by a 1x1 convolution of 32 filters, and concatenates the four
(128 channels) before batch norm and ReLU. Global average pooling over time and one linear
layer give the logits. The convolutions have no bias (batch norm follows each).

InceptionTime is an ensemble of such networks (five in the paper) whose softmax outputs are
averaged: ``n_networks`` sets the size, and the logits returned are the log of the averaged
probabilities, so the softmax of the output is the ensemble's probability. poolwise registers
one network (``inception_time``, see :mod:`poolwise.pain.models`): the networks are trained
together by the same loop, so five cost five times one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from poolwise.pain.models.common import check_batch

KERNELS = (39, 19, 9)  # the paper's 40, 20, 10 made odd: symmetric "same" padding


class InceptionModule(nn.Module):
    def __init__(self, in_channels: int, filters: int = 32, bottleneck: int = 32,
                 kernels: Sequence[int] = KERNELS) -> None:
        super().__init__()
        squeeze = bottleneck > 0 and in_channels > 1
        self.bottleneck = (nn.Conv1d(in_channels, bottleneck, 1, bias=False) if squeeze
                           else nn.Identity())
        width = bottleneck if squeeze else in_channels
        self.convs = nn.ModuleList(nn.Conv1d(width, filters, k, padding="same", bias=False)
                                   for k in kernels)
        self.pool = nn.MaxPool1d(3, stride=1, padding=1)
        self.pool_conv = nn.Conv1d(in_channels, filters, 1, bias=False)
        self.norm = nn.BatchNorm1d(filters * (len(kernels) + 1))

    def forward(self, x: Tensor) -> Tensor:
        z = self.bottleneck(x)
        branches = [conv(z) for conv in self.convs] + [self.pool_conv(self.pool(x))]
        return torch.relu(self.norm(torch.cat(branches, 1)))


class InceptionNetwork(nn.Module):
    """One network of the ensemble: ``depth`` modules, a shortcut around every three."""

    def __init__(self, n_channels: int, n_classes: int, depth: int = 6, filters: int = 32,
                 bottleneck: int = 32, kernels: Sequence[int] = KERNELS) -> None:
        super().__init__()
        width = filters * (len(kernels) + 1)
        self.blocks = nn.ModuleList(
            InceptionModule(n_channels if i == 0 else width, filters, bottleneck, kernels)
            for i in range(depth))
        self.shortcuts = nn.ModuleList(
            nn.Sequential(nn.Conv1d(n_channels if i == 0 else width, width, 1, bias=False),
                          nn.BatchNorm1d(width))
            for i in range(depth // 3))
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i % 3 == 2:
                x = torch.relu(x + self.shortcuts[i // 3](residual))
                residual = x
        return self.head(x.mean(-1))


class InceptionTime(nn.Module):
    """Inputs ``(batch, n_channels, time)``, any length; logits ``(batch, n_classes)``."""

    def __init__(self, *, n_channels: int = 30, n_classes: int = 2, n_networks: int = 1,
                 depth: int = 6, filters: int = 32, bottleneck: int = 32,
                 kernels: Sequence[int] = KERNELS) -> None:
        super().__init__()
        if n_networks < 1 or depth < 1 or filters < 1 or n_channels < 1:
            raise ValueError("n_networks, depth, filters and n_channels must be positive, got "
                             f"{n_networks}, {depth}, {filters}, {n_channels}")
        self.n_channels = n_channels
        self.networks = nn.ModuleList(
            InceptionNetwork(n_channels, n_classes, depth, filters, bottleneck, tuple(kernels))
            for _ in range(n_networks))

    def forward(self, x: Tensor) -> Tensor:
        check_batch(x, self.n_channels)
        if len(self.networks) == 1:
            return self.networks[0](x)
        log_probs = torch.stack([torch.log_softmax(net(x), 1) for net in self.networks])
        return torch.logsumexp(log_probs, 0) - math.log(len(self.networks))


__all__ = ["KERNELS", "InceptionModule", "InceptionNetwork", "InceptionTime"]
