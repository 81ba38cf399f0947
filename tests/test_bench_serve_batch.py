"""bench/serve_batch.py end to end with tiny counts: a real server, every way, the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "serve_batch.py"

pytestmark = pytest.mark.slow


def test_serve_batch_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "batch.json"
    command = [sys.executable, str(BENCH), "--images", "3", "--batch", "2", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "batch base64 JSON" in result.stdout
    rows = json.loads(out.read_text())["results"]
    assert [(r["way"], r["batch"]) for r in rows] == [
        ("single", 1),
        ("batch multipart", 2),
        ("batch base64 JSON", 2),
    ]
    assert all(r["images"] == 3 and r["same_embeddings"] for r in rows)
    assert len({r["faces_found"] for r in rows}) == 1 and rows[0]["faces_found"] >= 3
