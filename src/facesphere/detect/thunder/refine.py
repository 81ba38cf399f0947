"""Second landmark stage of ``thunder``: a small CNN that re-reads each detected face.

The R-CNN head regresses five points from 245 pooled values per RoI, which is coarse for
points a few pixels apart (docs/thunder.md). After NMS, every kept face is cut out of the
image as a square around its box (:func:`face_crops`: ``CROP_SCALE`` times the box's longer
side, centred on the box, edge pixels repeated beyond the image), resized to ``size`` x
``size`` and passed through :class:`LandmarkRefiner`, whose five points (in units of the crop
side) replace the head's. This is the cascade idea of Sun et al. (CVPR 2013), the work the
landmarks5 crops come from, cut down to one stage.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from facesphere.cards import Normalization
from facesphere.errors import ConfigError

CROP_SCALE = 1.15  # crop side / the box's longer side


@dataclass
class RefinerSpec:
    """Architecture of a :class:`LandmarkRefiner`, saved with its weights."""

    size: int = 48
    widths: tuple[int, ...] = (24, 48, 64, 96, 128)

    def to_dict(self) -> dict:
        return asdict(self)


def check_refiner_shape(size: int, widths: tuple[int, ...] | list[int]) -> None:
    """ConfigError unless `widths` are positive and `size` halves once per width after the
    first (each adds a stride-2 layer)."""
    if not widths or any(w <= 0 for w in widths):
        raise ConfigError("a list of positive layer widths is required", key="widths")
    if size <= 0 or size % 2 ** (len(widths) - 1):
        raise ConfigError(
            f"must halve {len(widths) - 1} times (one per width after the first)", key="size"
        )


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class LandmarkRefiner(nn.Module):
    """(N, 3, size, size) normalised crops -> (N, 5, 2) points in units of the crop side.

    A plain stack of 3x3 conv + BN + ReLU layers: the first width at full size, then each
    further width halves the map (stride 2) and adds one stride-1 layer; one linear layer reads
    the final map. At the default spec (48 px, widths 24-128): 0.51 M parameters and about
    36 M multiply-adds per face."""

    def __init__(self, spec: RefinerSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or RefinerSpec()
        widths = self.spec.widths
        check_refiner_shape(self.spec.size, widths)
        layers: list[nn.Module] = [_conv(3, widths[0], 1)]
        for cin, cout in itertools.pairwise(widths):
            layers += [_conv(cin, cout, 2), _conv(cout, cout, 1)]
        self.body = nn.Sequential(*layers)
        cells = (self.spec.size // 2 ** (len(widths) - 1)) ** 2
        self.points = nn.Linear(widths[-1] * cells, 10)
        nn.init.normal_(self.points.weight, std=0.001)
        nn.init.constant_(self.points.bias, 0.5)

    def forward(self, crops: Tensor) -> Tensor:
        return self.points(self.body(crops).flatten(1)).view(-1, 5, 2)


def crop_squares(boxes: np.ndarray) -> np.ndarray:
    """(N, 3) rows of (x0, y0, side): the square crop of each (N, 4) box."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = CROP_SCALE * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    side = np.maximum(side, 1.0)
    return np.concatenate([centre - side[:, None] / 2, side[:, None]], axis=1)


def face_crops(image: np.ndarray, squares: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 crops of `image` at the (x0, y0, side) `squares`, edge pixels
    repeated where a square leaves the image; area-averaged when shrinking."""
    h, w = image.shape[:2]
    out = np.empty((len(squares), size, size, 3), np.uint8)
    for i, (x0, y0, side) in enumerate(squares):
        left, top = int(np.floor(x0)), int(np.floor(y0))
        right, bottom = int(np.ceil(x0 + side)), int(np.ceil(y0 + side))
        pad = [max(-top, 0), max(bottom - h, 0), max(-left, 0), max(right - w, 0)]
        patch = image[max(top, 0) : min(bottom, h), max(left, 0) : min(right, w)]
        if patch.size == 0:  # the box lies wholly outside the image: nothing to read
            out[i] = 0
            continue
        if any(pad):
            patch = cv2.copyMakeBorder(patch, *pad, cv2.BORDER_REPLICATE)
        # crop pixel u sees image x = x0 + u / scale; the patch starts at image (left, top)
        scale = size / side
        fx = fy = 1.0
        if scale < 1:  # shrink by area first: bilinear sampling alone would alias
            small = (max(round(patch.shape[1] * scale), 1), max(round(patch.shape[0] * scale), 1))
            fx, fy = small[0] / patch.shape[1], small[1] / patch.shape[0]
            patch = cv2.resize(patch, small, interpolation=cv2.INTER_AREA)
        matrix = np.array(
            [
                [scale / fx, 0, (left - x0 + 0.5 / fx - 0.5) * scale],
                [0, scale / fy, (top - y0 + 0.5 / fy - 0.5) * scale],
            ],
            np.float32,
        )
        out[i] = cv2.warpAffine(
            patch, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    return out


def crops_to_tensor(crops: np.ndarray, normalization: Normalization) -> Tensor:
    """(N, size, size, 3) uint8 -> (N, 3, size, size) float32 channels-last (pixel - mean) / std."""
    return torch.from_numpy(normalization.apply(crops)).permute(0, 3, 1, 2)


@torch.no_grad()
def refine_landmarks(
    refiner: LandmarkRefiner,
    image: np.ndarray,
    boxes: np.ndarray,
    normalization: Normalization,
) -> np.ndarray:
    """(N, 5, 2) points in image pixels for the (N, 4) `boxes` of RGB uint8 `image`."""
    if len(boxes) == 0:
        return np.zeros((0, 5, 2), np.float32)
    squares = crop_squares(boxes)
    crops = face_crops(image, squares, refiner.spec.size)
    device = next(refiner.parameters()).device
    x = crops_to_tensor(crops, normalization).to(device, memory_format=torch.channels_last)
    units = refiner(x).cpu().numpy()
    return (squares[:, None, :2] + units * squares[:, None, 2:]).astype(np.float32)
