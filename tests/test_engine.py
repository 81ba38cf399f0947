"""The training engine: config loading, data paths, schedules, RNG state, optimizers, logs,
checkpoints; and the exit-2 cases of both training commands."""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facesphere.errors import ConfigError, TrainingError
from facesphere.train.engine import (
    CheckpointStore,
    CsvLog,
    LRSchedule,
    apply_overrides,
    build_config,
    build_optimizer,
    data_path,
    decay_groups,
    load_checkpoint,
    read_yaml,
    rng_state,
    seed_everything,
    set_rng_state,
)

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Section:
    size: int = 3
    source: str = data_path()


@dataclass
class Example:
    lr: float = 0.1
    name: str = "x"
    limit: int | None = None
    flag: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    extra: dict[str, float] = field(default_factory=dict)
    output: str = "out"
    section: Section = field(default_factory=Section)


def _load(raw: dict, overrides: list[str] | None = None) -> Example:
    return build_config(Example, apply_overrides(raw, overrides or []))


# -- configs ------------------------------------------------------------------------------------


def test_values_sections_and_overrides() -> None:
    raw = {"lr": 1, "section": {"size": 5}}
    config = _load(raw, ["section.size=7", "limit=4", "scales=[2, 3.5]", "extra.s=16", "name="])
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.section.size == 7 and config.limit == 4 and config.name == ""
    assert config.scales == [2.0, 3.5] and config.extra == {"s": 16}
    assert raw == {"lr": 1, "section": {"size": 5}}  # the caller's mapping is left alone
    assert _load({}).section.size == 3
    assert _load({}, ["lr=1e-3"]).lr == 0.001  # YAML reads this as a string; it is a number


@pytest.mark.parametrize(
    ("raw", "overrides", "key"),
    [
        ({"lr2": 1.0}, [], "lr2"),
        ({"section": {"colour": 1}}, [], "section.colour"),
        ({}, ["section.nope=1"], "section.nope"),
        ({"lr": "fast"}, [], "lr"),
        ({"limit": 2.5}, [], "limit"),
        ({"flag": 1}, [], "flag"),
        ({"name": 3}, [], "name"),
        ({"scales": []}, [], "scales"),
        ({"scales": [1.0, "big"]}, [], "scales[1]"),
        ({"section": 4}, [], "section"),
        ({}, ["lr=.inf"], "lr"),
        ({}, ["lr=-.inf"], "lr"),
        ({}, ["lr=.nan"], "lr"),
        ({}, ["lr=nan"], "lr"),
        ({}, ["lr=1e400"], "lr"),
        ({}, ["scales=[1.0, .inf]"], "scales[1]"),
        ({}, ["extra.s=.nan"], "extra.s"),
        ({"name": "x"}, ["name.part=1"], "name.part"),
        ({}, ["name.part=1"], "name"),
        ({}, ["lr=[unclosed"], "lr"),
        ({}, ["lr"], "lr"),
    ],
)
def test_config_errors_name_the_key(raw: dict, overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(raw, overrides)
    assert info.value.key == key
    assert repr(key) in str(info.value)
    assert "\n" not in str(info.value)


def test_data_paths_resolve_through_facesphere_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facesphere.train.config import load_config as load_train
    from facesphere.train.thunder.config import config_from_dict as detector_config
    from facesphere.train.thunder.config import load_config as load_detector

    monkeypatch.setenv("FACESPHERE_DATA", str(tmp_path))
    config = _load({"output": "data:x"}, ["section.source=data:celeba299"])
    assert config.section.source == str(tmp_path / "celeba299")
    assert config.output == "data:x"  # only fields declared as data paths are resolved
    assert _load({"section": {"source": "rel/dir"}}).section.source == "rel/dir"

    smoke = load_train(REPO / "configs" / "smoke.yaml")
    assert smoke.data.source == str(tmp_path / "celeba299")
    thunder = load_detector(REPO / "configs" / "thunder.yaml")
    assert thunder.data_root == str(tmp_path)
    assert detector_config({}).data_root == str(tmp_path)
    other = tmp_path / "elsewhere"
    monkeypatch.setenv("FACESPHERE_DATA", str(other))
    assert load_train(REPO / "configs" / "smoke.yaml").data.source == str(other / "celeba299")


def test_config_files_are_refused_in_one_line(tmp_path: Path) -> None:
    cases = {
        "latin1.yaml": "lr: 0.1\nname: caf\xe9\n".encode("latin-1"),
        "broken.yaml": b"lr: [0.1\n",
        "list.yaml": b"- 1\n- 2\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    messages = {}
    for name in [*cases, "missing.yaml"]:
        with pytest.raises(ConfigError) as info:
            read_yaml(tmp_path / name)
        messages[name] = str(info.value)
        assert "\n" not in messages[name] and name in messages[name]
    assert "UTF-8" in messages["latin1.yaml"]
    assert "not valid YAML" in messages["broken.yaml"]
    assert "mapping" in messages["list.yaml"]
    assert "cannot read" in messages["missing.yaml"]
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}


# -- schedules ----------------------------------------------------------------------------------


def test_schedule_values() -> None:
    cosine = LRSchedule(total=10, warmup=2, shape="cosine", floor=0.1)
    assert cosine.factor(0) == pytest.approx(0.5)
    assert cosine.factor(1) == pytest.approx(1.0)
    assert cosine.factor(2) == pytest.approx(1.0)
    assert cosine.factor(6) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine.factor(4) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine.factor(10) == pytest.approx(0.1)
    assert cosine.factor(50) == pytest.approx(0.1)
    poly = LRSchedule(total=10, shape="poly", poly_power=2.0)
    assert poly.factor(5) == pytest.approx(0.25)
    assert poly.factor(10) == pytest.approx(0.0)
    assert LRSchedule(total=10, warmup=4, shape="constant").factor(1) == pytest.approx(0.5)
    assert LRSchedule(total=10, shape="constant").factor(9) == 1.0


def test_detector_schedule_is_warmup_then_cosine_to_min_lr() -> None:
    from facesphere.train.thunder.config import config_from_dict
    from facesphere.train.thunder.train import lr_schedule

    schedule = lr_schedule(config_from_dict({"steps": 100, "warmup_steps": 10, "min_lr": 2e-4}))
    assert schedule.factor(4) == pytest.approx(0.5)
    assert schedule.factor(55) == pytest.approx(0.1 + 0.9 * 0.5)  # min_lr / lr = 0.1
    assert schedule.factor(100) == pytest.approx(0.1)


def test_scheduler_steps_the_optimizer_and_resumes() -> None:
    schedule = LRSchedule(total=8, warmup=2, floor=0.0)
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer("sgd", [param], lr=0.5, weight_decay=0.0)
    scheduler = schedule.scheduler(optimizer)
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.5 * schedule.factor(s) for s in range(5)])
    state = scheduler.state_dict()
    again = build_optimizer("sgd", [param], lr=0.5, weight_decay=0.0)
    restored = schedule.scheduler(again)
    restored.load_state_dict(state)
    assert again.param_groups[0]["lr"] == pytest.approx(0.5 * schedule.factor(5))


