"""The ``thunder`` detector: a trained ThunderNet face model with its own five landmarks.

Weights come from, in order: the ``weights`` argument, ``$FACESPHERE_THUNDER_WEIGHTS``, or
the bundled ``facesphere/assets/thunder_snet49.pt`` (checked against its card's sha256).
Every detection carries its standard-5 points (scheme ``standard5``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facesphere.detect.base import Detection
from facesphere.detect.geometry import rgb_image, to_original, too_small_for_a_face
from facesphere.detect.thunder.model import ProposalSettings, landmarks_from_offsets, load_model
from facesphere.detect.thunder.ops import clip_boxes, decode_boxes, nms
from facesphere.errors import ModelFileError
from facesphere.pretrained.cards import THUNDER
from facesphere.pretrained.files import card_file

WEIGHTS_ENV = "FACESPHERE_THUNDER_WEIGHTS"


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


class ThunderDetector:
    """Faces (and their standard-5 landmarks) in RGB uint8 images of any size.

    The image is scaled so that its longer side is the model's input size (320 px, so the
    cost per image is bounded) and padded to a square; boxes (clipped to the image) and points
    are mapped back to the original pixels. An image under 8 px on a side has no face
    (`too_small_for_a_face`).
    """

    card = THUNDER

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "cpu",
        score_threshold: float = 0.5,
        nms_iou: float = 0.4,
        proposals: int = 50,
    ) -> None:
        self.device = torch.device(device)
        path = resolve_weights(weights)
        if weights is not None or os.environ.get(WEIGHTS_ENV):
            self.card = THUNDER.derive(
                weights_file=str(path), sha256=None, weights_source=f"user-trained ({path})"
            )
        self.model = load_model(path, str(self.device))
        self.size = self.model.spec.input_size
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.proposal_settings = ProposalSettings(pre_nms=300, post_nms=proposals)

    def _prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """The network input for RGB `image` and the (height, width) the image fills in it."""
        h, w = image.shape[:2]
        scale = self.size / max(h, w)
        nw, nh = max(round(w * scale), 1), max(round(h * scale), 1)
        resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), np.float32)
        norm = self.card.normalization
        canvas = np.full((self.size, self.size, 3), norm.mean, np.float32)
        canvas[:nh, :nw] = resized
        x = (canvas - np.float32(norm.mean)) / np.float32(norm.std)
        x = torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]
        return x.to(self.device), (nh, nw)

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces with their standard-5 landmarks, by decreasing score."""
        image = np.ascontiguousarray(rgb_image(image), dtype=np.uint8)
        if too_small_for_a_face(image):
            return []
        x, (height, width) = self._prepare(image)
        sam, logits, deltas, anchors = self.model.features(x)
        rois = self.model.proposals(
            logits, deltas, anchors, (self.size, self.size), self.proposal_settings
        )
        if len(rois) == 0:
            return []
        score, box_d, lm_d = self.model.head_outputs(sam, rois)
        prob = torch.sigmoid(score)
        keep = prob >= self.score_threshold
        rois, prob, box_d, lm_d = rois[keep], prob[keep], box_d[keep], lm_d[keep]
        # landmark offsets are learnt relative to the RoI, not to the refined box
        points = landmarks_from_offsets(lm_d, rois[:, 1:])
        # boxes end at the image, not in the padding beside it
        boxes = clip_boxes(decode_boxes(box_d, rois[:, 1:]), height, width)
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, prob, points = boxes[inside], prob[inside], points[inside]
        order = nms(boxes, prob, self.nms_iou)
        found = [
            Detection(
                boxes[i].cpu().numpy().astype(np.float32),
                float(prob[i]),
                points[i].cpu().numpy().astype(np.float32),
                self.card.landmark_scheme,
            )
            for i in order.tolist()
        ]
        scale = np.array([width / image.shape[1], height / image.shape[0]], np.float32)
        return to_original(found, scale)
