"""The JSON report the service benchmarks write: the benchmark's name, the machine, any extra
fields, then the result rows (imported by the scripts beside it)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def write_report(path: Path, benchmark: str, results: list[dict[str, Any]], **extra: Any) -> None:
    """Write `results` to `path` as indented JSON with the machine they were measured on."""
    report = {
        "benchmark": benchmark,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        **extra,
        "results": results,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
