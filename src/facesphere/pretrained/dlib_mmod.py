"""dlib's MMOD CNN face detector (mmod_human_face_detector) in torch.

How dlib runs it, and how this module reproduces it:

* Optional upsampling (``upsample`` times) with dlib's ``pyramid_up`` for ``pyramid_down<2>``:
  an image of R x C pixels becomes (2R + 1) x (2C + 2), bilinear with corner-aligned sampling,
  values truncated to whole grey levels; detections are mapped back with ``p / 2 - (1.25,
  0.75)`` per level.
* The input layer builds an image pyramid with ``pyramid_down<6>`` sizes (each level is
  floor(5/6) of the previous one, down to 5 rows) and tiles all levels into one big image
  (first column downwards, then back up along the right edge; 10 px between levels, 11 px
  border, zeros elsewhere). Level 0 is (pixel - channel mean) / 256; every next level is a
  corner-aligned bilinear resize of the previous one. The whole pyramid therefore goes
  through the network in a single forward pass.
* The network: three 5x5/2 convolutions (16, 32, 32 filters, no padding) each with affine
  and relu, three 5x5 convolutions with 45 filters (padding 2) with affine and relu, and a
  9x9 convolution (padding 4) giving one score per cell.
* A score cell (r, c) maps back to the tiled image at (8c + 14, 8r + 14) (through the three
  strided convolutions); the detection window (80 x 80 in the file) is centred there, moved
  to the nearest pyramid level and scaled up by (6/5) per level with dlib's +0.3 offset.
* Cells scoring above ``adjust_threshold`` (0) are kept, sorted by score and greedily
  suppressed with loss_mmod's overlap test on rounded rectangles: intersection over the
  bounding box of both > the file's IoU threshold, or intersection covering more than the
  file's percent-covered threshold of either box.

Boxes are in dlib's rectangle convention: (left, top, right, bottom) in pixels with right and
bottom **inclusive** (width = right - left + 1), and integral like dlib's output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesphere.pretrained._dlib_torch import ConvSpec, LayerCursor, fold_conv, module_from_state
from facesphere.pretrained.cards import DLIB_MMOD
from facesphere.pretrained.dlib_format import DlibFormatError, load_network
from facesphere.pretrained.weight_cache import ConvertedWeights, load_converted


def lround(x: np.ndarray | float) -> np.ndarray:
    """C's lround: halves rounded away from zero."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


@dataclass(frozen=True)
class MMODLayout:
    """What an MMOD file says besides its weights: the convolutions (the last one scores; each
    other one is followed by a relu), the input layer's channel means and pyramid paddings,
    the detector windows (width, height) and loss_mmod's suppression thresholds."""

    convs: tuple[ConvSpec, ...]
    mean_rgb: tuple[float, float, float]
    pyramid_padding: int
    pyramid_outer_padding: int
    windows: tuple[tuple[int, int], ...]
    nms_iou: float
    nms_covered: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MMODLayout:
        """The layout `to_dict` gave."""
        return cls(
            convs=tuple(ConvSpec.from_dict(c) for c in data["convs"]),
            mean_rgb=tuple(float(v) for v in data["mean_rgb"]),
            pyramid_padding=int(data["pyramid_padding"]),
            pyramid_outer_padding=int(data["pyramid_outer_padding"]),
            windows=tuple((int(w), int(h)) for w, h in data["windows"]),
            nms_iou=float(data["nms_iou"]),
            nms_covered=float(data["nms_covered"]),
        )


