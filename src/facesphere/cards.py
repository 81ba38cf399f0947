"""Model cards: every fact about a model in one place (as timm keeps them in `PretrainedCfg`).

A card names the model and says what it does, how its input is made (alignment template,
input size as (width, height), normalisation ``(pixel - mean) / std`` on RGB), where its weights
come from and under which licence (and the terms of the data they were trained on), and the
decision thresholds calibrated for it, each with the data set and false-accept rate it was
calibrated at. The analyzer, gallery, video pipeline, service and exporter read these facts
from the card; nothing else holds them. Cards travel inside every exported file as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from facesphere.errors import ModelError

TASKS = ("recognition", "detection", "landmarks")

# Jobs a recognizer's thresholds are calibrated for.
VERIFY = "verify"
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
        mean = np.asarray(self.mean, np.float32)
        return (np.asarray(pixels, np.float32) - mean) / np.asarray(self.std, np.float32)


# What every trainable backbone is fed: (pixel - 127.5) / 127.5.
TRAINING_NORMALIZATION = Normalization.uniform(127.5, 127.5)
# Raw 0..255 pixels, for networks that normalise inside (dlib's).
RAW_PIXELS = Normalization()


@dataclass(frozen=True)
class Threshold:
    """A calibrated decision threshold: cosine `value` for `job`, chosen on `dataset`, with the
    false-accept rate `far` (and false-reject rate `frr`) measured there."""

    value: float
    dataset: str
    far: float | None = None
    frr: float | None = None
    note: str = ""


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
    notes: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelError(f"card {self.name!r}: task must be one of {TASKS}, not {self.task!r}")
        if self.task == "recognition" and (
            self.embedding_dim is None or self.template is None or self.input_size is None
        ):
            raise ModelError(
                f"card {self.name!r}: a recognizer's card needs embedding_dim, template and "
                "input_size"
            )

    @property
    def model_key(self) -> tuple[str, str, int]:
        """(name, version, embedding size): what galleries check embeddings against."""
        return self.name, self.version, int(self.embedding_dim or 0)

    def threshold(self, job: str = VERIFY) -> Threshold:
        """The calibrated threshold for `job`; ModelError when the card has none."""
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
