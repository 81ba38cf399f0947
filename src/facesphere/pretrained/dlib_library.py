"""The dlib library itself, for the `dlib` engine (the reference the torch ports are tested on).

Models rebuilt from dlib's files run on the `torch` engine (facesphere's own ports) or on
`dlib`; `check_engine` refuses any other, and a GPU for dlib.
"""

from __future__ import annotations

from types import ModuleType

from facesphere.errors import ConfigError, ModelError

ENGINES = ("torch", "dlib")


def check_engine(engine: str, device: str, engines: tuple[str, ...] = ENGINES) -> None:
    """Refuse an engine the model has not, and a GPU for dlib's own engine."""
    if engine not in engines:
        raise ConfigError(f"unknown engine {engine!r}; this model runs on {', '.join(engines)}")
    if engine == "dlib" and device != "cpu":
        raise ConfigError(f"the dlib engine runs on the CPU only, not on {device!r}")


def import_dlib() -> ModuleType:
    """Import dlib, with an install hint when it is missing."""
    try:
        import dlib
    except ImportError as exc:
        raise ModelError(
            "this part of facesphere runs on dlib, which is not installed: pip install dlib-bin"
        ) from exc
    return dlib
