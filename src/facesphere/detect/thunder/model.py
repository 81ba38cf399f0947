"""ThunderNet for faces: SNet backbone, compressed RPN, CEM, SAM, PSRoI align, light R-CNN.

The R-CNN head scores each proposal as face / not face, refines its box and regresses the
five standard landmarks (left eye centre, right eye centre, nose tip, left and right mouth
corner) as offsets from the RoI centre in units of the RoI size.

Its files, written by training and read here without it: ``facesphere-thunder`` (weights and
:class:`ThunderSpec`, :func:`save_model`, optionally with a trained second landmark stage,
:mod:`facesphere.detect.thunder.refine`, under ``refiner``) and ``facesphere-thunder-checkpoint``
(a resumable training state that also holds ``spec`` and ``state_dict``); :func:`load_model`
reads both, :func:`load_refiner` the landmark stage, :func:`load_detector_file` the two
stages at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facesphere.detect.thunder.ops import (
    batched_nms,
    clip_boxes,
    decode_boxes,
    make_anchors,
    ps_roi_align,
)
from facesphere.detect.thunder.refine import LandmarkRefiner, RefinerSpec
from facesphere.errors import ModelError
from facesphere.models.backbones import create_backbone
from facesphere.models.checkpoint import save_atomic
from facesphere.models.fold import fold_batchnorm, fold_pair

CEM_CHANNELS = 245  # = PSROI_CHANNELS * POOL_SIZE ** 2
PSROI_CHANNELS = 5
POOL_SIZE = 7
RPN_CHANNELS = 256
LANDMARK_STD = 0.1  # landmark offsets (in RoI sizes) are divided by this for the loss
STRIDE = 16
CHECKPOINT_FORMAT = "facesphere-thunder-checkpoint"
MODEL_FORMAT = "facesphere-thunder"


@dataclass
class ThunderSpec:
    """Architecture settings saved with every checkpoint."""

    backbone: str = "snet49"
    input_size: int = 320
    anchor_scales: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, 256.0)
    anchor_ratios: tuple[float, ...] = (1.0, 1.25)

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_scales) * len(self.anchor_ratios)


class ContextEnhancement(nn.Module):
    """CEM: 1x1 projections of C4, upsampled C5 and globally pooled C5, summed."""

    def __init__(self, c4_channels: int, c5_channels: int, out_channels: int = CEM_CHANNELS):
        super().__init__()
        self.from_c4 = nn.Conv2d(c4_channels, out_channels, 1)
        self.from_c5 = nn.Conv2d(c5_channels, out_channels, 1)
        self.from_global = nn.Conv2d(c5_channels, out_channels, 1)

    def forward(self, c4: Tensor, c5: Tensor) -> Tensor:
        up = F.interpolate(self.from_c5(c5), size=c4.shape[-2:], mode="nearest")
        glob = self.from_global(c5.mean(dim=(2, 3), keepdim=True))
        return self.from_c4(c4) + up + glob


class CompressedRPN(nn.Module):
    """5x5 depthwise + 1x1 conv (256 channels), then objectness and box-delta convs."""

    def __init__(self, in_channels: int, num_anchors: int, channels: int = RPN_CHANNELS):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 5, padding=2, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, channels, 1)
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.deltas = nn.Conv2d(channels, num_anchors * 4, 1)
        nn.init.normal_(self.objectness.weight, std=0.01)
        nn.init.constant_(self.objectness.bias, -4.0)
        nn.init.normal_(self.deltas.weight, std=0.01)
        nn.init.zeros_(self.deltas.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Features (N, 256, H, W), logits (N, H*W*A), deltas (N, H*W*A, 4)."""
        feats = F.relu(self.pointwise(self.depthwise(x)))
        n = x.shape[0]
        logits = self.objectness(feats).permute(0, 2, 3, 1).reshape(n, -1)
        deltas = self.deltas(feats).permute(0, 2, 3, 1).reshape(n, -1, 4)
        return feats, logits, deltas


class SpatialAttention(nn.Module):
    """SAM: CEM features re-weighted by sigmoid(BN(1x1 conv of the RPN features))."""

    def __init__(self, rpn_channels: int = RPN_CHANNELS, out_channels: int = CEM_CHANNELS):
        super().__init__()
        self.conv = nn.Conv2d(rpn_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, cem: Tensor, rpn_features: Tensor) -> Tensor:
        return cem * torch.sigmoid(self.bn(self.conv(rpn_features)))


