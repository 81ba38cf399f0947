"""`facesphere models --json`, the summary helpers behind it, and bench/models.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import torch
from typer.testing import CliRunner

from facesphere.cli.main import app
from facesphere.models.backbones import list_backbones

BENCH = Path(__file__).resolve().parents[1] / "bench" / "models.py"


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_models", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_command_json() -> None:
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    start = result.stdout.index("[")
    rows = json.loads(result.stdout[start:])
    backbones = {r["name"]: r for r in rows if r["kind"] == "backbone"}
    assert set(backbones) == set(list_backbones())
    for row in backbones.values():
        assert row["params"] > 0 and row["flops"] > 0
    # IResNet-50 at 112x112: 43.6M parameters, about 12.6 GFLOPs in torch's counting.
    assert abs(backbones["iresnet50"]["params"] - 43.6e6) < 0.05 * 43.6e6
    assert 11e9 < backbones["iresnet50"]["flops"] < 14e9
    heads = [r for r in rows if r["kind"] == "head"]
    # Heads come from facesphere.models.heads; an ArcFace-style head at 512 x 1000 holds
    # at least the 512 000 centre weights.
    assert heads, "no heads listed"
    assert any(r["name"] == "arcface" and r["params"] >= 512 * 1000 for r in heads)
    pretrained = {r["name"]: r for r in rows if "card" in r}
    assert {(n, r["kind"]) for n, r in pretrained.items()} == {
        ("cnn", "detector"),
        ("hog", "detector"),
        ("retinaface", "detector"),
        ("thunder", "detector"),
        ("yunet", "detector"),
        ("dlib-shape5", "landmarker"),
        ("dlib-resnet", "recognizer"),
        ("sface", "recognizer"),
        ("dlib-resnet+sface", "recognizer"),
    }
    resnet = pretrained["dlib-resnet"]["card"]
    assert resnet["licence"].startswith("CC0") and resnet["template"] == "dlib150"
    assert resnet["calibration"]["dataset"].startswith("celeba299")
    assert len(resnet["calibration"]["points"]) == 11


def test_bench_fc_estimate_scales() -> None:
    bench = _load_bench()
    full = bench.fc_estimate(1_000_000, 512, 32, 1.0)
    partial = bench.fc_estimate(1_000_000, 512, 32, 0.1)
    assert full["weight"] == 1_000_000 * 512 * 4 == partial["weight"]
    assert full["logits"] == 32 * 1_000_000 * 4
    assert partial["logits"] == 32 * 100_000 * 4
    sharded = bench.fc_estimate(1_000_000, 512, 32, 1.0, world_size=8)
    assert sharded["weight"] == 125_000 * 512 * 4
    assert sharded["logits"] == 8 * 32 * 125_000 * 4


def test_bench_script_runs_small(tmp_path: Path) -> None:
    bench = _load_bench()
    threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    try:
        bench.main(
            [
                "--models", "snet49", "--batch", "2", "--steps", "1", "--warmup", "1",
                "--threads", "1", "--fc-classes", "20000", "--fc-dim", "64",
                "--fc-world-size", "4", "--json", str(out),
            ]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())
    (row,) = data["backbones"]
    assert row["name"] == "snet49" and row["images_per_s"] > 0 and row["peak_mib"] >= 0
    assert len(data["fc_memory"]) == 4
    measured = [r for r in data["fc_memory"] if r["source"].startswith("measured")]
    assert len(measured) == 2 and all(r["ranks"] == 1 for r in measured)
    assert all(r["source"] == "computed" for r in data["fc_memory"] if r["ranks"] == 4)
