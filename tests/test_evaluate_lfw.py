"""The LFW protocol on a 600-pair subset (60 pairs of each of the 10 folds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facesphere.cli.main import app


def test_lfw_600_pairs_reach_97_percent(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACESPHERE_HOME", str(tmp_path / "home"))
    report = tmp_path / "lfw.json"
    lfw = shared_data / "lfw"
    command = ["evaluate", "pairs", "--images", str(lfw / "images"), "--pairs"]
    command += [str(lfw / "pairs.txt"), "--protocol", "lfw", "--limit", "60"]
    command += ["--workers", "2", "--json", str(report)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["pairs"] == 600
    assert len(data["fold_accuracies"]) == 10
    assert data["accuracy_mean"] >= 0.97, data
    assert 0.0 <= data["accuracy_std"] < 0.05
    assert data["auc"] > 0.98
    assert data["tar_at_far"]["0.01"] > 0.9
    assert data["unreadable"] == []
    # The second run reads every embedding from the cache.
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0
    cached = json.loads(report.read_text())
    assert cached["accuracy_mean"] == data["accuracy_mean"]
    assert cached["seconds"] < data["seconds"] / 3
