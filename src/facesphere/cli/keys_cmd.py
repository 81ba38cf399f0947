"""`facesphere keys`: create, list and revoke the REST service's API keys."""

from __future__ import annotations

from enum import Enum

import typer

from facesphere.cli.common import FacesphereTyper, print_json

# Errors reach the user through FacesphereTyper: exit 2 for a refused request (a taken name, an
# unknown key), 1 when the key file itself cannot be used.
keys_app = FacesphereTyper(
    name="keys",
    help="API keys of the REST service (stored hashed in $FACESPHERE_HOME/keys.sqlite).",
    no_args_is_help=True,
)


class Scope(str, Enum):
    read = "read"
    write = "write"


@keys_app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="A name for the key (unique among active keys)."),
    scope: Scope = typer.Option(
        Scope.read, "--scope", help="read: analyse and query; write: also change galleries."
    ),
    gallery: str | None = typer.Option(
        None, "--gallery", help="Limit the key to this gallery (default: all galleries)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the new key as JSON."),
) -> None:
    """Make a key and print it once: it cannot be shown again."""
    from facesphere.serve.keys import KeyStore

    key, secret = KeyStore().create(name, scope.value, gallery)
    if json_output:
        print_json({"key": secret, **key.to_dict()})
        return
    where = f"gallery {key.gallery}" if key.gallery else "all galleries"
    typer.echo(f"{secret}\n(id {key.id}, {key.scope} on {where}; shown only once, keep it safe)")


@keys_app.command("list")
def list_keys(
    include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
    json_output: bool = typer.Option(False, "--json", help="Print the keys as JSON."),
) -> None:
    """The keys, without their secrets."""
    from facesphere.serve.keys import KeyStore

    keys = KeyStore().list_keys(include_revoked=include_revoked)
    if json_output:
        print_json([k.to_dict() for k in keys])
        return
    if not keys:
        typer.echo("no keys (make one with `facesphere keys create`)")
        return
    typer.echo(f"{'id':<14}{'name':<24}{'scope':<7}{'gallery':<20}{'created':<27}revoked")
    for k in keys:
        typer.echo(
            f"{k.id:<14}{k.name:<24}{k.scope:<7}{k.gallery or '*':<20}{k.created_at:<27}"
            f"{k.revoked_at or '-'}"
        )


@keys_app.command("revoke")
def revoke(
    id_or_name: str = typer.Argument(..., help="The key's id or name."),
    json_output: bool = typer.Option(False, "--json", help="Print the revoked key as JSON."),
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from facesphere.serve.keys import KeyStore

    key = KeyStore().revoke(id_or_name)
    if json_output:
        print_json(key.to_dict())
    else:
        typer.echo(f"revoked key {key.id} ({key.name})")


def register(app: typer.Typer) -> None:
    """Add the `keys` command group to the CLI."""
    app.add_typer(keys_app, name="keys")
