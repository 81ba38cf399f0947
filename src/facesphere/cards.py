"""Model cards: every fact about a model in one place (as timm keeps them in `PretrainedCfg`).

A card names the model and says what it does, how its input is made (alignment template,
input size as (width, height), normalisation ``(pixel - mean) / std`` on RGB), where its weights
come from and under which licence (and the terms of the data they were trained on), and the
decision thresholds calibrated for it, each with the data set and false-accept rate it was
calibrated at. The analyzer, gallery, video pipeline, service and exporter read these facts
from the card; nothing else holds them. Cards travel inside every exported file as JSON.

A recognizer's decision thresholds come from its `Calibration`: the cosine at which a given
share of impostor pairs of development data (celeba299 people, never LFW) is accepted, with the
share of genuine pairs rejected there. Verification asks for a false-accept rate (FAR) per
comparison; open-set identification against a gallery of N subjects asks for a false-positive
identification rate (FPIR), the share of strangers named as someone. A stranger is named when
any of the N subjects scores above the threshold, so with independent comparisons
FPIR = 1 - (1 - FAR)^N, and the identification threshold is the verification threshold at
FAR = 1 - (1 - FPIR)^(1/N) (about FPIR / N): it rises with the gallery's size.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from typing import Any

import numpy as np

from facesphere.errors import ConfigError, ImageError, ModelError

TASKS = ("recognition", "detection", "landmarks")

# Jobs a recognizer's thresholds are calibrated for (verification and identification come
# from its `Calibration`; clustering has thresholds of its own).
VERIFY = "verify"
IDENTIFY = "identify"
CLUSTER_AVERAGE = "cluster-average"
CLUSTER_CHINESE_WHISPERS = "cluster-chinese-whispers"


@dataclass(frozen=True)
class Normalization:
    """Network input = (pixel - mean) / std per RGB channel, pixels in 0..255."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def uniform(cls, mean: float, std: float) -> Normalization:
        """The same mean and std on every channel."""
        return cls((mean,) * 3, (std,) * 3)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of RGB `pixels` (..., 3), channels last."""
        out = np.array(pixels, np.float32, order="C")
        if out.shape[-1:] != (3,):
            raise ImageError("pixels", f"expected RGB values of shape (..., 3), got {out.shape}")
        # in place on rows of (R, G, B) * width values: broadcasting the (3,) vectors steps
        # through the array 3 values at a time, 20x slower (same results)
        width = out.shape[-2] if out.ndim > 1 else 1
        rows = out.reshape(-1, width * 3)
        rows -= np.tile(np.asarray(self.mean, np.float32), width)
        rows /= np.tile(np.asarray(self.std, np.float32), width)
        return out


# What every trainable backbone is fed: (pixel - 127.5) / 127.5.
TRAINING_NORMALIZATION = Normalization.uniform(127.5, 127.5)
# Raw 0..255 pixels, for networks that normalise inside (dlib's).
RAW_PIXELS = Normalization()


@dataclass(frozen=True)
class Threshold:
    """A calibrated decision threshold: cosine `value`, chosen on `dataset`, with the
    false-accept rate per comparison `far` (and false-reject rate `frr`) measured there; for
    identification also the false-positive identification rate `fpir` it targets for a gallery
    of `gallery_size` subjects."""

    value: float
    dataset: str
    far: float | None = None
    frr: float | None = None
    note: str = ""
    fpir: float | None = None
    gallery_size: int | None = None

    @classmethod
    def given(cls, value: float) -> Threshold:
        """A threshold the caller chose (no calibration behind it)."""
        return cls(float(value), "given by the caller")

    def describe(self) -> dict[str, Any]:
        """What a JSON answer says about the threshold that decided it."""
        return {
            "threshold": self.value,
            "far": self.far,
            "frr": self.frr,
            "fpir": self.fpir,
            "gallery_size": self.gallery_size,
            "calibrated_on": self.dataset,
            **({"threshold_note": self.note} if self.note else {}),
        }


@dataclass(frozen=True)
class OperatingPoint:
    """At cosine `threshold`, `far` of the impostor pairs are accepted and `frr` of the genuine
    pairs rejected."""

    far: float
    threshold: float
    frr: float


@dataclass(frozen=True)
class Calibration:
    """A recognizer's measured operating points on development data, from the highest FAR to
    the lowest, and the defaults: verification at `verify_far`, identification at
    `identify_fpir` (see the module docstring)."""

    dataset: str
    points: tuple[OperatingPoint, ...]
    genuine_pairs: int
    impostor_pairs: int
    verify_far: float = 1e-3
    identify_fpir: float = 1e-2
    note: str = ""

    def __post_init__(self) -> None:
        fars = [p.far for p in self.points]
        if len(fars) < 2 or any(a <= b for a, b in pairwise(fars)) or fars[-1] <= 0:
            raise ModelError("a calibration needs two or more points of decreasing positive FAR")

    @property
    def far_range(self) -> tuple[float, float]:
        """The lowest and highest calibrated FAR."""
        return self.points[-1].far, self.points[0].far

    def at_far(self, far: float) -> tuple[float, float]:
        """(threshold, FRR) at `far`, interpolated linearly in log FAR between the calibrated
        points; ConfigError outside the calibrated range."""
        low, high = self.far_range
        if not (low * (1 - 1e-9) <= far <= high * (1 + 1e-9)):
            raise ConfigError(f"FAR {far:g} is outside the calibrated range {low:g}..{high:g}")
        for upper, lower in pairwise(self.points):
            if lower.far <= far <= upper.far * (1 + 1e-9):
                span = math.log(upper.far) - math.log(lower.far)
                t = (math.log(upper.far) - math.log(max(far, lower.far))) / span
                value = upper.threshold + t * (lower.threshold - upper.threshold)
                return value, upper.frr + t * (lower.frr - upper.frr)
        return self.points[-1].threshold, self.points[-1].frr

    def verification(self, far: float | None = None) -> Threshold:
        """The threshold accepting `far` of impostor pairs (default `verify_far`)."""
        far = self.verify_far if far is None else float(far)
        value, frr = self.at_far(far)
        return Threshold(round(value, 4), self.dataset, far, round(frr, 4))

    def identification(self, gallery_size: int, fpir: float | None = None) -> Threshold:
        """The threshold naming `fpir` (default `identify_fpir`) of strangers as someone in a
        gallery of `gallery_size` subjects: the one at FAR = 1 - (1 - fpir)^(1/N). A gallery
        too large for the calibrated range gets the lowest calibrated FAR's, and says so."""
        fpir = self.identify_fpir if fpir is None else float(fpir)
        if not 0.0 < fpir < 1.0:
            raise ConfigError(f"FPIR must be between 0 and 1, got {fpir:g}")
        size = max(int(gallery_size), 1)
        far = -math.expm1(math.log1p(-fpir) / size)  # 1 - (1 - fpir) ** (1 / size), exactly
        low, high = self.far_range
        note = ""
        if far < low:
            far, note = low, f"gallery too large for the calibration: FAR held at {low:g}"
        far = min(far, high)
        value, frr = self.at_far(far)
        return Threshold(round(value, 4), self.dataset, far, round(frr, 4), note, fpir, size)


