"""A lightweight Inception-style network for 112x112 faces.

Each block runs four branches in parallel and concatenates them: a 1x1 conv; a 1x1
reduction followed by a 3x3 conv; a 1x1 reduction followed by two 3x3 convs (the receptive
field of a 5x5 at lower cost, as in Inception v2/v3); and a 3x3 max pool followed by a 1x1
projection. The 1x1 reductions before the large kernels keep the cost low (GoogLeNet's
bottleneck). Max pooling between stages reduces 56 -> 28 -> 14 -> 7.
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

# Per block: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection); "pool" halves the map.
INCEPTION_LITE_PLAN: tuple[tuple[int, int, int, int, int, int] | str, ...] = (
    (32, 32, 48, 16, 24, 16),  # 28x28 -> 120 channels
    (48, 48, 64, 16, 32, 16),  # -> 160
    "pool",
    (64, 64, 96, 24, 48, 48),  # 14x14 -> 256
    (64, 64, 96, 24, 48, 48),  # -> 256
    (80, 80, 112, 32, 64, 64),  # -> 320
    "pool",
    (96, 96, 128, 32, 64, 64),  # 7x7 -> 352
    (112, 96, 160, 32, 64, 48),  # -> 384
)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3-3x3; pool-1x1), concatenated."""

    def __init__(
        self,
        in_channels: int,
        c1: int,
        c3_reduce: int,
        c3: int,
        c5_reduce: int,
        c5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = ConvBNAct(in_channels, c1, 1)
        self.branch3 = nn.Sequential(
            ConvBNAct(in_channels, c3_reduce, 1),
            ConvBNAct(c3_reduce, c3, 3),
        )
        self.branch5 = nn.Sequential(
            ConvBNAct(in_channels, c5_reduce, 1),
            ConvBNAct(c5_reduce, c5, 3),
            ConvBNAct(c5, c5, 3),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, 1, 1),
            ConvBNAct(in_channels, pool_proj, 1),
        )
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch3, self.branch5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


class InceptionLite(FaceBackbone):
    """Stem (3x3 s2, 3x3, max pool) then Inception blocks, 7x7 final map at 112x112."""

    def __init__(
        self,
        embedding_dim: int = 512,
        input_size: int | tuple[int, int] = (112, 112),
        dropout: float = 0.0,
        global_pool: bool = False,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.input_size = as_size(input_size)
        self.stem = nn.Sequential(
            ConvBNAct(3, 32, 3, 2),
            ConvBNAct(32, 64, 3, 1),
            nn.MaxPool2d(3, 2, 1),
        )
        layers: list[nn.Module] = []
        in_channels = 64
        pools = 2
        for spec in INCEPTION_LITE_PLAN:
            if spec == "pool":
                layers.append(nn.MaxPool2d(3, 2, 1))
                pools += 1
                continue
            assert not isinstance(spec, str)
            block = InceptionBlock(in_channels, *spec)
            layers.append(block)
            in_channels = block.out_channels
        self.blocks = nn.Sequential(*layers)
        feature_size = (
            downsampled(self.input_size[1], pools),
            downsampled(self.input_size[0], pools),
        )
        self.neck = EmbeddingNeck(in_channels, feature_size, embedding_dim, dropout, global_pool)
        self.apply(init_conv_linear)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


@register_backbone("inception_lite", forwards_to=InceptionLite)
def inception_lite(embedding_dim: int = 512, **kwargs: Any) -> InceptionLite:
    """Lightweight Inception-style face network."""
    return InceptionLite(embedding_dim=embedding_dim, **kwargs)
