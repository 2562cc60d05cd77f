"""``compact``: the project's small residual CNN, trained from scratch (no pretrained weights).

Stride-4 stem, then one stride-2 stage per listed width; GroupNorm, so that results do not depend
on the per-worker batch under DDP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0 and channels // g >= 2:
            return g
    return 1


class ResidualBlock(nn.Module):
    """conv3x3-GN-SiLU-conv3x3-GN + identity, SiLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        nn.init.zeros_(self.norm2.weight)  # start as identity: stable from-scratch training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.norm1(self.conv1(x)))
        return F.silu(x + self.norm2(self.conv2(y)))


class CompactCNN(nn.Module):
    """Small residual CNN. ``(B, C, H, W)`` -> ``(B, widths[-1], H / 2**(len(widths)+1), ...)``.

    Stem: 3x3 stride-2 conv + 3x3 stride-2 conv (stride 4, keeps thin structures that a 4x4 patchify
    stem would average away), then per width: a stride-2 3x3 conv (not for the first) and ``blocks``
    residual blocks.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], blocks: int = 1):
        super().__init__()
        w0 = widths[0]
        half = max(8, w0 // 2)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(_groups(half), half),
            nn.SiLU(),
            nn.Conv2d(half, w0, 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(_groups(w0), w0),
            nn.SiLU(),
        )
        stages = []
        prev = w0
        for i, w in enumerate(widths):
            layers: list[nn.Module] = []
            if i > 0:
                layers += [
                    nn.Conv2d(prev, w, 3, stride=2, padding=1, bias=False),
                    nn.GroupNorm(_groups(w), w),
                    nn.SiLU(),
                ]
            layers += [ResidualBlock(w) for _ in range(blocks)]
            stages.append(nn.Sequential(*layers))
            prev = w
        self.stages = nn.Sequential(*stages)
        self.out_channels = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))
