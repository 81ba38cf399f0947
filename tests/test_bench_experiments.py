"""The pieces of bench/experiments.py that do not train: configs, LFW scoring, table, plot."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "experiments.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_experiments", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mean_colour(x: torch.Tensor) -> torch.Tensor:
    """A stand-in 'model': the mean colour of each chip, which is what tells people apart."""
    return x.mean(dim=(2, 3))


def _fake_lfw(n_people: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(n_people, 3))
    images = np.repeat(np.repeat(colours[:, None, None, :], 112, 1), 112, 2).astype(np.uint8)
    images = np.concatenate([images, images])  # image i and i + n are the same person
    pairs, same = [], []
    for i in range(n_people):
        pairs += [(i, i + n_people), (i, (i + 1) % n_people)]
        same += [True, False]
    return {
        "images": images,
        "pairs": np.array(pairs),
        "same": np.array(same),
        "fold": np.arange(len(pairs)) // 8,
    }


def test_score_lfw_separates_identical_pairs(bench: ModuleType) -> None:
    result = bench.score_lfw(_mean_colour, _fake_lfw())
    assert result["lfw_accuracy"] > 0.9
    assert result["auc"] > 0.95
    assert result["lfw_pairs"] == 80 and result["lfw_images"] == 80


def test_score_lfw_of_constant_model_is_chance(bench: ModuleType) -> None:
    result = bench.score_lfw(lambda x: torch.ones(len(x), 4), _fake_lfw())
    assert result["lfw_accuracy"] <= 0.6


def test_configs_differ_only_in_head(bench: ModuleType, tmp_path: Path) -> None:
    from facesphere.train.config import config_from_dict

    args = bench.parse_args(["--steps", "20", "--out", str(tmp_path), "--source", "x"])
    a, b = bench.run_config(args, "softmax"), bench.run_config(args, "arcface")
    assert {k for k in a if a[k] != b[k]} == {"head", "output"}
    assert config_from_dict(b).warmup_steps == 2 and config_from_dict(b).steps == 20
    assert args.lfw_mode == "center"


def test_table_and_plot(bench: ModuleType, tmp_path: Path) -> None:
    run = tmp_path / "arcface"
    run.mkdir()
    (run / "metrics.csv").write_text("step,loss\n5,20.0\n10,10.0\n")
    assert bench.read_losses(run / "metrics.csv") == [(5, 20.0), (10, 10.0)]
    bench.plot_losses({"arcface": run}, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    row = {
        "head": "arcface",
        "final_loss": 10.0,
        "lfw_accuracy": 0.75,
        "lfw_std": 0.05,
        "tar_far_1e-3": 0.1,
        "tar_far_1e-2": 0.2,
        "auc": 0.8,
        "train_cpu_s": 12.0,
    }
    assert "| arcface | 10.000 | 75.00 ± 5.00 | 10.0 | 20.0 | 0.800 | 12 |" in (
        bench.markdown_table([row])
    )
