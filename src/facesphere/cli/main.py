"""The `facesphere` command line: one verb per command module."""

from __future__ import annotations

import typer

from facesphere.cli.common import FacesphereTyper

app = FacesphereTyper(
    name="facesphere",
    help="Face detection, alignment, embedding, verification and identification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from facesphere import __version__

        typer.echo(f"facesphere {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Face detection, alignment, embedding, verification and identification."""


def _register_commands() -> None:
    from facesphere.cli import commands

    commands.register(app)


_register_commands()
