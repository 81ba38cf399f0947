"""Training targets and losses: RPN objectness + box, R-CNN score + box, masked landmarks.

Boxes to ignore (WIDER's invalid faces, faces too small or cut by the crop) are neither
positives nor negatives: an anchor or RoI that mostly holds one (at least half of the ignored
box inside it, and at most 16x its area) is left out of the negatives."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from facesphere.detect.thunder.model import (
    ProposalSettings,
    ThunderFace,
    offsets_from_landmarks,
)
from facesphere.detect.thunder.ops import box_iou, encode_boxes


@dataclass
class LossSettings:
    """Sampling and weighting of the five loss terms."""

    rpn_positive_iou: float = 0.5
    rpn_negative_iou: float = 0.3
    rpn_batch: int = 128
    roi_positive_iou: float = 0.5
    roi_batch: int = 64
    roi_positive_fraction: float = 0.25
    landmark_weight: float = 1.0
    box_beta: float = 1.0 / 9.0


def _sample(mask: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
    """Up to `count` random indices where `mask` is true."""
    idx = torch.nonzero(mask).flatten()
    if len(idx) > count:
        perm = torch.randperm(len(idx), generator=generator)[:count]
        idx = idx[perm.to(idx.device)]
    return idx


def ignored_by(boxes: Tensor, ignore: Tensor) -> Tensor:
    """(K,) bool: which of `boxes` (K, 4) mostly hold one of the `ignore` boxes (G, 4)."""
    if len(ignore) == 0:
        return torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    lt = torch.maximum(boxes[:, None, :2], ignore[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], ignore[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    ignored_area = area(ignore).clamp(min=1e-6)[None]
    holds = (inter >= 0.5 * ignored_area) & (area(boxes)[:, None] <= 16 * ignored_area)
    return holds.any(dim=1)


def rpn_targets(
    anchors: Tensor,
    gt: Tensor,
    settings: LossSettings,
    generator: torch.Generator | None,
    ignore: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(sampled positive anchors, sampled negative anchors, matched gt box per positive,
    per-anchor max IoU) for one image."""
    k = len(anchors)
    free = ~ignored_by(anchors, ignore if ignore is not None else gt.new_zeros((0, 4)))
    if len(gt) == 0:
        neg = _sample(free, settings.rpn_batch, generator)
        empty = torch.zeros(0, dtype=torch.long, device=anchors.device)
        return empty, neg, gt.new_zeros((0, 4)), anchors.new_zeros(k)
    iou = box_iou(anchors, gt)  # (K, G)
    best, match = iou.max(dim=1)
    positive = best >= settings.rpn_positive_iou
    # every face keeps its best anchor(s), however low the overlap
    top_per_gt = iou.max(dim=0).values
    is_top = (iou == top_per_gt[None]) & (top_per_gt[None] > 0.1)
    positive |= is_top.any(dim=1)
    match = torch.where(is_top.any(dim=1), is_top.float().argmax(dim=1), match)
    negative = (best < settings.rpn_negative_iou) & ~positive & free
    pos = _sample(positive, settings.rpn_batch // 2, generator)
    neg = _sample(negative, settings.rpn_batch - len(pos), generator)
    return pos, neg, gt[match[pos]], best


def detection_loss(
    model: ThunderFace,
    images: Tensor,
    boxes: list[Tensor],
    landmarks: list[Tensor],
    settings: LossSettings,
    proposal_settings: ProposalSettings,
    generator: torch.Generator | None = None,
    ignore: list[Tensor] | None = None,
) -> dict[str, Tensor]:
    """The five loss terms (and their sum under ``total``) for a batch; `ignore` holds each
    image's boxes to ignore."""
    n = images.shape[0]
    if ignore is None:
        ignore = [boxes[i].new_zeros((0, 4)) for i in range(n)]
    sam, logits, deltas, anchors = model.features(images)
    image_size = (images.shape[2], images.shape[3])
    rpn_cls, rpn_box = [], []
    for i in range(n):
        pos, neg, matched, _ = rpn_targets(anchors, boxes[i], settings, generator, ignore[i])
        chosen = torch.cat([pos, neg])
        labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(logits)
        rpn_cls.append(
            F.binary_cross_entropy_with_logits(logits[i, chosen], labels, reduction="sum")
            / max(len(chosen), 1)
        )
        if len(pos):
            target = encode_boxes(matched, anchors[pos])
            rpn_box.append(
                F.smooth_l1_loss(deltas[i, pos], target, beta=settings.box_beta, reduction="sum")
                / max(len(chosen), 1)
            )
    rois = model.proposals(logits.detach(), deltas.detach(), anchors, image_size, proposal_settings)
    sampled, labels, box_t, lm_t, lm_mask = [], [], [], [], []
    for i in range(n):
        gt = boxes[i]
        mine = rois[rois[:, 0] == i, 1:]
        mine = torch.cat([mine, gt]) if len(gt) else mine
        if len(gt):
            iou = box_iou(mine, gt)
            best, match = iou.max(dim=1)
        else:
            best = mine.new_zeros(len(mine))
            match = torch.zeros(len(mine), dtype=torch.long)
        n_pos = int(settings.roi_batch * settings.roi_positive_fraction)
        pos = _sample(best >= settings.roi_positive_iou, n_pos, generator)
        background = (best < settings.roi_positive_iou) & ~ignored_by(mine, ignore[i])
        neg = _sample(background, settings.roi_batch - len(pos), generator)
        chosen = torch.cat([pos, neg])
        sampled.append(torch.cat([torch.full((len(chosen), 1), float(i)), mine[chosen]], dim=1))
        labels.append(torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]))
        if len(pos):
            box_t.append(encode_boxes(gt[match[pos]], mine[pos]))
            points = landmarks[i][match[pos]]
            lm_mask.append(torch.isfinite(points))
            lm_t.append(offsets_from_landmarks(torch.nan_to_num(points), mine[pos]))
    roi_batch = torch.cat(sampled)
    score, box_d, lm_d = model.head_outputs(sam, roi_batch)
    label_t = torch.cat(labels).to(score)
    is_pos = label_t > 0
    zero = score.sum() * 0.0
    out = {
        "rpn_cls": torch.stack(rpn_cls).mean(),
        "rpn_box": torch.stack(rpn_box).sum() / n if rpn_box else zero,
        "rcnn_cls": F.binary_cross_entropy_with_logits(score, label_t),
    }
    if is_pos.any():
        out["rcnn_box"] = F.smooth_l1_loss(
            box_d[is_pos], torch.cat(box_t), beta=settings.box_beta, reduction="sum"
        ) / len(label_t)
        mask = torch.cat(lm_mask).to(lm_d)
        per_point = F.smooth_l1_loss(
            lm_d[is_pos], torch.cat(lm_t), beta=settings.box_beta, reduction="none"
        )
        out["landmark"] = (
            settings.landmark_weight * (per_point * mask).sum() / mask.sum().clamp(min=1.0)
        )
    else:
        out["rcnn_box"] = zero
        out["landmark"] = zero
    out["total"] = sum(out.values())
    return out
