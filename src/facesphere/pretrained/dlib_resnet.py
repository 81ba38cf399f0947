"""dlib's 128-d ResNet face recogniser (dlib_face_recognition_resnet_model_v1) in torch.

The network, innermost first: 7x7/2 conv (32) + affine + relu, 3x3/2 max pool, then residual
units ("ares": conv3-affine-relu-conv3-affine added to the input, relu) with channel widths
32 x3, 64 (down) + 64 x3, 128 (down) + 128 x2, 256 (down) + 256 x2, 256 (down), a global
average pool and a 128-d fully connected layer without bias. Downsampling units use a
stride-2 first conv (no padding) and add the block to a 2x2/2 average pool of their input;
dlib adds tensors of different sizes by treating missing channels/pixels as zero, which
matters at the 8->3 vs 8->4 step. Input: 150x150 RGB, (pixel - channel mean) / 256.

`DlibResNet()` builds this known layout without weights (dlib's channel means as defaults);
`convert_dlib_resnet` reads dlib's file, checks it has exactly this layout and folds each
affine layer into its convolution, giving the module's state; `load_dlib_resnet` goes through
the weight cache, so only the first process ever reads dlib's file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesphere.pretrained._dlib_torch import (
    ConvSpec,
    LayerCursor,
    add_prev,
    fold_conv,
    module_from_state,
)
from facesphere.pretrained.cards import DLIB_RESNET
from facesphere.pretrained.dlib_format import DlibFormatError, load_network
from facesphere.pretrained.weight_cache import ConvertedWeights, load_converted

CHIP_SIZE = 150
EMBEDDING_DIM = 128
# dlib's channel means (the values in the file, float32)
MEAN_RGB = (122.782, 117.001, 104.298)
STEM = ConvSpec(3, 32, (7, 7), (2, 2), (0, 0))
POOL_KERNEL = (3, 3)
POOL_STRIDE = (2, 2)

# (channels, downsample) for every residual unit, innermost first.
RESNET_UNITS: list[tuple[int, bool]] = (
    [(32, False)] * 3
    + [(64, True)]
    + [(64, False)] * 3
    + [(128, True)]
    + [(128, False)] * 2
    + [(256, True)]
    + [(256, False)] * 2
    + [(256, True)]
)


class _Unit(nn.Module):
    def __init__(self, in_channels: int, channels: int, downsample: bool) -> None:
        super().__init__()
        stride, padding = ((2, 2), (0, 0)) if downsample else ((1, 1), (1, 1))
        self.conv1 = ConvSpec(in_channels, channels, (3, 3), stride, padding).module()
        self.conv2 = ConvSpec(channels, channels, (3, 3), (1, 1), (1, 1)).module()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_prev(y, shortcut))


class DlibResNet(nn.Module):
    """The recogniser network; input float (N, 3, 150, 150) RGB in 0..255, output (N, 128).

    Built with torch's default initialisation; `from_state` gives it converted weights."""

    def __init__(self, normalize: bool = True) -> None:
        super().__init__()
        self.chip_size = CHIP_SIZE
        self.register_buffer("mean", torch.tensor(MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1))
        self.normalize = normalize
        self.stem = STEM.module()
        self.pool_kernel = POOL_KERNEL
        self.pool_stride = POOL_STRIDE
        widths = [STEM.out_channels] + [channels for channels, _ in RESNET_UNITS]
        self.units = nn.ModuleList(
            _Unit(widths[i], channels, down) for i, (channels, down) in enumerate(RESNET_UNITS)
        )
        self.fc = nn.Linear(widths[-1], EMBEDDING_DIM, bias=False)

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], normalize: bool = True) -> DlibResNet:
        """The network with the weights of `state` (from `convert_dlib_resnet`)."""
        return module_from_state(lambda: cls(normalize=normalize), state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * (1.0 / 256.0)
        x = F.relu(self.stem(x))
        x = F.max_pool2d(x, self.pool_kernel, self.pool_stride)
        for unit in self.units:
            x = unit(x)
        x = x.mean(dim=(2, 3))
        x = self.fc(x)
        if self.normalize:
            x = F.normalize(x, dim=1)
        return x


def _conv_state(state: dict[str, np.ndarray], name: str, cur: LayerCursor, conv: nn.Conv2d) -> None:
    expected = ConvSpec(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding
    )
    weight, bias = fold_conv(cur.take("con"), cur.take("affine"), expected, cur.net.path)
    state[f"{name}.weight"], state[f"{name}.bias"] = weight, bias


def _check_pool(
    cur: LayerCursor, kind: str, kernel: tuple[int, int], stride: tuple[int, int]
) -> None:
    pool = cur.take(kind)
    if pool.options["kernel"] != kernel or pool.options["stride"] != stride:
        raise DlibFormatError(f"{cur.net.path}: unexpected {kind} {pool.options}")


def convert_dlib_resnet(path: Path) -> ConvertedWeights:
    """The state of `DlibResNet` from dlib's file at `path` (DlibFormatError if the file is
    not a network of exactly this layout)."""
    net = load_network(path)
    if net.input.get("kind") != "input_rgb_image_sized" or net.loss.get("kind") != "metric":
        raise DlibFormatError(f"{net.path}: not a dlib metric-learning ResNet file")
    if tuple(net.input["size"]) != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError(f"{net.path}: input size {net.input['size']}, not {CHIP_SIZE}")
    with torch.device("meta"):
        layout = DlibResNet()
    cur = LayerCursor(net)
    state = {"mean": np.asarray(net.input["mean_rgb"], np.float32).reshape(1, 3, 1, 1)}
    _conv_state(state, "stem", cur, layout.stem)
    cur.take("relu")
    _check_pool(cur, "max_pool", POOL_KERNEL, POOL_STRIDE)
    for i, unit in enumerate(layout.units):
        _conv_state(state, f"units.{i}.conv1", cur, unit.conv1)
        cur.take("relu")
        _conv_state(state, f"units.{i}.conv2", cur, unit.conv2)
        if unit.downsample:
            _check_pool(cur, "avg_pool", (2, 2), (2, 2))
        cur.take("add_prev")
        cur.take("relu")
    _check_pool(cur, "avg_pool", (0, 0), (1, 1))
    fc = cur.take("fc")
    cur.done()
    if fc.arrays["weight"].shape != (layout.fc.in_features, EMBEDDING_DIM) or "bias" in fc.arrays:
        raise DlibFormatError(f"{net.path}: unexpected final layer {fc.options}")
    state["fc.weight"] = np.ascontiguousarray(fc.arrays["weight"].T)
    return ConvertedWeights({}, state)


def load_dlib_resnet(normalize: bool = True) -> DlibResNet:
    """The bundled dlib ResNet as an eval-mode torch module (through the weight cache)."""
    return load_converted(
        DLIB_RESNET,
        convert_dlib_resnet,
        lambda converted: DlibResNet.from_state(converted.arrays, normalize=normalize),
    ).eval()
