"""ShuffleNetV2 (Ma et al., 2018) and ThunderNet's SNet backbones (Qin et al., 2019).

A basic unit splits the channels in two halves, transforms one (1x1 - depthwise - 1x1) and
concatenates it with the untouched half; a downsampling unit feeds the whole input to two
strided branches. A channel shuffle after each concatenation mixes the halves (both done
as one interleaving copy, `concat_shuffled`). SNet is the
same network with 5x5 instead of 3x3 depthwise kernels and ThunderNet's stage widths; SNet49
keeps a 512-channel conv5, SNet146 and SNet535 drop it. ``forward_c4_c5`` exposes the
stride-16 and stride-32 maps for use as a detector backbone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from facesphere.models.backbones._common import (
    ConvBNAct,
    EmbeddingNeck,
    FaceBackbone,
    as_size,
    downsampled,
    init_conv_linear,
)
from facesphere.models.backbones._registry import register_backbone

STAGE_REPEATS = (4, 8, 4)


def concat_shuffled(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``channel_shuffle(cat((a, b)), groups=2)`` in one copy: (N, C, H, W) halves
    interleaved, channel 2i from `a[:, i]` and 2i + 1 from `b[:, i]`. A channels-last `b`
    (a conv output) gives a channels-last result, the interleave then running along the
    innermost memory axis; `a` may be any view (a channel slice of the unit's input)."""
    n, c, h, w = a.shape
    if b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous():
        nhwc = torch.stack((a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)), dim=-1)
        return nhwc.view(n, h, w, 2 * c).permute(0, 3, 1, 2)
    return torch.stack((a, b), dim=2).view(n, 2 * c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit; ``stride=2`` gives the downsampling unit with two branches."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel_size: int) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"ShuffleNetV2 unit needs an even width, got {out_channels}")
        self.stride = stride
        half = out_channels // 2
        self.shortcut_branch: nn.Module
        if stride == 1:
            if in_channels != out_channels:
                raise ValueError("a stride-1 unit keeps its width")
            main_in = half
            self.shortcut_branch = nn.Identity()
        else:
            main_in = in_channels
            self.shortcut_branch = nn.Sequential(
                ConvBNAct(in_channels, in_channels, kernel_size, stride, in_channels, act=None),
                ConvBNAct(in_channels, half, 1, act="relu"),
            )
        self.main_branch = nn.Sequential(
            ConvBNAct(main_in, half, 1, act="relu"),
            ConvBNAct(half, half, kernel_size, stride, groups=half, act=None),
            ConvBNAct(half, half, 1, act="relu"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, x = x.chunk(2, dim=1)
            return concat_shuffled(kept, self.main_branch(x))
        return concat_shuffled(self.shortcut_branch(x), self.main_branch(x))


class ShuffleNetV2(FaceBackbone):
    """ShuffleNetV2 body: conv1 - maxpool - 3 stages - optional conv5 - embedding neck."""

    def __init__(
        self,
        stage_widths: tuple[int, int, int],
        conv5_width: int | None,
        kernel_size: int = 3,
        stem_width: int = 24,
        embedding_dim: int = 512,
        input_size: int | tuple[int, int] = (112, 112),
        dropout: float = 0.0,
        global_pool: bool = False,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.input_size = as_size(input_size)
        self.stem = nn.Sequential(
            ConvBNAct(3, stem_width, 3, 2, act="relu"),
            nn.MaxPool2d(3, 2, 1),
        )
        stages: list[nn.Module] = []
        in_channels = stem_width
        for width, repeats in zip(stage_widths, STAGE_REPEATS, strict=True):
            units = [ShuffleUnit(in_channels, width, 2, kernel_size)]
            units += [ShuffleUnit(width, width, 1, kernel_size) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            in_channels = width
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5: nn.Module
        if conv5_width is None:
            self.conv5 = nn.Identity()
        else:
            self.conv5 = ConvBNAct(in_channels, conv5_width, 1, act="relu")
            in_channels = conv5_width
        self.c4_channels = stage_widths[1]
        self.c5_channels = in_channels
        feature_size = (downsampled(self.input_size[1], 5), downsampled(self.input_size[0], 5))
        self.neck = EmbeddingNeck(in_channels, feature_size, embedding_dim, dropout, global_pool)
        self.apply(init_conv_linear)

    def forward_c4_c5(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage-3 output (C4, stride 16) and final map (C5, stride 32) for detection."""
        c4 = self.stage3(self.stage2(self.stem(x)))
        c5 = self.conv5(self.stage4(c4))
        return c4, c5

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_c4_c5(x)[1]


@register_backbone("shufflenetv2_x0_5", forwards_to=ShuffleNetV2)
def shufflenetv2_x0_5(embedding_dim: int = 512, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 0.5x: stages 48, 96, 192, conv5 1024."""
    return ShuffleNetV2((48, 96, 192), 1024, embedding_dim=embedding_dim, **kwargs)


@register_backbone("shufflenetv2_x1_0", forwards_to=ShuffleNetV2)
def shufflenetv2_x1_0(embedding_dim: int = 512, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 1.0x: stages 116, 232, 464, conv5 1024."""
    return ShuffleNetV2((116, 232, 464), 1024, embedding_dim=embedding_dim, **kwargs)


@register_backbone("snet49", forwards_to=ShuffleNetV2)
def snet49(embedding_dim: int = 512, **kwargs: Any) -> ShuffleNetV2:
    """ThunderNet SNet49: 5x5 depthwise, widths 24, 60, 120, 240, conv5 512."""
    return ShuffleNetV2((60, 120, 240), 512, 5, 24, embedding_dim=embedding_dim, **kwargs)


@register_backbone("snet146", forwards_to=ShuffleNetV2)
def snet146(embedding_dim: int = 512, **kwargs: Any) -> ShuffleNetV2:
    """ThunderNet SNet146: 5x5 depthwise, widths 24, 132, 264, 528, no conv5."""
    return ShuffleNetV2((132, 264, 528), None, 5, 24, embedding_dim=embedding_dim, **kwargs)


@register_backbone("snet535", forwards_to=ShuffleNetV2)
def snet535(embedding_dim: int = 512, **kwargs: Any) -> ShuffleNetV2:
    """ThunderNet SNet535: 5x5 depthwise, widths 48, 248, 496, 992, no conv5."""
    return ShuffleNetV2((248, 496, 992), None, 5, 48, embedding_dim=embedding_dim, **kwargs)
