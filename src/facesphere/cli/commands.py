"""Collects the CLI verbs: every module `facesphere.cli.*_cmd` exposes `register(app)`."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import facesphere.cli as cli_package


def register(app: typer.Typer) -> None:
    """Import each `*_cmd` module of this package and let it add its commands to `app`."""
    for module_info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if module_info.name.endswith("_cmd"):
            module = importlib.import_module(f"facesphere.cli.{module_info.name}")
            module.register(app)