class MMODNet(nn.Module):
    """The detector's convolutional network: normalised RGB (N, 3, H, W) -> scores (N, K, h, w).

    Built from the convolutions' shapes (torch's default initialisation); `from_state` gives
    it converted weights."""

    def __init__(self, convs: tuple[ConvSpec, ...]) -> None:
        super().__init__()
        self.body = nn.ModuleList(spec.module() for spec in convs[:-1])
        self.head = convs[-1].module()
        # map output cell -> input pixel: p_in = p_out * stride - padding + kernel // 2
        scale, offset = 1.0, 0.0
        for spec in convs:
            offset += scale * (spec.kernel[0] // 2 - spec.padding[0])
            scale *= spec.stride[0]
        self.cell_scale = scale
        self.cell_offset = offset

    @classmethod
    def from_state(cls, convs: tuple[ConvSpec, ...], state: dict[str, np.ndarray]) -> MMODNet:
        """The network of `convs` with the weights of `state` (from `convert_dlib_mmod`)."""
        return module_from_state(lambda: cls(convs), state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.body:
            x = F.relu(conv(x))
        return self.head(x)


def convert_dlib_mmod(path: Path) -> ConvertedWeights:
    """The layout (as meta) and the `MMODNet` state of dlib's MMOD file at `path`."""
    net = load_network(path)
    if net.loss.get("kind") != "mmod":
        raise DlibFormatError(f"{net.path}: not an MMOD detector")
    if net.loss.get("use_bounding_box_regression"):
        raise DlibFormatError(f"{net.path}: bounding box regression is not supported")
    cur = LayerCursor(net)
    convs: list[ConvSpec] = []
    state: dict[str, np.ndarray] = {}
    while cur.i < len(net.layers) - 1:
        con = cur.take("con")
        name = f"body.{len(convs)}"
        state[f"{name}.weight"], state[f"{name}.bias"] = fold_conv(con, cur.take("affine"))
        convs.append(ConvSpec.of(con))
        cur.take("relu")
    con = cur.take("con")
    state["head.weight"], state["head.bias"] = fold_conv(con, None)
    convs.append(ConvSpec.of(con))
    cur.done()
    layout = MMODLayout(
        convs=tuple(convs),
        mean_rgb=tuple(net.input["mean_rgb"]),
        pyramid_padding=int(net.input["pyramid_padding"]),
        pyramid_outer_padding=int(net.input["pyramid_outer_padding"]),
        windows=tuple((w["width"], w["height"]) for w in net.loss["detector_windows"]),
        nms_iou=float(net.loss["nms_iou"]),
        nms_covered=float(net.loss["nms_percent_covered"]),
    )
    return ConvertedWeights(layout.to_dict(), state)


def _build(converted: ConvertedWeights) -> tuple[MMODNet, MMODLayout]:
    layout = MMODLayout.from_dict(converted.meta)
    return MMODNet.from_state(layout.convs, converted.arrays), layout


def load_dlib_mmod() -> tuple[MMODNet, MMODLayout]:
    """The bundled MMOD network (eval mode) and its layout, through the weight cache."""
    model, layout = load_converted(DLIB_MMOD, convert_dlib_mmod, _build)
    return model.eval(), layout


def pyramid_rects(
    nr: int,
    nc: int,
    padding: int = 10,
    outer_padding: int = 11,
) -> tuple[list[tuple[int, int, int, int]], int, int]:
    """Placement of the pyramid_down<6> levels in dlib's tiled image.

    Returns ([(left, top, right, bottom) inclusive per level], tiled rows, tiled columns).
    """
    sizes = [(nr, nc)]
    rate = 5.0 / 6.0
    while True:
        nr, nc = math.floor(rate * nr), math.floor(rate * nc)
        if nr * nc == 0 or nr < 5:
            break
        sizes.append((nr, nc))
    h0, w0 = sizes[0]
    total_height = sum(h + padding for h, _ in sizes) - 2 * padding
    height = 0
    prev_width = 0
    for h, w in sizes:
        if w <= w0 - prev_width - padding and (height - h0) * 2 >= total_height - h0:
            break
        height += h + padding
        prev_width = w
    height -= padding
    out_nr = height + 2 * outer_padding
    out_nc = w0 + 2 * outer_padding
    rects: list[tuple[int, int, int, int]] = []
    y = outer_padding
    i = 0
    while y < height + outer_padding and i < len(sizes):
        h, w = sizes[i]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):
        h, w = sizes[i]
        right, bottom = outer_padding + w0 - 1, y - 1
        rect = (right - (w - 1), bottom - (h - 1), right, bottom)
        overlap = not (
            rect[2] < first[0] or rect[0] > first[2] or rect[3] < first[1] or rect[1] > first[3]
        )
        if overlap:
            break
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, out_nr, out_nc


def resize_aligned(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Corner-aligned bilinear resize (dlib's resize_image) of (N, C, H, W)."""
    if x.shape[2] == h and x.shape[3] == w:
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)


def pyramid_up_size(nr: int, nc: int) -> tuple[int, int]:
    """Output size of dlib's pyramid_up with pyramid_down<2>."""
    bottom = int(lround((nr - 1 + 0.75) * 2))
    right = int(lround((nc - 1 + 1.25) * 2))
    return bottom + 1, right + 1


def overlaps_nms(kept: np.ndarray, box: np.ndarray, iou: float, covered: float) -> bool:
    """loss_mmod's overlap test of integral inclusive `box` (4,) against `kept` (K, 4)."""
    if len(kept) == 0:
        return False
    iw = np.minimum(kept[:, 2], box[2]) - np.maximum(kept[:, 0], box[0]) + 1
    ih = np.minimum(kept[:, 3], box[3]) - np.maximum(kept[:, 1], box[1]) + 1
    inner = np.where((iw > 0) & (ih > 0), iw * ih, 0).astype(np.float64)
    ow = np.maximum(kept[:, 2], box[2]) - np.minimum(kept[:, 0], box[0]) + 1
    oh = np.maximum(kept[:, 3], box[3]) - np.minimum(kept[:, 1], box[1]) + 1
    area_k = (kept[:, 2] - kept[:, 0] + 1) * (kept[:, 3] - kept[:, 1] + 1)
    area_b = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        hit = (inner / (ow * oh) > iou) | (inner / area_k > covered) | (inner / area_b > covered)
    return bool(np.any(hit & (inner > 0)))
