"""`facesphere demo`: the pipeline end to end on sample portraits that a plain install has."""

from __future__ import annotations

from pathlib import Path

import typer

from facesphere.cli.common import EXIT_FAILURE, print_json


def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Folder for the drawn images."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Detect and draw faces on two public-domain portraits, then verify them under a flip,
    a rescale and a rotation (same person) and against each other (different people)."""
    from facesphere.demo import run_demo
    from facesphere.pipeline.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer()
    checks, counts = run_demo(out, analyzer)
    ok = all(c.passed for c in checks) and all(n >= 1 for n in counts.values())
    if json_output:
        print_json(
            {
                "faces": counts,
                "threshold": analyzer.threshold,
                "checks": [
                    {
                        "name": c.name,
                        "expected_same": c.expected_same,
                        "same": c.same,
                        "similarity": round(c.similarity, 4),
                        "passed": c.passed,
                    }
                    for c in checks
                ],
                "passed": ok,
                "drawn": sorted(str(p) for p in out.glob("*_faces.jpg")),
            }
        )
    else:
        for name, count in counts.items():
            typer.echo(f"{name}: {count} face(s) -> {out / (name + '_faces.jpg')}")
        typer.echo(f"threshold {analyzer.threshold:.4f}")
        for check in checks:
            verdict = "same" if check.same else "different"
            mark = "ok  " if check.passed else "FAIL"
            typer.echo(f"  {mark} {check.name:<40} similarity {check.similarity:.4f} -> {verdict}")
        typer.echo("demo passed" if ok else "demo FAILED")
    if not ok:
        raise typer.Exit(EXIT_FAILURE)


def register(app: typer.Typer) -> None:
    """Add `demo` to the CLI."""
    app.command()(demo)
