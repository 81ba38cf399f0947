"""The `cnn` detector: dlib's MMOD CNN face detector, on the torch engine or on dlib.

How the torch engine reproduces dlib (the network itself is `facesphere.pretrained.dlib_mmod`):
an optional `pyramid_up` upsampling, the tiled `pyramid_down<6>` image pyramid in one forward
pass, score cells mapped back to 80x80 windows on their pyramid level, and loss_mmod's greedy
suppression on rounded rectangles. Boxes are mapped back through the upsampling like dlib.

Around either engine: an image whose longer side exceeds `max_side` (default 2048) is scaled
down to it first and its boxes mapped back, and an image that (after upsampling) is under
`MIN_SIDE` pixels on a side has no face (the network is not run).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from facesphere.detect.base import Detection
from facesphere.detect.geometry import (
    DEFAULT_MAX_SIDE,
    check_max_side,
    dlib_box,
    from_inclusive,
    rgb_image,
    shrink_to_max_side,
    to_original,
)
from facesphere.detect.registry import register_detector
from facesphere.errors import ConfigError
from facesphere.pretrained.cards import DLIB_MMOD
from facesphere.pretrained.dlib_library import check_engine, import_dlib
from facesphere.pretrained.dlib_mmod import (
    load_dlib_mmod,
    lround,
    overlaps_nms,
    pyramid_rects,
    pyramid_up_size,
    resize_aligned,
)
from facesphere.pretrained.files import card_file

# Images (after upsampling) under this many pixels on a side hold no face MMOD finds: in 300
# strips of LFW photos cut through a face it found none under 25 px; and its network cannot
# run on them (the torch port fails under 7 px, dlib's own code fails or corrupts its memory
# under 10 px of width).
MIN_SIDE = 20


class MMODDetector:
    """dlib's MMOD CNN face detector, on the `torch` engine (its network, image pyramid,
    window geometry and suppression rebuilt here, same boxes as dlib) or on `dlib` itself (the
    reference). Faces of about 80 px and up; `upsample` doubles the image that many times;
    an image larger than `max_side` (0: no limit) on its longer side is scaled down to it."""

    card = DLIB_MMOD

    def __init__(
        self,
        engine: str = "torch",
        device: str = "cpu",
        upsample: int = 0,
        adjust_threshold: float = 0.0,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        check_engine(engine, device)
        check_max_side(max_side)
        self.max_side = max_side
        self.engine = engine
        self.upsample = int(upsample)
        if self.upsample < 0:
            raise ConfigError("upsample must be >= 0")
        self.adjust_threshold = float(adjust_threshold)
        if engine == "dlib":
            self._dlib = import_dlib().cnn_face_detection_model_v1(str(card_file(self.card)))
            self._lock = threading.Lock()
            return
        model, layout = load_dlib_mmod()
        self.device = torch.device(device)
        self.model = model.to(self.device).to(memory_format=torch.channels_last)
        self.mean = torch.tensor(layout.mean_rgb, dtype=torch.float32, device=self.device).view(
            1, 3, 1, 1
        )
        self.padding = layout.pyramid_padding
        self.outer_padding = layout.pyramid_outer_padding
        self.windows = list(layout.windows)
        self.nms_iou = layout.nms_iou
        self.nms_covered = layout.nms_covered

    # -- stages -------------------------------------------------------------------------------
    def _upsampled(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(self.device)
        x = x.permute(2, 0, 1)[None].float()
        for _ in range(self.upsample):
            h, w = pyramid_up_size(x.shape[2], x.shape[3])
            x = torch.floor(resize_aligned(x, h, w))
        return x

    def tiled_pyramid(self, image: np.ndarray) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
        """The network input for `image` (after upsampling) and the level rectangles."""
        x = self._upsampled(image)
        rects, out_nr, out_nc = pyramid_rects(
            x.shape[2], x.shape[3], self.padding, self.outer_padding
        )
        tiled = torch.zeros((1, 3, out_nr, out_nc), device=self.device)
        level = (x - self.mean) * (1.0 / 256.0)
        for i, (left, top, right, bottom) in enumerate(rects):
            if i > 0:
                level = resize_aligned(level, bottom - top + 1, right - left + 1)
            tiled[:, :, top : bottom + 1, left : right + 1] = level
        return tiled, rects

    def _boxes(
        self, scores: np.ndarray, rects: list[tuple[int, ...]]
    ) -> tuple[np.ndarray, np.ndarray]:
        k_idx, rows, cols = np.nonzero(scores > self.adjust_threshold)
        values = scores[k_idx, rows, cols].astype(np.float64)
        if len(values) == 0:
            return np.zeros((0, 4)), values
        px = cols * self.model.cell_scale + self.model.cell_offset
        py = rows * self.model.cell_scale + self.model.cell_offset
        r = np.asarray(rects, dtype=np.float64)  # (L, 4)
        cx = np.clip(px[:, None], r[None, :, 0], r[None, :, 2])
        cy = np.clip(py[:, None], r[None, :, 1], r[None, :, 3])
        level = np.argmin(np.hypot(cx - px[:, None], cy - py[:, None]), axis=1)
        win = np.asarray(self.windows, dtype=np.float64)[k_idx]
        half_w = (win[:, 0] - 1) / 2
        half_h = (win[:, 1] - 1) / 2
        box = np.stack([px - half_w, py - half_h, px + half_w, py + half_h], axis=1)
        box -= r[level][:, [0, 1, 0, 1]]
        for lv in range(1, int(level.max()) + 1 if len(level) else 1):
            sel = level >= lv
            box[sel] = box[sel] * 1.2 + 0.3
        order = np.argsort(-values, kind="stable")
        return box[order], values[order]

    def too_small(self, image: np.ndarray) -> bool:
        """Whether `image`, after upsampling, is under `MIN_SIDE` pixels on a side."""
        height, width = image.shape[:2]
        for _ in range(self.upsample):
            height, width = pyramid_up_size(height, width)
        return min(height, width) < MIN_SIDE

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in RGB uint8 `image` (H, W, 3), best score first."""
        pixels, scale = shrink_to_max_side(image, self.max_side)
        if self.too_small(pixels):
            return []
        if self.engine == "dlib":
            with self._lock:
                found = self._dlib(pixels, self.upsample)
            detections = [Detection(dlib_box(d.rect), float(d.confidence)) for d in found]
            detections.sort(key=lambda d: -d.score)
        else:
            detections = [
                Detection(from_inclusive(*box), score)
                for box, score in self.detect_inclusive(pixels)
            ]
        return to_original(detections, scale)

    def detect_inclusive(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """The torch engine's faces as dlib gives them: [(float32 [left, top, right, bottom]
        with right/bottom inclusive, score)] by score."""
        image = rgb_image(image)
        if self.too_small(image):
            return []
        with torch.inference_mode():
            tiled, rects = self.tiled_pyramid(image)
            tiled = tiled.contiguous(memory_format=torch.channels_last)
            scores = self.model(tiled)[0].float().cpu().numpy()
        boxes, values = self._boxes(scores, rects)
        kept: list[np.ndarray] = []
        kept_scores: list[float] = []
        for box, score in zip(lround(boxes), values, strict=True):
            if overlaps_nms(np.asarray(kept).reshape(-1, 4), box, self.nms_iou, self.nms_covered):
                continue
            kept.append(box)
            kept_scores.append(float(score))
        out: list[tuple[np.ndarray, float]] = []
        for box, score in zip(kept, kept_scores, strict=True):
            b = box.astype(np.float64)
            if self.upsample:
                for _ in range(self.upsample):
                    b = b / 2.0 - np.array([1.25, 0.75, 1.25, 0.75])
                b = lround(b)
            out.append((b.astype(np.float32), score))
        return out


@register_detector("cnn", card=DLIB_MMOD)
def cnn_detector(
    engine: str = "torch",
    device: str = "cpu",
    upsample: int = 0,
    adjust_threshold: float = 0.0,
    max_side: int = DEFAULT_MAX_SIDE,
) -> MMODDetector:
    """dlib's MMOD CNN detector (`engine` torch, the default, or dlib)."""
    return MMODDetector(engine, device, upsample, adjust_threshold, max_side)
