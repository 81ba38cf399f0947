"""dlib's pretrained 128-d face ResNet as a trainable backbone (for fine-tuning).

The network is :class:`facesphere.pretrained.dlib_resnet.DlibResNet` (dlib's known layout),
with the bundled dlib weights (through the weight cache) or, with ``pretrained=False``,
re-initialised ones. Built on the meta device (shapes only, e.g. by `facesphere models`) it
reads no weights at all. It works on dlib's 150x150 chips (template ``dlib150``), not on the
112x112 ``standard112`` crops of the other backbones.

Input convention: like every backbone, the input is what the trainer feeds, RGB normalised by
:data:`facesphere.cards.TRAINING_NORMALIZATION`. The backbone maps
it back to 0..255 pixels and then applies dlib's own ``(pixel - channel mean) / 256``, so the
pretrained weights see exactly the input dlib trained them on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facesphere.cards import TRAINING_NORMALIZATION
from facesphere.errors import ConfigError
from facesphere.models.backbones._common import init_conv_linear
from facesphere.models.backbones._registry import register_backbone


class DlibResNetBackbone(nn.Module):
    """dlib's ResNet (about 5.6M parameters); (N, 3, 150, 150) normalised RGB -> (N, 128)."""

    template = "dlib150"

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        from facesphere.pretrained.dlib_resnet import DlibResNet, load_dlib_resnet

        if pretrained and torch.get_default_device().type != "meta":
            self.net = load_dlib_resnet(normalize=False).train()
        else:
            self.net = DlibResNet(normalize=False)
            if not pretrained:
                self.net.apply(init_conv_linear)
        self.embedding_dim = self.net.fc.out_features
        self.input_size = (self.net.chip_size, self.net.chip_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last residual map (N, 256, h, w), before the global average pool."""
        net = self.net
        norm = TRAINING_NORMALIZATION
        pixels = x * x.new_tensor(norm.std).view(1, 3, 1, 1) + x.new_tensor(norm.mean).view(
            1, 3, 1, 1
        )
        x = (pixels - net.mean) * (1.0 / 256.0)
        x = F.relu(net.stem(x))
        x = F.max_pool2d(x, net.pool_kernel, net.pool_stride)
        for unit in net.units:
            x = unit(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, 128), not normalised (dlib compares unit vectors of these)."""
        return self.net.fc(self.forward_features(x).mean(dim=(2, 3)))


@register_backbone("dlib-resnet")
def dlib_resnet(embedding_dim: int = 128, pretrained: bool = True) -> nn.Module:
    """dlib's face ResNet; only ``embedding_dim=128`` (the pretrained layout) is possible."""
    if embedding_dim != 128:
        raise ConfigError(f"dlib-resnet has a fixed 128-d embedding, not {embedding_dim}")
    return DlibResNetBackbone(pretrained=pretrained)
