"""bench/serve_load.py end to end with tiny counts: a real server, every phase, the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "serve_load.py"

pytestmark = pytest.mark.slow


def test_serve_load_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    command = [sys.executable, str(BENCH), "--configs", "after", "--small", "4", "--big", "800"]
    command += ["--burst", "200", "--time-limit", "60", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrong key x200" in result.stdout
    rows = {row["phase"]: row for row in json.loads(out.read_text())["results"]}
    assert all(row["lost"] == 0 for row in rows.values())
    assert rows["small"]["statuses"] == {"200": 4}
    assert rows["big 800x800"]["statuses"] == {"200": 1}
    assert rows["list x200"]["statuses"]["429"] >= 1  # past the key's burst of 100
    assert rows["wrong key x200"]["statuses"] == {"401": 10, "429": 190}
