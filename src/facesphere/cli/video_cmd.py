"""`facesphere video`: track and identify the faces of a video, annotate it, log events."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from facesphere.cli.common import PipelineOptions, fail, pipeline_options, print_json


@pipeline_options("identify")
def video(
    source: Path = typer.Argument(..., help="Video file (anything OpenCV can decode)."),
    gallery_path: str | None = typer.Option(
        None, "--gallery", "-g", help="Gallery to name the faces with (else tracks are unnamed)."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write the annotated video: H.264 (.mp4, ...), or VP9/VP8 for a .webm name.",
    ),
    events_path: Path | None = typer.Option(
        None, "--json", help="Write track events (appear, identity, leave) as JSON lines."
    ),
    every: int = typer.Option(1, "--every", min=1, help="Detect on every n-th frame."),
    window: int = typer.Option(
        5, "--window", min=1, help="Identity smoothing window (observations of a track)."
    ),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Gallery matches kept per face."),
    max_missed: int = typer.Option(
        5, "--max-missed", min=0, help="Detection rounds a track may go unseen before it ends."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    json_summary: bool = typer.Option(False, "--json-summary", help="Print the summary as JSON."),
    *,
    pipeline: PipelineOptions,
) -> None:
    """Detect, track and identify faces in a video; write an annotated copy and an event log.

    A track is named once its smoothed gallery score reaches --threshold (default: the
    gallery model card's identification threshold for the gallery's size, at --fpir). A
    truncated video is processed as far as it can be read, with a warning (exit 0)."""
    from facesphere.gallery import Gallery
    from facesphere.io.files import check_output
    from facesphere.video.pipeline import open_video, process_video
    from facesphere.video.tracker import TrackerConfig
    from facesphere.video.writer import BROWSER_CODECS

    if out is not None:
        check_output(out, source, gallery_path)
    if events_path is not None:
        check_output(events_path, source, gallery_path, out)

    # Our one-line message says why a video is unreadable; keep FFmpeg's own log quiet.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    open_video(source)[0].release()  # fail fast on a bad video, before any model is loaded
    for target in (out, events_path):
        if target is not None:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                fail(f"{target}: cannot create its folder ({exc.strerror or exc})")
    gallery = Gallery(gallery_path) if gallery_path is not None else None
    try:
        analyzer = pipeline.build()
        summary = process_video(
            source,
            analyzer,
            gallery,
            out=out,
            events_path=events_path,
            every=every,
            window=window,
            top_k=top_k,
            threshold=pipeline.threshold,
            fpir=pipeline.fpir,
            tracker_config=TrackerConfig(max_missed=max_missed),
            progress=progress,
        )
    finally:
        if gallery is not None:
            gallery.close()
    if summary.truncated:
        typer.echo(
            f"warning: {source}: only {summary.frames} of the {summary.frames_expected} frames "
            "its container declares could be read (truncated or damaged file); those were "
            "processed",
            err=True,
        )
    if summary.codec is not None and summary.codec not in BROWSER_CODECS:
        typer.echo(
            f"warning: {out}: written as {summary.codec} (MPEG-4 Part 2), which browsers do not "
            "play: no H.264 encoder here (install imageio-ffmpeg, or write a .webm name)",
            err=True,
        )
    if json_summary:
        print_json(summary.to_dict())
        return
    data = summary.to_dict()
    read = f"{summary.frames} of {summary.frames_expected}" if summary.truncated else summary.frames
    typer.echo(
        f"{source}: {read} frame(s) ({summary.detection_frames} analysed) "
        f"{summary.width}x{summary.height} at {summary.fps:.1f} fps in {summary.seconds:.1f} s"
    )
    typer.echo(f"tracks: {summary.tracks}; events: {data['events']}")
    if gallery is not None:
        for name, tracks in summary.identities.items():
            typer.echo(f"  {name}: track(s) {', '.join(f'#{t}' for t in tracks)}")
        if summary.unnamed_tracks:
            unnamed = ", ".join(f"#{t}" for t in summary.unnamed_tracks)
            typer.echo(f"  unknown: track(s) {unnamed}")
    if out is not None:
        typer.echo(f"annotated video ({summary.codec}) -> {out}")
    if events_path is not None:
        typer.echo(f"events -> {events_path}")


def register(app: typer.Typer) -> None:
    """Add `video` to the CLI."""
    app.command()(video)
