"""The quick-start demo: its checks pass on the sample portraits a plain install has."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from facesphere.cli.main import app


def test_demo_passes_and_draws(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True
    assert data["faces"] == {"astronaut": 1, "grace_hopper": 1}
    names = {check["name"] for check in data["checks"]}
    assert "astronaut vs grace_hopper" in names and len(names) == 7
    assert all(check["passed"] for check in data["checks"])
    assert sorted(Path(p).name for p in data["drawn"]) == [
        "astronaut_faces.jpg",
        "grace_hopper_faces.jpg",
    ]
