"""The ``yunet`` detector: OpenCV Zoo's YuNet (2023mar, int8) with its five landmarks.

The ONNX graph runs as a torch module (`facesphere.pretrained.onnx_graph`). The detector does
what OpenCV's `FaceDetectorYN` does around the network: the image, as BGR pixels 0..255 (what
YuNet was trained on), is zero-padded at its right and bottom to a multiple of 32; each cell
(row r, column c) of the stride-8/16/32 heads decodes to a box centred at
((c, r) + delta) * stride of size exp(delta) * stride, five points at ((c, r) + delta) * stride
and the score sqrt(cls * obj) (both clipped to 0..1); scores above `score_threshold` are
sorted, the best `top_k` kept, and greedy NMS on the boxes truncated to whole pixels (as
OpenCV's `NMSBoxes` on `Rect2i`) removes those overlapping a better one by IoU > `nms_iou`.

YuNet's points come in image order, image-left eye first (OpenCV calls it the right eye, the
subject's): left eye, right eye, nose tip, left and right mouth corner in image coordinates,
which is `standard5` as it is. An image runs at its own resolution up to `max_side` pixels
(default `DEFAULT_MAX_SIDE`, 2048) on its longer side, and a larger one scaled down to that, so
small faces of ordinary photos are kept and the cost per image is bounded: OpenCV Zoo
documents YuNet for faces of about 10 to 300 px, and on LFW faces shrunk onto a canvas it
finds them from 10-12 px box width (none at 8 px). Faces over ~300 px want a smaller
`max_side`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import Tensor

from facesphere.detect.base import Detection
from facesphere.detect.geometry import (
    DEFAULT_MAX_SIDE,
    bgr_at_max_side,
    check_detector_options,
    to_original,
    too_small_for_a_face,
)
from facesphere.detect.registry import register_detector
from facesphere.detect.thunder.ops import nms
from facesphere.errors import ConfigError
from facesphere.pretrained.cards import YUNET
from facesphere.pretrained.files import card_file
from facesphere.pretrained.onnx_graph import load_onnx_graph

STRIDES = (8, 16, 32)
DIVISOR = 32


def padded_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) rounded up to a multiple of 32, as the network needs."""
    return -(-height // DIVISOR) * DIVISOR, -(-width // DIVISOR) * DIVISOR


class YuNetDetector:
    """Faces and their standard-5 landmarks in RGB uint8 images of any size, best score first.

    An image whose longer side exceeds `max_side` (0: no limit) is scaled down to it first;
    results are mapped back to its own pixels.
    """

    card = YUNET

    def __init__(
        self,
        device: str = "cpu",
        score_threshold: float = 0.6,
        nms_iou: float = 0.3,
        top_k: int = 5000,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        check_detector_options(score_threshold, nms_iou, max_side)
        if top_k < 1:
            raise ConfigError("top_k must be >= 1")
        self.device = torch.device(device)
        self.model = load_onnx_graph(card_file(self.card)).to(self.device)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.top_k = int(top_k)
        self.max_side = max_side

    def _decode(self, outputs: dict[str, Tensor], index: int, height: int, width: int):
        """Boxes (x, y, w, h), points (5, 2) and scores of every cell of image `index`."""
        boxes, points, scores = [], [], []
        for stride in STRIDES:
            rows, cols = height // stride, width // stride
            r, c = torch.meshgrid(
                torch.arange(rows, device=self.device),
                torch.arange(cols, device=self.device),
                indexing="ij",
            )
            prior = torch.stack([c.flatten(), r.flatten()], dim=1).float()
            cls = outputs[f"cls_{stride}"][index, :, 0].clamp(0, 1)
            obj = outputs[f"obj_{stride}"][index, :, 0].clamp(0, 1)
            delta = outputs[f"bbox_{stride}"][index]
            kps = outputs[f"kps_{stride}"][index].reshape(-1, 5, 2)
            centre = (prior + delta[:, :2]) * stride
            size = torch.exp(delta[:, 2:]) * stride
            boxes.append(torch.cat([centre - size / 2, size], dim=1))
            points.append((prior[:, None, :] + kps) * stride)
            scores.append(torch.sqrt(cls * obj))
        return torch.cat(boxes), torch.cat(points), torch.cat(scores)

    def _select(self, boxes: Tensor, points: Tensor, scores: Tensor) -> list[Detection]:
        keep = torch.nonzero(scores > self.score_threshold).flatten()
        keep = keep[torch.argsort(scores[keep], descending=True, stable=True)][: self.top_k]
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        whole = torch.trunc(boxes)  # OpenCV suppresses on integer rectangles
        order = nms(torch.cat([whole[:, :2], whole[:, :2] + whole[:, 2:]], 1), scores, self.nms_iou)
        corners = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)
        corners, points = corners[order].cpu().numpy(), points[order].cpu().numpy()
        return [
            Detection(box.astype(np.float32), float(s), p.astype(np.float32), "standard5")
            for box, p, s in zip(corners, points, scores[order].tolist(), strict=True)
        ]

    @torch.inference_mode()
    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """`detect` of each image; images of one padded working size share a forward pass."""
        inputs = [bgr_at_max_side(image, self.max_side) for image in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (pixels, _) in enumerate(inputs):
            if too_small_for_a_face(pixels):
                continue
            groups[padded_size(*pixels.shape[:2])].append(i)
        results: list[list[Detection]] = [[] for _ in images]
        for (height, width), members in groups.items():
            batch = np.zeros((len(members), height, width, 3), np.float32)
            for j, i in enumerate(members):
                pixels = inputs[i][0]
                batch[j, : pixels.shape[0], : pixels.shape[1]] = pixels
            x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2)
            outputs = self.model(x.contiguous())
            for j, i in enumerate(members):
                decoded = self._decode(outputs, j, height, width)
                results[i] = to_original(self._select(*decoded), inputs[i][1])
        return results

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in RGB uint8 `image` (H, W, 3) with standard-5 landmarks, best score first."""
        return self.detect_batch([image])[0]


@register_detector("yunet", card=YUNET)
def yunet_detector(
    device: str = "cpu",
    score_threshold: float = 0.6,
    nms_iou: float = 0.3,
    top_k: int = 5000,
    max_side: int = DEFAULT_MAX_SIDE,
) -> YuNetDetector:
    """OpenCV Zoo's YuNet detector with five landmarks (images over `max_side` px shrunk)."""
    return YuNetDetector(device, score_threshold, nms_iou, top_k, max_side)
