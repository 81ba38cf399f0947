"""The ``thunder`` detector: a trained ThunderNet face model with its own five landmarks.

Weights come from, in order: the ``weights`` argument, ``$FACESPHERE_THUNDER_WEIGHTS``, or
the bundled ``facesphere/assets/thunder_snet49.pt`` (checked against its card's sha256).
Every detection carries its standard-5 points (scheme ``standard5``): from the second
landmark stage (`facesphere.detect.thunder.refine`) when the weights file holds one, as the
bundled file does (``refine_landmarks=False`` keeps the R-CNN head's points), else the head's.

Working resolution. The network is fully convolutional, so it runs where the faces are: an
image is scaled so that its smallest wanted face (``min_face`` pixels high, halved once per
``upsample``) becomes the smallest anchor (16 px), an image smaller than 320 px is enlarged to
that (the size it was trained at: its landmarks are finer there), capped by ``max_side`` on
the longer side, and padded to a multiple of 32. Faces larger than the anchors reach at that
scale (about 320 px) are found on coarser levels, each 4x smaller than the last, added until the
whole image fits in 320 px; the levels' detections are merged by one NMS. At the default
``min_face`` (16) a 320x320 photo is one pass at 320x320, a 640x480 one runs at 640x480 plus
160x120, and ``upsample=1`` (faces from 8 px) doubles the finest level.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from facesphere.detect.base import Detection
from facesphere.detect.geometry import (
    DEFAULT_MAX_SIDE,
    check_detector_options,
    rgb_image,
    too_small_for_a_face,
)
from facesphere.detect.thunder.model import (
    ProposalSettings,
    ThunderFace,
    landmarks_from_offsets,
    load_detector_file,
    traced_feature_maps,
)
from facesphere.detect.thunder.ops import clip_boxes, decode_boxes, nms
from facesphere.detect.thunder.refine import refine_landmarks
from facesphere.errors import ConfigError, ModelFileError
from facesphere.models.fold import fold_batchnorm
from facesphere.pretrained.cards import THUNDER
from facesphere.pretrained.files import card_file

WEIGHTS_ENV = "FACESPHERE_THUNDER_WEIGHTS"
SMALLEST_ANCHOR = 16.0  # px at the network's scale: the smallest face it is trained to find
LEVEL_REACH = 320  # px: the largest face one level finds (largest anchor 256, regressed)
LEVEL_STEP = 4.0  # each coarser level is this many times smaller
PAD_TO = 32  # the backbone's total stride
MIN_WORKING_SIDE = 320  # px: a smaller image is enlarged to this (the training crops' size)
DEFAULT_MIN_FACE = 16.0  # the finest level is the image's own resolution


def resolve_weights(weights: str | Path | None = None) -> Path:
    """The weights file to load (argument, environment, else the bundled and verified one)."""
    candidate = weights or os.environ.get(WEIGHTS_ENV)
    if candidate is None:
        return card_file(THUNDER)
    path = Path(candidate).expanduser()
    if not path.is_file():
        raise ModelFileError(
            f"no trained ThunderNet weights at {path}; train them with `facesphere "
            f"train-detector --config configs/thunder.yaml` and pass weights=PATH or set "
            f"{WEIGHTS_ENV}"
        )
    return path


def working_scales(height: int, width: int, min_face: float, max_side: int) -> list[float]:
    """The scales an image of `height` x `width` runs at: the finest maps `min_face` to the
    smallest anchor and the longer side to at least 320 px (at most `max_side` px, 0: no cap),
    then 4x coarser levels until the whole image fits in one level's reach."""
    longer = max(height, width)
    scale = max(SMALLEST_ANCHOR / min_face, MIN_WORKING_SIDE / longer)
    if max_side:
        scale = min(scale, max_side / longer)
    scales = [scale]
    while longer * scales[-1] > LEVEL_REACH:
        scales.append(scales[-1] / LEVEL_STEP)
    return scales


