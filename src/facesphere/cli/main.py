"""The `facesphere` command line: one verb per command module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="facesphere",
    help="Face detection, alignment, embedding, verification and identification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    from facesphere.cli import commands

    commands.register(app)


_register_commands()