@dataclass(frozen=True)
class ModelCard:
    """The facts of one model; see the module docstring."""

    name: str
    version: str
    task: str
    weights_source: str
    licence: str
    data_licence: str = "unknown"
    embedding_dim: int | None = None
    template: str | None = None
    input_size: tuple[int, int] | None = None
    normalization: Normalization = RAW_PIXELS
    landmark_scheme: str | None = None
    weights_file: str | None = None
    sha256: str | None = None
    thresholds: dict[str, Threshold] = field(default_factory=dict)
    calibration: Calibration | None = None
    members: tuple[FusionMember, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelError(f"card {self.name!r}: task must be one of {TASKS}, not {self.task!r}")
        if (
            self.task == "recognition"
            and not self.members
            and (self.embedding_dim is None or self.template is None or self.input_size is None)
        ):
            raise ModelError(
                f"card {self.name!r}: a recognizer's card needs embedding_dim, template and "
                "input_size"
            )
        if self.members:
            if abs(sum(m.weight for m in self.members) - 1.0) > 1e-6:
                raise ModelError(f"card {self.name!r}: member weights must sum to 1")
            if self.embedding_dim != sum(int(m.card.embedding_dim or 0) for m in self.members):
                raise ModelError(f"card {self.name!r}: embedding_dim must be the members' sum")

    @property
    def templates(self) -> tuple[str, ...]:
        """The alignment template of each chip array the recognizer takes (one per member of a
        fused recognizer)."""
        if self.members:
            return tuple(str(m.card.template) for m in self.members)
        return (str(self.template),)

    @property
    def model_key(self) -> tuple[str, str, int]:
        """(name, version, embedding size): what galleries check embeddings against."""
        return self.name, self.version, int(self.embedding_dim or 0)

    def _calibration(self, job: str) -> Calibration:
        if self.calibration is None:
            raise ConfigError(
                f"model {self.name!r} has no calibrated {job} threshold; pass a threshold"
            )
        return self.calibration

    def verification_threshold(self, far: float | None = None) -> Threshold:
        """The threshold accepting `far` of impostor pairs (default: the calibration's
        verification FAR); ConfigError without a calibration or outside its range."""
        return self._calibration(VERIFY).verification(far)

    def identification_threshold(self, gallery_size: int, fpir: float | None = None) -> Threshold:
        """The threshold naming `fpir` of strangers in a gallery of `gallery_size` subjects
        (default: the calibration's identification FPIR); ConfigError without a calibration."""
        return self._calibration(IDENTIFY).identification(gallery_size, fpir)

    def threshold(self, job: str) -> Threshold:
        """The calibrated threshold for the clustering `job`; ModelError when the card has
        none."""
        try:
            return self.thresholds[job]
        except KeyError:
            known = ", ".join(sorted(self.thresholds)) or "none"
            raise ModelError(
                f"model {self.name!r} has no calibrated {job} threshold (calibrated: {known}); "
                "pass a threshold explicitly"
            ) from None

    def derive(self, **changes: Any) -> ModelCard:
        """A copy with `changes` (e.g. the card of a fine-tuned or exported model)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples as lists)."""
        return asdict(self)

    def to_json(self) -> str:
        """The card as one JSON document (what exported files carry)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """The card written by `to_dict`; ModelError when it is not one."""
        try:
            values = dict(data)
            values["normalization"] = Normalization(
                *(tuple(float(v) for v in values["normalization"][k]) for k in ("mean", "std"))
            )
            values["thresholds"] = {
                job: Threshold(**spec) for job, spec in values.get("thresholds", {}).items()
            }
            if values.get("calibration") is not None:
                spec = dict(values["calibration"])
                spec["points"] = tuple(OperatingPoint(**p) for p in spec["points"])
                values["calibration"] = Calibration(**spec)
            values["members"] = tuple(
                FusionMember(cls.from_dict(m["card"]), float(m["weight"]))
                for m in values.get("members", ())
            )
            if values.get("input_size") is not None:
                values["input_size"] = tuple(int(v) for v in values["input_size"])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"not a facesphere model card: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """The card serialised by `to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"model card is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ModelError("model card is not a JSON object")
        return cls.from_dict(data)


@dataclass(frozen=True)
class FusionMember:
    """One recognizer of a fused recognizer, with its `weight` in the fused cosine."""

    card: ModelCard
    weight: float
