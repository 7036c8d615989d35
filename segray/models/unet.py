"""The article's UNet, trained from scratch.

DoubleConv = conv-BN-ReLU-Dropout2d(0.2)-conv-BN-ReLU; four down steps (max-pool), a
bottleneck, four transposed-conv up steps with skip connections. The article uses widths
64 -> 1024; `base_width` scales them (the CPU demo uses a narrow one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class DoubleConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.2),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 1, base_width: int = 64):
        super().__init__()
        w = [base_width * 2**i for i in range(5)]  # 64, 128, 256, 512, 1024 in the article
        self.downs = nn.ModuleList([DoubleConv(in_channels, w[0])] + [DoubleConv(w[i], w[i + 1]) for i in range(3)])
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(w[3], w[4])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], kernel_size=2, stride=2) for i in reversed(range(4))])
        self.decs = nn.ModuleList([DoubleConv(w[i + 1], w[i]) for i in reversed(range(4))])
        self.final_conv = nn.Conv2d(w[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.ups, self.decs, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.final_conv(x)


def build_network(params: dict[str, Any]) -> nn.Module:
    """params: `base_width` (default 64, the article's)."""
    return UNet(base_width=int(params.get("base_width", 64)))