def proposals_for(cells: int) -> ProposalSettings:
    """Proposal counts for a level of `cells` stride-16 positions: crowds need more RoIs."""
    post = int(min(300, max(50, cells // 8)))
    return ProposalSettings(pre_nms=min(4 * post, 2000), post_nms=post)


class ThunderDetector:
    """Faces (and their standard-5 landmarks) in RGB uint8 images of any size, at the working
    resolution the module docstring describes. An image under 8 px on a side has no face
    (`too_small_for_a_face`)."""

    card = THUNDER

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "cpu",
        score_threshold: float = 0.5,
        nms_iou: float = 0.4,
        min_face: float = DEFAULT_MIN_FACE,
        upsample: int = 0,
        max_side: int = DEFAULT_MAX_SIDE,
        refine_landmarks: bool = True,
    ) -> None:
        check_detector_options(score_threshold, nms_iou, max_side)
        if not math.isfinite(min_face) or min_face < 4:
            raise ConfigError("min_face must be a face height in pixels, at least 4")
        if isinstance(upsample, bool) or not 0 <= upsample <= 3:
            raise ConfigError("upsample must be 0..3 (each halves min_face)")
        if not isinstance(refine_landmarks, bool):
            raise ConfigError("refine_landmarks must be true or false")
        self.device = torch.device(device)
        path = resolve_weights(weights)
        if weights is not None or os.environ.get(WEIGHTS_ENV):
            self.card = THUNDER.derive(
                weights_file=str(path), sha256=None, weights_source=f"user-trained ({path})"
            )
        model, refiner = load_detector_file(path, str(self.device))
        self.model: ThunderFace = model.fold_for_inference()
        self._feature_maps = traced_feature_maps(self.model)
        # folded and channels-last, as the backbone: the same points, faster on the CPU
        self.refiner = (
            fold_batchnorm(refiner).to(memory_format=torch.channels_last)
            if refiner is not None and refine_landmarks
            else None
        )
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.min_face = min_face / 2**upsample
        self.max_side = max_side
        norm = self.card.normalization
        mean = torch.tensor(np.broadcast_to(norm.mean, (3,)), dtype=torch.float32)
        std = torch.tensor(np.broadcast_to(norm.std, (3,)), dtype=torch.float32)
        self._pad_grey = mean.round().reshape(1, 3, 1, 1).to(self.device)
        # per (R, G, B) value of an NHWC row, as `_input` applies them
        self._inv_std = (1 / std).to(self.device)
        self._shift = (-mean / std).to(self.device)

    def _input(self, image: np.ndarray, scale: float) -> tuple[torch.Tensor, tuple[int, int]]:
        """The network input of `image` at `scale` (padded to a multiple of 32 with the
        normalisation's mean grey), channels-last, and the (height, width) the image fills."""
        h, w = image.shape[:2]
        nw, nh = max(round(w * scale), 1), max(round(h * scale), 1)
        if (nw, nh) != (w, h):
            shrink = nw < w
            image = cv2.resize(
                image, (nw, nh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
        elif not image.flags.writeable:  # torch only wraps writable arrays
            image = image.copy()
        ph, pw = (max(math.ceil(v / PAD_TO) * PAD_TO, 64) for v in (nh, nw))
        x = torch.empty((1, 3, ph, pw), device=self.device, memory_format=torch.channels_last)
        x[:, :, :nh, :nw] = torch.from_numpy(image).to(self.device).permute(2, 0, 1)
        x[:, :, nh:, :] = self._pad_grey
        x[:, :, :nh, nw:] = self._pad_grey
        # (pixel - mean) / std as one multiply-add in place, on rows of (R, G, B) * width
        # values: broadcasting (1, 3, 1, 1) over NHWC memory is 20x slower
        rows = x.permute(0, 2, 3, 1).view(ph, pw * 3)
        torch.addcmul(self._shift.repeat(pw), rows, self._inv_std.repeat(pw), out=rows)
        return x, (nh, nw)

    def _level(self, image: np.ndarray, scale: float) -> tuple[torch.Tensor, ...]:
        """(boxes, scores, points) found at one scale, in the original image's pixels."""
        x, (height, width) = self._input(image, scale)
        sam, logits, deltas = self._feature_maps(x)
        rois = self.model.proposals(
            logits,
            deltas,
            self.model.anchors(tuple(sam.shape[-2:]), x.device),
            (x.shape[2], x.shape[3]),
            proposals_for(sam.shape[-2] * sam.shape[-1]),
        )
        empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 5, 2))
        if len(rois) == 0:
            return empty
        score, box_d, lm_d = self.model.head_outputs(sam, rois)
        prob = torch.sigmoid(score)
        keep = prob >= self.score_threshold
        rois, prob, box_d, lm_d = rois[keep], prob[keep], box_d[keep], lm_d[keep]
        # landmark offsets are learnt relative to the RoI, not to the refined box
        points = landmarks_from_offsets(lm_d, rois[:, 1:])
        # boxes end at the image, not in the padding beside it
        boxes = clip_boxes(decode_boxes(box_d, rois[:, 1:]), height, width)
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        back = torch.tensor([width / image.shape[1], height / image.shape[0]], device=boxes.device)
        return boxes[inside] / back.repeat(2), prob[inside], points[inside] / back

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces with their standard-5 landmarks, by decreasing score."""
        image = np.ascontiguousarray(rgb_image(image), dtype=np.uint8)
        if too_small_for_a_face(image):
            return []
        levels = [
            self._level(image, scale)
            for scale in working_scales(*image.shape[:2], self.min_face, self.max_side)
        ]
        boxes, prob, points = (torch.cat([level[k].cpu() for level in levels]) for k in range(3))
        order = nms(boxes, prob, self.nms_iou)
        boxes, prob, points = boxes[order].numpy(), prob[order].numpy(), points[order].numpy()
        if self.refiner is not None:
            points = refine_landmarks(self.refiner, image, boxes, self.card.normalization)
        return [
            Detection(
                boxes[i].astype(np.float32),
                float(prob[i]),
                points[i].astype(np.float32),
                self.card.landmark_scheme,
            )
            for i in range(len(order))
        ]
