"""Start-up stays light: importing facesphere or its CLI, and `--help`/`--version`, load no
heavy library (each checked in a fresh interpreter through `sys.modules`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
