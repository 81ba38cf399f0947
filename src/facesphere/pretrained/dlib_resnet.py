"""dlib's 128-d ResNet face recogniser (dlib_face_recognition_resnet_model_v1) in torch.

The network, innermost first: 7x7/2 conv (32) + affine + relu, 3x3/2 max pool, then residual
units ("ares": conv3-affine-relu-conv3-affine added to the input, relu) with channel widths
32 x3, 64 (down) + 64 x3, 128 (down) + 128 x2, 256 (down) + 256 x2, 256 (down), a global
average pool and a 128-d fully connected layer without bias. Downsampling units use a
stride-2 first conv (no padding) and add the block to a 2x2/2 average pool of their input;
dlib adds tensors of different sizes by treating missing channels/pixels as zero, which
matters at the 8->3 vs 8->4 step. Input: 150x150 RGB, (pixel - channel mean) / 256.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesphere.pretrained._dlib_torch import LayerCursor, add_prev, conv_affine
from facesphere.pretrained.cards import DLIB_RESNET
from facesphere.pretrained.dlib_format import DlibFormatError, DlibNetwork, load_pretrained

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
    def __init__(self, cur: LayerCursor, downsample: bool) -> None:
        super().__init__()
        self.conv1 = conv_affine(cur.take("con"), cur.take("affine"))
        cur.take("relu")
        self.conv2 = conv_affine(cur.take("con"), cur.take("affine"))
        self.downsample = downsample
        if downsample:
            pool = cur.take("avg_pool")
            if pool.options["kernel"] != (2, 2) or pool.options["stride"] != (2, 2):
                raise DlibFormatError(f"{cur.net.path}: unexpected shortcut pooling")
        cur.take("add_prev")
        cur.take("relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_prev(y, shortcut))


class DlibResNet(nn.Module):
    """The recogniser network; input float (N, 3, 150, 150) RGB in 0..255, output (N, 128)."""

    def __init__(self, net: DlibNetwork, normalize: bool = True) -> None:
        super().__init__()
        if net.input.get("kind") != "input_rgb_image_sized" or net.loss.get("kind") != "metric":
            raise DlibFormatError(f"{net.path}: not a dlib metric-learning ResNet file")
        self.chip_size = int(net.input["size"][0])
        mean = torch.tensor(net.input["mean_rgb"], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.normalize = normalize
        cur = LayerCursor(net)
        self.stem = conv_affine(cur.take("con"), cur.take("affine"))
        cur.take("relu")
        pool = cur.take("max_pool")
        self.pool_kernel = pool.options["kernel"]
        self.pool_stride = pool.options["stride"]
        self.units = nn.ModuleList(_Unit(cur, down) for _, down in RESNET_UNITS)
        gap = cur.take("avg_pool")
        if gap.options["kernel"] != (0, 0):
            raise DlibFormatError(f"{net.path}: expected a global average pool")
        fc = cur.take("fc")
        cur.done()
        weight = fc.arrays["weight"]
        self.fc = nn.Linear(weight.shape[0], weight.shape[1], bias="bias" in fc.arrays)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T)))
            if "bias" in fc.arrays:
                self.fc.bias.copy_(torch.from_numpy(fc.arrays["bias"]))

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


def load_dlib_resnet(normalize: bool = True) -> DlibResNet:
    """The bundled dlib ResNet as an eval-mode torch module."""
    net = load_pretrained(DLIB_RESNET)
    assert isinstance(net, DlibNetwork)
    return DlibResNet(net, normalize=normalize).eval()
