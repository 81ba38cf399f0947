"""`python -m facesphere` (and `torchrun -m facesphere train ...`) runs the CLI."""

from facesphere.cli.main import app

app(prog_name="facesphere")
