"""Start-up stays light: importing facesphere or its CLI, and `--help`/`--version`, load no
heavy library (each checked in a fresh interpreter through `sys.modules`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from facesphere.paths import cache_dir, write_private

HEAVY = ("torch", "faiss", "fastapi", "cv2", "matplotlib")


def _imported_after(code: str) -> set[str]:
    """The HEAVY modules present in `sys.modules` after running `code` in a new interpreter."""
    probe = (
        f"import sys\n{code}\n"
        f"print('\\n' + __import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_probe_sees_an_imported_library() -> None:
    assert _imported_after("import torch") == {"torch"}


def test_import_facesphere_is_light() -> None:
    assert _imported_after("import facesphere") == set()


def test_import_cli_is_light() -> None:
    assert _imported_after("import facesphere.cli.main") == set()


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_do_not_import_torch(flag: str) -> None:
    code = (
        "from facesphere.cli.main import app\n"
        "try:\n"
        f"    app([{flag!r}], prog_name='facesphere')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code"
    )
    assert "torch" not in _imported_after(code)


def test_models_rows_come_from_their_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facesphere.cli import models_cmd

    monkeypatch.setenv("FACESPHERE_HOME", str(tmp_path))
    key = models_cmd._rows_key()
    marker = [{"name": "marker", "kind": "backbone", "params": 1}]
    write_private(
        cache_dir() / f"models-{key[:16]}.json", json.dumps({"key": key, "rows": marker}).encode()
    )
    assert models_cmd._model_rows() == marker
    stale = cache_dir() / f"models-{key[:16]}.json"
    stale.write_text(json.dumps({"key": "0" * 64, "rows": marker}))
    monkeypatch.setattr(models_cmd, "_backbone_rows", lambda: [{"name": "rebuilt"}])
    monkeypatch.setattr(models_cmd, "_head_rows", list)
    assert models_cmd._model_rows() == [{"name": "rebuilt"}]
    assert json.loads(stale.read_text())["key"] == key
