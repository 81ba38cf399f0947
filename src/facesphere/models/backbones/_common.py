"""Building blocks shared by the backbone families: conv-BN-activation, the embedding neck."""

from __future__ import annotations

import math

import torch
from torch import nn


def downsampled(size: int, times: int) -> int:
    """Spatial size after ``times`` stride-2 layers with odd kernel k and padding k // 2."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


def make_activation(kind: str | None, channels: int) -> nn.Module:
    """An activation by name: ``prelu`` (per channel), ``relu``, ``silu`` or ``None``."""
    if kind is None:
        return nn.Identity()
    if kind == "prelu":
        return nn.PReLU(channels)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "silu":
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {kind!r}")


class ConvBNAct(nn.Sequential):
    """Convolution without bias, batch norm, then an optional activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
        padding: int | None = None,
    ) -> None:
        pad = kernel_size // 2 if padding is None else padding
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, pad, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            make_activation(act, out_channels),
        )


class EmbeddingNeck(nn.Module):
    """The IResNet output block: BN2d - dropout - flatten - FC - BN1d.

    With ``global_pool=True`` the map is averaged over space before the FC layer, which
    keeps the FC small for wide final maps at the price of discarding spatial layout.
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: tuple[int, int],
        embedding_dim: int,
        dropout: float = 0.0,
        global_pool: bool = False,
    ) -> None:
        super().__init__()
        self.global_pool = global_pool
        self.bn = nn.BatchNorm2d(in_channels)
        self.dropout = nn.Dropout(dropout)
        fc_in = in_channels if global_pool else in_channels * feature_size[0] * feature_size[1]
        self.fc = nn.Linear(fc_in, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.bn(x))
        x = x.mean(dim=(2, 3)) if self.global_pool else torch.flatten(x, 1)
        return self.features(self.fc(x))


class FaceBackbone(nn.Module):
    """Base class: ``forward`` applies ``self.neck`` to ``forward_features``."""

    embedding_dim: int
    input_size: tuple[int, int]
    neck: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before the neck."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of shape (N, embedding_dim), not normalised."""
        return self.neck(self.forward_features(x))


def as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise an int or (width, height) pair to a (width, height) tuple (facesphere's one
    convention for input sizes, as in templates and model cards)."""
    if isinstance(size, int):
        return (size, size)
    width, height = size
    return (int(width), int(height))


def init_conv_linear(module: nn.Module) -> None:
    """Kaiming-normal convolutions, small-normal linear layers, unit BN; apply with ``.apply``."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=1.0 / math.sqrt(module.in_features))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)) and module.affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``rate``."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype)
    return x * mask.bernoulli_(keep) / keep


class DropPath(nn.Module):
    """Module wrapper of :func:`drop_path`."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training)