class RCNNHead(nn.Module):
    """Light R-CNN subnet: PSRoI-aligned 5x7x7 -> FC 1024 -> score, box, landmarks."""

    def __init__(self, hidden: int = 1024) -> None:
        super().__init__()
        self.fc = nn.Linear(PSROI_CHANNELS * POOL_SIZE * POOL_SIZE, hidden)
        self.score = nn.Linear(hidden, 1)
        self.box = nn.Linear(hidden, 4)
        self.landmarks = nn.Linear(hidden, 10)
        for layer, std in ((self.score, 0.01), (self.box, 0.001), (self.landmarks, 0.001)):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits (R,), box deltas (R, 4), landmark offsets (R, 5, 2)."""
        h = F.relu(self.fc(pooled.flatten(1)))
        return self.score(h).squeeze(1), self.box(h), self.landmarks(h).view(-1, 5, 2)


@dataclass
class ProposalSettings:
    """How many RPN boxes survive before / after the proposal NMS."""

    pre_nms: int = 600
    post_nms: int = 100
    nms_iou: float = 0.7
    min_size: float = 4.0


class ThunderFace(nn.Module):
    """The whole detector. ``features`` and ``proposals`` serve training and inference."""

    def __init__(self, spec: ThunderSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or ThunderSpec()
        backbone = create_backbone(self.spec.backbone, embedding_dim=8)
        backbone.neck = nn.Identity()  # the embedding neck is not used for detection
        self.backbone = backbone
        self.cem = ContextEnhancement(backbone.c4_channels, backbone.c5_channels)
        self.rpn = CompressedRPN(CEM_CHANNELS, self.spec.num_anchors)
        self.sam = SpatialAttention()
        self.head = RCNNHead()
        self._anchor_cache: dict[tuple[int, int, str], Tensor] = {}

    def anchors(self, feature_size: tuple[int, int], device: torch.device) -> Tensor:
        """The anchors of a stride-16 map of `feature_size` (cached)."""
        key = (feature_size[0], feature_size[1], str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = make_anchors(
                feature_size, STRIDE, self.spec.anchor_scales, self.spec.anchor_ratios
            ).to(device)
        return self._anchor_cache[key]

    def feature_maps(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """SAM features (N, 245, H/16, W/16), RPN logits (N, K) and deltas (N, K, 4)."""
        c4, c5 = self.backbone.forward_c4_c5(images)
        # a channels-last backbone (inference) hands NCHW maps on: the heads are faster so
        cem = self.cem(c4.contiguous(), c5.contiguous())
        rpn_feats, logits, deltas = self.rpn(cem)
        return self.sam(cem, rpn_feats), logits, deltas

    def features(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """`feature_maps` and the anchors of their cells."""
        sam, logits, deltas = self.feature_maps(images)
        return sam, logits, deltas, self.anchors(tuple(sam.shape[-2:]), images.device)

    @torch.no_grad()
    def proposals(
        self,
        logits: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        image_size: tuple[int, int],
        settings: ProposalSettings,
    ) -> Tensor:
        """RoIs (R, 5): (image index, box) of the top-scoring RPN boxes after NMS."""
        n, k = logits.shape
        top = min(settings.pre_nms, k)
        scores, idx = logits.topk(top, dim=1)
        boxes = decode_boxes(
            deltas.gather(1, idx[..., None].expand(-1, -1, 4)).reshape(-1, 4),
            anchors[idx.reshape(-1)],
        )
        boxes = clip_boxes(boxes, *image_size)
        groups = torch.arange(n, device=logits.device).repeat_interleave(top)
        scores = scores.reshape(-1)
        wh = boxes[:, 2:] - boxes[:, :2]
        ok = (wh >= settings.min_size).all(dim=1)
        boxes, scores, groups = boxes[ok], scores[ok], groups[ok]
        keep = batched_nms(boxes, scores, groups, settings.nms_iou)
        rois = []
        for i in range(n):
            mine = keep[groups[keep] == i][: settings.post_nms]
            rois.append(torch.cat([groups[mine, None].to(boxes.dtype), boxes[mine]], dim=1))
        return torch.cat(rois)

    def fold_for_inference(self) -> ThunderFace:
        """This model (in eval mode) with its batch norms folded into the convolutions before
        them (`facesphere.models.fold`) and its backbone channels-last: the same outputs,
        faster. Not for training."""
        fold_batchnorm(self.eval())
        fold_pair(self.sam.conv, self.sam.bn)
        self.sam.bn = nn.Identity()
        # SNet's depthwise and 1x1 convolutions run faster on CPU in NHWC (bench/detect.py)
        self.backbone.to(memory_format=torch.channels_last)
        return self

    def head_outputs(self, sam: Tensor, rois: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """R-CNN logits, box deltas and landmark offsets for (R, 5) RoIs."""
        pooled = ps_roi_align(sam, rois, POOL_SIZE, 1.0 / STRIDE)
        return self.head(pooled)


def traced_feature_maps(model: ThunderFace) -> Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]:
    """`model.feature_maps` traced by TorchScript, for inference on channels-last images of any
    size (at least 64 px a side) on the model's device. The outputs are the same; the 200-odd
    tensor operations then run back to back in C++ instead of being called one by one from
    Python: on 2 CPU cores 1.15x faster at 640x480 and 1.5x at 160x128, less within whole
    `detect()` calls (docs/thunder.md). For a model made ready by `fold_for_inference`: the
    trace keeps the channels-last path of `concat_shuffled`."""
    device = next(model.parameters()).device
    example = torch.zeros((1, 3, 64, 64), device=device).contiguous(
        memory_format=torch.channels_last
    )
    with warnings.catch_warnings(), torch.inference_mode():
        # torch.jit is deprecated in favour of torch.export, which ran no faster than eager
        # here, and torch.compile, which needs a C++ compiler at run time
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace_module(model, {"feature_maps": example}, check_trace=False)
    return traced.feature_maps


def landmarks_from_offsets(offsets: Tensor, boxes: Tensor) -> Tensor:
    """Landmark offsets (R, 5, 2) relative to boxes (R, 4) -> points in pixels."""
    wh = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
    centre = ((boxes[:, 2:] + boxes[:, :2]) / 2)[:, None, :]
    return centre + offsets * LANDMARK_STD * wh


def offsets_from_landmarks(points: Tensor, boxes: Tensor) -> Tensor:
    """Inverse of :func:`landmarks_from_offsets`."""
    wh = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
    centre = ((boxes[:, 2:] + boxes[:, :2]) / 2)[:, None, :]
    return (points - centre) / (LANDMARK_STD * wh)


def _state(module: nn.Module, half: bool) -> dict[str, Tensor]:
    return {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in module.state_dict().items()
    }


def save_model(
    model: ThunderFace,
    path: str | Path,
    half: bool = False,
    refiner: LandmarkRefiner | None = None,
) -> None:
    """Write the ``facesphere-thunder`` file: architecture and weights for inference, and the
    second landmark stage when given (``half`` stores float16: half the size)."""
    blob: dict = {
        "format": MODEL_FORMAT,
        "spec": asdict(model.spec),
        "state_dict": _state(model, half),
    }
    if refiner is not None:
        blob["refiner"] = {"spec": refiner.spec.to_dict(), "state_dict": _state(refiner, half)}
    save_atomic(blob, path)


def _read(path: str | Path, device: str) -> dict:
    """The blob of a ``facesphere-thunder`` file or training checkpoint (ModelError else)."""
    blob = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
        raise ModelError(f"{path} is not a facesphere ThunderNet model")
    return blob


def _model_from(blob: dict, device: str) -> ThunderFace:
    spec = blob["spec"]
    spec = ThunderSpec(
        spec["backbone"],
        spec["input_size"],
        tuple(spec["anchor_scales"]),
        tuple(spec["anchor_ratios"]),
    )
    model = ThunderFace(spec)
    model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    return model.eval().to(device)


def _refiner_from(blob: dict, device: str) -> LandmarkRefiner | None:
    saved = blob.get("refiner")
    if saved is None:
        return None
    spec = saved["spec"]
    refiner = LandmarkRefiner(RefinerSpec(int(spec["size"]), tuple(spec["widths"])))
    refiner.load_state_dict({k: v.float() for k, v in saved["state_dict"].items()})
    return refiner.eval().to(device)


def load_model(path: str | Path, device: str = "cpu") -> ThunderFace:
    """A model saved by :func:`save_model` (or a training checkpoint), in eval mode."""
    return _model_from(_read(path, device), device)


def load_refiner(path: str | Path, device: str = "cpu") -> LandmarkRefiner | None:
    """The second landmark stage saved in a ``facesphere-thunder`` file (eval mode), or None
    when the file has none."""
    return _refiner_from(_read(path, device), device)


def load_detector_file(
    path: str | Path, device: str = "cpu"
) -> tuple[ThunderFace, LandmarkRefiner | None]:
    """Both stages of a ``facesphere-thunder`` file, read once: the detector and its second
    landmark stage (None when the file has none), in eval mode."""
    blob = _read(path, device)
    return _model_from(blob, device), _refiner_from(blob, device)
