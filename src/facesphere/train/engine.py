"""The training engine both trainers (recognition, ThunderNet detector) are built on.

* **Configs**: a run is described by a dataclass (sections are nested dataclasses). It is read
  from a YAML mapping (:func:`read_yaml`), ``--set key=value`` overrides with dotted keys and
  YAML values are applied (:func:`apply_overrides`) and every value is checked against its
  annotation (:func:`build_config`): an unknown key, a wrong type or a non-finite number is a
  :class:`ConfigError` naming the key.
* **Data paths**: a path field declared with :func:`data_path` accepts ``data:NAME``, resolved
  when the config is built to ``facesphere.io.data.data_dir() / NAME`` (``$FACESPHERE_DATA``
  when set, else ``../shared/data``); ``data:`` alone is the data folder itself. Other paths
  are used as written (relative to the working directory).
* **Schedules**: :class:`LRSchedule`, linear warmup then cosine, polynomial or constant.
* **Randomness**: :func:`seed_everything`, :func:`rng_state` / :func:`set_rng_state`.
* **Optimizers**: :func:`build_optimizer` (``sgd`` or ``adamw``).
* **Logs**: :class:`CsvLog`, a metrics CSV that a resumed run continues where its checkpoint was.
* **Checkpoints**: :class:`CheckpointStore`, ``checkpoints/step-NNNNNNNN/rank-R.pt`` written
  atomically, with a ``latest`` pointer and the oldest pruned; :func:`load_checkpoint`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pickle
import random
import re
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import numpy as np
import torch
import yaml

from facesphere.errors import ConfigError, TrainingError
from facesphere.io.files import read_utf8
from facesphere.models.checkpoint import save_atomic

C = TypeVar("C")

DATA_PREFIX = "data:"
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "poly", "constant")


# -- configs ------------------------------------------------------------------------------------


def data_path(default: str | None = "") -> Any:
    """A dataclass field holding a path that may be written ``data:NAME`` (see module doc)."""
    return dataclasses.field(default=default, metadata={"data_path": True})


def resolve_data_path(value: str) -> str:
    """``data:NAME`` -> the path of NAME in the shared data folder; other values unchanged."""
    if not value.startswith(DATA_PREFIX):
        return value
    from facesphere.io.data import data_dir

    name = value[len(DATA_PREFIX) :].lstrip("/")
    return str(data_dir() / name) if name else str(data_dir())


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file; an unreadable, non-UTF-8 or non-YAML file or one that
    does not hold a mapping is a one-line ConfigError."""
    path = Path(path)
    text = read_utf8(path, "config", ConfigError)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config {path} is not valid YAML{line}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must hold a mapping of keys to values")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], the YAML value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError("overrides look like key=value", key=text)
    if not key:
        raise ConfigError("empty key in override", key=text)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"cannot parse value {raw!r}", key=key) from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of the mapping ``raw`` with dotted keys set from ``key=value`` strings."""
    raw = dict(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else child
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{part!r} is not a section", key=".".join(path))
            node[part] = child
            node = child
        node[path[-1]] = value
    return raw


def _finite(key: str, value: Any) -> Any:
    """``value`` (any nesting of lists and mappings) with no NaN or infinite number in it."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}", key=key)
    if isinstance(value, dict):
        for name, item in value.items():
            _finite(f"{key}.{name}", item)
    if isinstance(value, list):
        for index, item in enumerate(value):
            _finite(f"{key}[{index}]", item)
    return value


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against (and converted to) the annotation ``hint``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is not None and type(None) in args:  # X | None
        if value is None:
            return None
        return _coerce(key, value, next(a for a in args if a is not type(None)))
    if origin is list:
        if not isinstance(value, list) or not value:
            raise ConfigError(f"expected a non-empty list, got {value!r}", key=key)
        return [_coerce(f"{key}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return _finite(key, dict(value))
        raise ConfigError(f"expected a mapping, got {value!r}", key=key)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and is_number and isinstance(value, int):
        return value
    if hint is float and is_number:
        return _finite(key, float(value))
    if hint is float and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        return _finite(key, float(value))  # YAML 1.1 reads `1e-3` (no dot) as a string
    if hint is str and isinstance(value, str):
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    raise ConfigError(f"expected {expected.get(hint, hint)}, got {value!r}", key=key)


def build_config(cls: type[C], raw: Any, prefix: str = "") -> C:
    """The dataclass ``cls`` from the mapping ``raw``: keys and types checked, ``data:`` paths
    resolved. Value ranges are the caller's to check."""
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping, got {raw!r}", key=prefix.rstrip(".") or "<root>")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown key; known: {', '.join(sorted(fields))}", key=full)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build_config(hint, value or {}, f"{full}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(full, value, hint)
    config = cls(**kwargs)
    for name, spec in fields.items():
        value = getattr(config, name)
        if spec.metadata.get("data_path") and isinstance(value, str):
            setattr(config, name, resolve_data_path(value))
    return config


def check_choice(key: str, value: str, choices: Iterable[str]) -> None:
    """ConfigError unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"must be one of {', '.join(choices)}, got {value!r}", key=key)


def check_positive(key: str, value: float | None, allow_zero: bool = False) -> None:
    """ConfigError unless ``value`` is None or > 0 (>= 0 with ``allow_zero``)."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"must be {bound}, got {value!r}", key=key)


def check_fraction(key: str, value: float, allow_zero: bool = True) -> None:
    """ConfigError unless ``value`` is in [0, 1] (in (0, 1] without ``allow_zero``)."""
    inside = 0.0 <= value <= 1.0 if allow_zero else 0.0 < value <= 1.0
    if not inside:
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ConfigError(f"must be in {interval}, got {value!r}", key=key)


# -- learning rate ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LRSchedule:
    """The learning-rate factor of each step: ``warmup`` steps rising linearly to 1, then
    ``shape`` (cosine, poly, constant) from 1 down to ``floor`` at step ``total``."""

    total: int
    warmup: int = 0
    shape: str = "cosine"
    floor: float = 0.0
    poly_power: float = 2.0

    def factor(self, step: int) -> float:
        """lr / base lr at (0-based) ``step``."""
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.shape == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.shape == "cosine":
            fall = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            fall = (1.0 - progress) ** self.poly_power
        return self.floor + (1.0 - self.floor) * fall

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """A LambdaLR stepping the optimizer's lr along this schedule (its state is the step)."""

        def factor(step: int) -> float:
            return self.factor(step)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def start_run(config: Any, output: str | Path, threads: int, seed: int) -> Path:
    """Begin a run: torch threads (0 keeps torch's choice), the output folder with the
    config written into it as ``config.yaml`` (`config` has ``to_dict()``), every generator
    seeded. Returns the output folder."""
    if threads:
        torch.set_num_threads(threads)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    seed_everything(seed)
    return folder


# -- randomness ---------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states (CUDA's too when available), for a checkpoint."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- optimizers ---------------------------------------------------------------------------------


def build_optimizer(
    kind: str,
    params: list[Any],
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    device: torch.device | None = None,
) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW over ``params`` (tensors or parameter groups, which may set
    their own ``weight_decay``); the fused kernels on CUDA where torch has them."""
    check_choice("optimizer", kind, OPTIMIZERS)

    def make(**extra: Any) -> torch.optim.Optimizer:
        if kind == "sgd":
            return torch.optim.SGD(
                params,
                lr=lr,
                momentum=momentum,
                weight_decay=weight_decay,
                nesterov=nesterov,
                **extra,
            )
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **extra)

    if device is not None and device.type == "cuda":
        try:
            return make(fused=True)
        except (TypeError, RuntimeError):
            pass
    return make()


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups: weight decay on weights (2+ dimensions), none on biases and norms."""
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def require_finite(loss: float, step: int) -> None:
    """TrainingError when the loss at ``step`` is NaN or infinite (the run diverged)."""
    if not math.isfinite(loss):
        raise TrainingError(
            f"the loss became {loss} by step {step}: training diverged (lower lr, add "
            "grad_clip or warmup); no model was written"
        )


# -- logs ---------------------------------------------------------------------------------------


class CsvLog:
    """A CSV file of one row per logged step. A run starting at step 0 begins it afresh; a
    resumed run keeps the rows up to its checkpoint's step and continues after them."""

    def __init__(self, path: Path, columns: list[str], start_step: int = 0) -> None:
        self.path = Path(path)
        self.columns = columns
        rows: list[dict[str, str]] = []
        if start_step and self.path.is_file():
            with open(self.path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= start_step]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        """Add one row (keys: the columns)."""
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, self.columns).writerow(row)


# -- checkpoints --------------------------------------------------------------------------------


class CheckpointStore:
    """The ``checkpoints`` folder of a run: ``step-NNNNNNNN/rank-R.pt`` per saved step (one file
    per process), ``latest`` naming the newest complete one, at most ``keep`` kept."""

    def __init__(self, output: Path, keep: int = 2) -> None:
        self.root = Path(output) / "checkpoints"
        self.keep = keep

    def folder(self, step: int) -> Path:
        """The folder of the checkpoint at ``step``."""
        return self.root / f"step-{step:08d}"

    def write(self, step: int, blob: dict[str, Any], rank: int = 0) -> Path:
        """Write this process's part of the checkpoint at ``step`` atomically."""
        folder = self.folder(step)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"rank-{rank}.pt"
        save_atomic(blob, path)
        return path

    def commit(self, step: int) -> None:
        """Point ``latest`` at ``step`` and prune (once every rank has written; rank 0 only)."""
        (self.root / "latest").write_text(self.folder(step).name)
        for stale in sorted(self.root.glob("step-*"))[: -self.keep]:
            shutil.rmtree(stale, ignore_errors=True)

    def save(self, step: int, blob: dict[str, Any]) -> Path:
        """Write and commit a single-process checkpoint."""
        path = self.write(step, blob)
        self.commit(step)
        return path

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        pointer = self.root / "latest"
        if pointer.is_file():
            candidate = self.root / pointer.read_text().strip()
            if (candidate / "rank-0.pt").is_file():
                return candidate
        found = sorted(p for p in self.root.glob("step-*") if (p / "rank-0.pt").is_file())
        return found[-1] if found else None

    def resume_path(self, resume: str | None) -> Path | None:
        """What ``resume`` names: None (start afresh), ``auto`` (the latest checkpoint, if any)
        or a checkpoint folder or file."""
        if not resume:
            return None
        if resume == "auto":
            return self.latest()
        return Path(resume)


def load_checkpoint(path: Path, fmt: str, rank: int = 0) -> dict[str, Any]:
    """The training state at ``path`` (a checkpoint folder: its ``rank-R.pt``) whose ``format``
    must be ``fmt``; a missing, unreadable or foreign file is a TrainingError."""
    file = path / f"rank-{rank}.pt" if path.is_dir() else path
    if not file.is_file():
        raise TrainingError(f"no checkpoint to resume from at {file}")
    try:
        blob = torch.load(file, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile):
        raise TrainingError(f"{file} is not a readable checkpoint") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise TrainingError(f"{file} is not a {fmt} file")
    return blob
