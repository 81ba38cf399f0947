"""IResNet (improved residual networks as used by ArcFace): IResNet-18/34/50/100.

Each residual unit is BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, added to an identity
(or a strided 1x1 conv + BN shortcut when the shape changes). A stride-1 3x3 stem keeps the
112x112 input at full resolution, four stages halve it to 7x7, and the output block is
BN - dropout - FC - BN on the flattened 512x7x7 map.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from facesphere.models.backbones._common import (
    EmbeddingNeck,
    FaceBackbone,
    as_size,
    downsampled,
    init_conv_linear,
)
from facesphere.models.backbones._registry import register_backbone

IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}
STAGE_WIDTHS = (64, 128, 256, 512)


class IBasicBlock(nn.Module):
    """Improved residual unit BN-conv-BN-PReLU-conv-BN with a projection shortcut if needed."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class IResNet(FaceBackbone):
    """IResNet with the given number of units per stage (widths 64, 128, 256, 512)."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        embedding_dim: int = 512,
        input_size: int | tuple[int, int] = (112, 112),
        dropout: float = 0.0,
        global_pool: bool = False,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.input_size = as_size(input_size)
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.PReLU(64),
        )
        stages: list[nn.Module] = []
        in_channels = 64
        for width, units in zip(STAGE_WIDTHS, layers, strict=True):
            blocks = [IBasicBlock(in_channels, width, stride=2)]
            blocks += [IBasicBlock(width, width) for _ in range(units - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        feature_size = (downsampled(self.input_size[1], 4), downsampled(self.input_size[0], 4))
        self.neck = EmbeddingNeck(in_channels, feature_size, embedding_dim, dropout, global_pool)
        self.apply(init_conv_linear)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


@register_backbone("iresnet18", forwards_to=IResNet)
def iresnet18(embedding_dim: int = 512, **kwargs: Any) -> IResNet:
    """IResNet-18, units per stage (2, 2, 2, 2)."""
    return IResNet(IRESNET_LAYERS["iresnet18"], embedding_dim=embedding_dim, **kwargs)


@register_backbone("iresnet34", forwards_to=IResNet)
def iresnet34(embedding_dim: int = 512, **kwargs: Any) -> IResNet:
    """IResNet-34, units per stage (3, 4, 6, 3)."""
    return IResNet(IRESNET_LAYERS["iresnet34"], embedding_dim=embedding_dim, **kwargs)


@register_backbone("iresnet50", forwards_to=IResNet)
def iresnet50(embedding_dim: int = 512, **kwargs: Any) -> IResNet:
    """IResNet-50, units per stage (3, 4, 14, 3)."""
    return IResNet(IRESNET_LAYERS["iresnet50"], embedding_dim=embedding_dim, **kwargs)


@register_backbone("iresnet100", forwards_to=IResNet)
def iresnet100(embedding_dim: int = 512, **kwargs: Any) -> IResNet:
    """IResNet-100, units per stage (3, 13, 30, 3)."""
    return IResNet(IRESNET_LAYERS["iresnet100"], embedding_dim=embedding_dim, **kwargs)
