"""Which compute device a model may run on: `cpu`, or `cuda[:N]` when this torch has CUDA."""

from __future__ import annotations

from facesphere.errors import ConfigError


def check_device(device: str) -> str:
    """`device`, or a ConfigError when it is not `cpu`/`cuda[:N]` or CUDA is unavailable."""
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda[:N]")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no visible GPU"
            raise ConfigError(
                f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                f"{build}); use --device cpu"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} GPU(s)")
    return device