# -- randomness, optimizers ---------------------------------------------------------------------


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.random()), float(torch.rand(()))


def test_rng_state_round_trip() -> None:
    seed_everything(5)
    first = _draws()
    seed_everything(5)
    assert _draws() == first
    state = rng_state()
    after = _draws()
    assert after != first
    set_rng_state(state)
    assert _draws() == after
    seed_everything(6)
    assert _draws() != first


def test_optimizers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    groups = decay_groups(model, 1e-3)
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert [g["weight_decay"] for g in groups] == [1e-3, 0.0]
    sgd = build_optimizer("sgd", groups, lr=0.1, weight_decay=5e-4, momentum=0.8, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-3, 0.0]
    adamw = build_optimizer("adamw", list(model.parameters()), lr=0.1, weight_decay=0.02)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.02
    with pytest.raises(ConfigError, match="'optimizer'"):
        build_optimizer("rmsprop", list(model.parameters()), lr=0.1, weight_decay=0.0)


# -- logs and checkpoints -----------------------------------------------------------------------


def test_csv_log_continues_after_the_resumed_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    log = CsvLog(path, ["step", "loss"])
    for step in (5, 10, 15):
        log.append({"step": step, "loss": step / 10})
    log = CsvLog(path, ["step", "loss"], start_step=10)
    log.append({"step": 15, "loss": 9.0})
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["step"], r["loss"]) for r in rows] == [("5", "0.5"), ("10", "1.0"), ("15", "9.0")]
    CsvLog(path, ["step", "loss"])
    assert path.read_text().strip() == "step,loss"


def test_checkpoint_store(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    assert store.latest() is None and store.resume_path("auto") is None
    assert store.resume_path(None) is None
    for step in (10, 20, 30):
        store.save(step, {"format": "test", "step": step})
    assert sorted(p.name for p in store.root.glob("step-*")) == ["step-00000020", "step-00000030"]
    assert not list(store.root.rglob("*.tmp"))
    latest = store.resume_path("auto")
    assert latest == store.folder(30)
    assert load_checkpoint(latest, "test")["step"] == 30
    assert load_checkpoint(latest / "rank-0.pt", "test")["step"] == 30
    (store.root / "latest").unlink()
    assert store.latest() == store.folder(30)
    with pytest.raises(TrainingError, match="not a other"):
        load_checkpoint(latest, "other")
    with pytest.raises(TrainingError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt", "test")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(TrainingError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", "test")


# -- the commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "train-detector"])
@pytest.mark.parametrize("case", ["infinite lr", "nan lr", "latin-1 file", "unknown key"])
def test_training_commands_refuse_bad_configs(command: str, case: str, tmp_path: Path) -> None:
    from facesphere.cli.main import app

    path = tmp_path / "config.yaml"
    body = "steps: 5\n" + ("data: {kind: shards, source: x}\n" if command == "train" else "")
    overrides: list[str] = []
    expected = "'lr'"
    if case == "infinite lr":
        overrides = ["--set", "lr=.inf"]
    elif case == "nan lr":
        overrides = ["--set", "lr=.nan"]
    elif case == "latin-1 file":
        body += "# r\xe9glage\n"
        expected = "UTF-8"
    else:
        overrides = ["--set", "stepz=3"]
        expected = "'stepz'"
    path.write_bytes(body.encode("latin-1"))
    result = CliRunner().invoke(app, [command, "--config", str(path), *overrides])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0]
