"""Box operations in torch: anchors, box coding, IoU, NMS and position-sensitive RoI align.

Boxes are (x1, y1, x2, y2) in pixels with exclusive right/bottom edges, so a box's width is
``x2 - x1``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# box-delta scaling of the usual two-stage detectors: centre offsets x10, log-sizes x5
BOX_STD = (0.1, 0.1, 0.2, 0.2)
MAX_LOG_SCALE = 4.135  # log(1000 / 16): clamps exp() in decoding


def make_anchors(
    feature_size: tuple[int, int],
    stride: int,
    scales: tuple[float, ...],
    ratios: tuple[float, ...],
) -> Tensor:
    """Anchors (H * W * A, 4), A = len(scales) * len(ratios), centred on each cell.

    A ratio is height / width; an anchor of scale s and ratio r has area s * s.
    The order is row-major over cells, then scales, then ratios (matching the RPN's outputs).
    """
    h, w = feature_size
    shapes = []
    for s in scales:
        for r in ratios:
            aw = s / r**0.5
            shapes.append((aw, aw * r))
    wh = torch.tensor(shapes, dtype=torch.float32)  # (A, 2)
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)  # (HW, 1, 2)
    half = wh[None] / 2
    return torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4)


def box_area(boxes: Tensor) -> Tensor:
    """Areas of (N, 4) boxes (0 for degenerate ones)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix (N, M) of boxes a (N, 4) and b (M, 4)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=1e-6)


def encode_boxes(boxes: Tensor, reference: Tensor) -> Tensor:
    """Deltas (dx, dy, dw, dh) taking `reference` boxes to `boxes`, divided by BOX_STD."""
    rw = reference[:, 2] - reference[:, 0]
    rh = reference[:, 3] - reference[:, 1]
    rx = reference[:, 0] + rw / 2
    ry = reference[:, 1] + rh / 2
    bw = boxes[:, 2] - boxes[:, 0]
    bh = boxes[:, 3] - boxes[:, 1]
    bx = boxes[:, 0] + bw / 2
    by = boxes[:, 1] + bh / 2
    deltas = torch.stack(
        [(bx - rx) / rw, (by - ry) / rh, torch.log(bw / rw), torch.log(bh / rh)], dim=1
    )
    return deltas / deltas.new_tensor(BOX_STD)


def decode_boxes(deltas: Tensor, reference: Tensor) -> Tensor:
    """Inverse of :func:`encode_boxes`: apply (N, 4) deltas to (N, 4) reference boxes."""
    d = deltas * deltas.new_tensor(BOX_STD)
    rw = reference[:, 2] - reference[:, 0]
    rh = reference[:, 3] - reference[:, 1]
    cx = reference[:, 0] + rw / 2 + d[:, 0] * rw
    cy = reference[:, 1] + rh / 2 + d[:, 1] * rh
    w = rw * torch.exp(d[:, 2].clamp(max=MAX_LOG_SCALE))
    h = rh * torch.exp(d[:, 3].clamp(max=MAX_LOG_SCALE))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Clamp boxes to the image."""
    x = boxes[:, 0::2].clamp(0, width)
    y = boxes[:, 1::2].clamp(0, height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression; indices of kept boxes by decreasing score.

    The IoU matrix of the score-sorted boxes is computed once, vectorised; the greedy pass
    then only ORs rows of that boolean matrix, one row per kept box.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    over = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if not suppressed[i]:
            kept.append(i)
            suppressed |= over[i]
    return order[torch.as_tensor(kept, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each group (e.g. image index): boxes of different groups never suppress.
    Returns kept indices, group by group, each group by decreasing score."""
    kept = [
        members[nms(boxes[members], scores[members], iou_threshold)]
        for members in (torch.nonzero(groups == g).flatten() for g in torch.unique(groups))
    ]
    if not kept:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    return torch.cat(kept)


def _bilinear_gather(feats: Tensor, batch: Tensor, bins: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear samples of ``feats`` (N, B, C, H, W) at (x, y); batch/bins/x/y broadcast to
    a common shape S; returns (*S, C). Points beyond one pixel outside the map give zero.

    The four corners of every sample are read in one gather and blended in one weighted sum
    (few large ops rather than many small ones: the head runs on every RoI of every image)."""
    _, _, _, h, w = feats.shape
    valid = ((x > -1.0) & (x < w) & (y > -1.0) & (y < h)).to(feats.dtype)
    x = x.clamp(0, w - 1)
    y = y.clamp(0, h - 1)
    x0 = x.floor().clamp(max=w - 1)
    y0 = y.floor().clamp(max=h - 1)
    fx = x - x0
    fy = y - y0
    x0, y0 = x0.long(), y0.long()
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    # corners (y0, x0), (y0, x1), (y1, x0), (y1, x1) stacked on a last axis of 4
    index = torch.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=-1)
    weight = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], dim=-1)
    weight = weight * valid.unsqueeze(-1)
    flat = feats.flatten(3)  # (N, B, C, H*W)
    # advanced indices around a slice: the indexed dims come first, the slice (C) last
    corners = flat[batch.unsqueeze(-1), bins.unsqueeze(-1), :, index]  # (*S, 4, C)
    return (corners * weight.unsqueeze(-1)).sum(dim=-2)


def ps_roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 2,
) -> Tensor:
    """Position-sensitive RoI align.

    features: (N, C * k * k, H, W) with k = output_size, laid out bin-major: channels
    ``[(i * k + j) * C, (i * k + j + 1) * C)`` serve bin (row i, column j).
    rois: (R, 5) rows of (batch index, x1, y1, x2, y2) in input-image pixels.
    Each bin averages ``sampling_ratio ** 2`` bilinear samples taken at the centres of a
    regular grid inside the bin, from its own channel group. Returns (R, C, k, k).
    """
    n, channels, h, w = features.shape
    k = output_size
    if channels % (k * k):
        raise ValueError(f"{channels} channels do not split into {k}x{k} bins")
    c = channels // (k * k)
    r = rois.shape[0]
    if r == 0:
        return features.new_zeros((0, c, k, k))
    feats = features.view(n, k * k, c, h, w)
    batch = rois[:, 0].long()
    x1 = rois[:, 1] * spatial_scale
    y1 = rois[:, 2] * spatial_scale
    bin_w = ((rois[:, 3] - rois[:, 1]) * spatial_scale).clamp(min=1.0 / k) / k
    bin_h = ((rois[:, 4] - rois[:, 2]) * spatial_scale).clamp(min=1.0 / k) / k
    s = sampling_ratio
    # position of each sample inside the roi in bin units: bin index + (p + 0.5) / s
    grid = torch.arange(k, dtype=features.dtype, device=features.device)
    sub = (torch.arange(s, dtype=features.dtype, device=features.device) + 0.5) / s
    offsets = (grid[:, None] + sub[None, :]).reshape(-1)  # (k * s,)
    # sample coordinates on the feature map, feature pixel centres at integer positions
    ys = y1[:, None] + offsets[None, :] * bin_h[:, None] - 0.5  # (R, k*s)
    xs = x1[:, None] + offsets[None, :] * bin_w[:, None] - 0.5
    ys = ys.view(r, k, 1, s, 1).expand(r, k, k, s, s)
    xs = xs.view(r, 1, k, 1, s).expand(r, k, k, s, s)
    bins = torch.arange(k * k, device=features.device).view(1, k, k, 1, 1)
    samples = _bilinear_gather(feats, batch.view(r, 1, 1, 1, 1), bins, xs, ys)
    pooled = samples.mean(dim=(3, 4))  # (R, k, k, C)
    return pooled.permute(0, 3, 1, 2).contiguous()
