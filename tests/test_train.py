"""Trainer tests: config validation, exact resume, metrics, a real-data run, 2-rank gloo."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facesphere.train.config import ConfigError, config_from_dict, load_config
from facesphere.train.shards import write_shards
from facesphere.train.trainer import train

REPO = Path(__file__).resolve().parents[1]


def _tiny_shards(root: Path, identities: int = 6, per_identity: int = 6) -> Path:
    """Synthetic shards: each identity is a coloured pattern plus noise (JPEG encoded)."""
    import numpy as np

    from facesphere.train.recordio import encode_jpeg

    rng = np.random.default_rng(0)
    images, labels = [], []
    for ident in range(identities):
        base = rng.integers(0, 256, size=(8, 8, 3)).repeat(14, 0).repeat(14, 1)
        for _ in range(per_identity):
            noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            images.append(encode_jpeg(noisy))
            labels.append(ident)
    write_shards(root, images, labels, [f"id{i}" for i in range(identities)], per_shard=10)
    return root


def _config(data: Path, output: Path, **overrides):
    raw = {
        "backbone": "shufflenetv2_x0_5",
        "embedding_dim": 32,
        "batch_size": 4,
        "steps": 20,
        "lr": 0.05,
        "warmup_steps": 3,
        "schedule": "cosine",
        "head": "arcface",
        "head_kwargs": {"s": 16.0, "m": 0.3},
        "sample_rate": 0.5,
        "seed": 3,
        "log_every": 5,
        "output": str(output),
        "progress": False,
        "deterministic": True,
        "augment": {"flip": True, "color_jitter": 0.5, "random_crop": 0.5},
        "data": {"kind": "shards", "source": str(data)},
    }
    raw.update(overrides)
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_shards(tmp_path_factory.mktemp("shards"))


def _weights(output: Path) -> dict[str, torch.Tensor]:
    blob = torch.load(output / "model.pt", weights_only=False)
    return blob["state_dict"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_resume_matches_uninterrupted_run(shards: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    straight = train(_config(shards, tmp_path / "a"))
    assert straight.step == 20
    first = train(_config(shards, tmp_path / "b"), stop_at=10)
    assert first.step == 10
    assert not (tmp_path / "b" / "model.pt").exists()
    resumed = train(_config(shards, tmp_path / "b", resume="auto"))
    assert resumed.step == 20
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6, rtol=0), key
    rows_a, rows_b = _rows(tmp_path / "a" / "metrics.csv"), _rows(tmp_path / "b" / "metrics.csv")
    assert [r["step"] for r in rows_a] == ["5", "10", "15", "20"]
    assert [r["step"] for r in rows_b] == ["5", "10", "15", "20"]
    for ra, rb in zip(rows_a, rows_b):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), abs=1e-5)
        assert float(ra["lr"]) == pytest.approx(float(rb["lr"]))
        assert float(ra["images_per_s"]) > 0
    # A different seed really changes the result (the comparison above can fail).
    other = train(_config(shards, tmp_path / "c", seed=4, steps=20))
    assert other.step == 20
    c = _weights(tmp_path / "c")
    assert any(not torch.allclose(a[k].float(), c[k].float(), atol=1e-6) for k in a)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"data": {"kind": "shards", "source": "x", "color": 1}}, "data.color"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"amp": "fp8"}, "amp"),
        ({"lr": "fast"}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"backbone": "resnet9000"}, "backbone"),
        ({"head": "nohead"}, "head"),
        ({"augment": {"blur": 2.0}}, "augment.blur"),
        ({"data": {"kind": "nope", "source": "x"}}, "data.kind"),
        ({"epochs": 2}, "steps"),
        ({"compile": "yes"}, "compile"),
    ],
)
def test_config_errors_name_the_key(override: dict, key: str, tmp_path: Path) -> None:
    raw = {"steps": 5, "data": {"kind": "shards", "source": "x"}}
    raw.update(override)
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert info.value.key == key
    assert repr(key) in str(info.value)


def test_overrides_and_run_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\nbatch_size: 64\ndata: {kind: shards, source: x}\n")
    config = load_config(path, ["data.max_identities=7", "head_kwargs.m=0.4", "lr=0.2"])
    assert config.data.max_identities == 7
    assert config.head_kwargs == {"m": 0.4}
    assert config.lr == 0.2
    name = config.run_name(when=0)
    assert name.startswith("mobilefacenet-arcface-bs64-")
    assert len(name.split("-")) == 5
    with pytest.raises(ConfigError, match=r"'data\.nope'"):
        load_config(path, ["data.nope=1"])


def test_smoke_config_is_valid() -> None:
    config = load_config(REPO / "configs" / "smoke.yaml", ["output=/tmp/x"])
    assert config.steps and config.steps <= 40
    assert config.output == "/tmp/x"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_rank_gloo_matches_single_process(shards: Path, tmp_path: Path) -> None:
    """2 ranks x batch 4 against 1 process x batch 8 (same data, same centres)."""
    # Frozen batch-norm statistics make every sample's embedding independent of its batch.
    common = {
        "steps": 4,
        "log_every": 1,
        "sample_rate": 1.0,
        "warmup_steps": 0,
        "freeze_bn": True,
        "grad_clip": 5.0,
        "augment": {"flip": False},
    }
    single = _config(shards, tmp_path / "single", batch_size=8, **common)
    train(single)
    script = tmp_path / "worker.py"
    script.write_text(
        "import sys, torch\n"
        "from facesphere.train.config import load_config\n"
        "from facesphere.train.trainer import main_worker\n"
        "torch.set_num_threads(1)\n"
        "main_worker(load_config(sys.argv[1]))\n"
    )
    import yaml

    cfg = _config(shards, tmp_path / "ddp", batch_size=4, **common).to_dict()
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(tmp_path / "ddp.yaml")],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
    one = [float(r["loss"]) for r in _rows(tmp_path / "single" / "metrics.csv")]
    two = [float(r["loss"]) for r in _rows(tmp_path / "ddp" / "metrics.csv")]
    assert len(one) == len(two) == 4
    assert one[0] != one[-1]  # the model was updated in between
    for a, b in zip(one, two):
        assert b == pytest.approx(a, rel=1e-4)
    ws, wd = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    for key in ws:
        assert torch.allclose(ws[key].float(), wd[key].float(), atol=1e-4), key
    assert (tmp_path / "ddp" / "checkpoints").is_dir()
    ckpt = sorted((tmp_path / "ddp" / "checkpoints").glob("step-*"))[-1]
    assert (ckpt / "rank-0.pt").is_file() and (ckpt / "rank-1.pt").is_file()


@pytest.mark.slow
def test_real_celeba_crops_lower_the_loss(shared_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    config = config_from_dict(
        {
            "backbone": "shufflenetv2_x0_5",
            "embedding_dim": 32,
            "head": "cosface",
            "head_kwargs": {"s": 16.0, "m": 0.2},
            "batch_size": 8,
            "steps": 30,
            "lr": 0.1,
            "warmup_steps": 2,
            "schedule": "constant",
            "log_every": 10,
            "output": str(tmp_path / "run"),
            "progress": False,
            "data": {
                "kind": "center_crop",
                "source": str(shared_data / "celeba299"),
                "max_identities": 3,
            },
        }
    )
    train(config)
    losses = [float(r["loss"]) for r in _rows(tmp_path / "run" / "metrics.csv")]
    assert len(losses) == 3
    assert losses[-1] < 0.8 * losses[0], losses


def test_diverged_run_stops_without_writing_a_model(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facesphere.errors import TrainingError
    from facesphere.train import trainer

    build_head = trainer._build_head

    class Diverging(torch.nn.Module):
        """The real head whose loss turns NaN."""

        def __init__(self, head: torch.nn.Module) -> None:
            super().__init__()
            self.head = head

        def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return self.head(embeddings, labels) * float("nan")

    monkeypatch.setattr(trainer, "_build_head", lambda *args: Diverging(build_head(*args)))
    output = tmp_path / "run"
    with pytest.raises(TrainingError, match="diverged"):
        train(_config(shards, output, steps=6, checkpoint_every=2))
    assert not (output / "model.pt").exists()
    assert not list(output.glob("checkpoints/step-*"))
    assert _rows(output / "metrics.csv") == []


def test_cli_train_errors_are_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facesphere.cli.main import app

    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\nbatch_siz: 3\ndata: {kind: shards, source: x}\n")
    result = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == 2
    assert "'batch_siz'" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "cannot read" in result.output
    result = CliRunner().invoke(app, ["train", "--config", str(path), "--set", "batch_siz"])
    assert result.exit_code == 2
