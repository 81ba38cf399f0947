"""Writing annotated videos in a codec browsers play.

`open_writer` takes the first that works, and the writer says which (`codec`):

- the ffmpeg binary of the `imageio-ffmpeg` dependency, BGR frames piped to it raw: H.264
  (libx264, yuv420p, `+faststart` so a browser starts playing before the end), or VP9
  (libvpx) for a `.webm` name; an odd width or height gets a one-pixel border (yuv420p needs
  even sides), so every frame is kept whole;
- else OpenCV's FFmpeg: H.264 (`avc1`, only where its build has an encoder; the
  opencv-python-headless wheel has none), for `.webm` VP9 or VP8 (the wheel has both, and
  rounds odd sides down);
- else OpenCV's MPEG-4 Part 2 (`mp4v`), which browsers do not play: `BROWSER_CODECS` tells
  the caller to warn.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from facesphere.errors import VideoError

BROWSER_CODECS = ("h264", "vp9", "vp8")
X264_CRF = 18  # visually lossless for drawn overlays; the default (23) blurs thin labels


class FrameWriter(Protocol):
    """Writes BGR frames of one size to a video file."""

    codec: str

    def write(self, frame: np.ndarray) -> None: ...

    def release(self) -> None: ...


class OpenCVWriter:
    """A `cv2.VideoWriter` with the codec it writes."""

    def __init__(self, writer: Any, codec: str) -> None:
        self.writer = writer
        self.codec = codec

    def write(self, frame: np.ndarray) -> None:
        """Append a BGR frame."""
        self.writer.write(frame)

    def release(self) -> None:
        """Finish the file."""
        self.writer.release()


class FfmpegWriter:
    """BGR frames piped raw into an ffmpeg process that encodes them with `encoder`."""

    def __init__(
        self, executable: str, out: Path, fps: float, size: tuple[int, int], encoder: str
    ) -> None:
        width, height = size
        self.out = out
        self.codec = {"libx264": "h264", "libvpx-vp9": "vp9"}[encoder]
        options = ["-pix_fmt", "yuv420p"]
        if encoder == "libx264":
            options += ["-preset", "veryfast", "-crf", str(X264_CRF), "-movflags", "+faststart"]
        else:
            options += ["-b:v", "0", "-crf", "31", "-deadline", "realtime", "-cpu-used", "8"]
        command = [
            executable,
            *("-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}"),
            *("-r", f"{fps:.6g}", "-i", "-", "-an"),
            # yuv420p needs even sides: an odd one gets a one-pixel border
            *("-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"),
            *("-c:v", encoder, *options),
            str(out),
        ]
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in release)
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=self._log)
        except OSError as exc:
            self._log.close()
            raise VideoError(f"{out}: cannot start ffmpeg ({exc.strerror or exc})") from exc

    def write(self, frame: np.ndarray) -> None:
        """Append a BGR frame (VideoError when ffmpeg stopped)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
        except (BrokenPipeError, ValueError) as exc:
            self.release()  # raises with ffmpeg's message when it failed
            raise VideoError(f"{self.out}: cannot write video (ffmpeg stopped early)") from exc

    def release(self) -> None:
        """Finish the file; VideoError with ffmpeg's message when it failed."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        code = self.process.wait()
        if self._log.closed:
            return
        self._log.seek(0)
        message = self._log.read().decode(errors="replace").strip().splitlines()
        self._log.close()
        if code != 0:
            reason = message[-1] if message else f"exit status {code}"
            raise VideoError(f"{self.out}: cannot write video (ffmpeg {self.codec}: {reason})")


def ffmpeg_executable() -> str | None:
    """The ffmpeg binary of `imageio-ffmpeg` (None when it is not installed)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError:  # installed without a binary for this platform
        return None


def _opencv(out: Path, fps: float, size: tuple[int, int], fourcc: str, codec: str) -> Any:
    import cv2

    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if writer.isOpened():
        return OpenCVWriter(writer, codec)
    writer.release()
    return None


def open_writer(out: str | Path, fps: float, width: int, height: int) -> FrameWriter:
    """A writer of `width` x `height` BGR frames to `out`, in the first codec of the module's
    order that this installation can encode (see its `codec`). Raises VideoError."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VideoError(f"{out}: cannot create its folder ({exc.strerror or exc})") from exc
    size = (width, height)
    ffmpeg = ffmpeg_executable()
    webm = out.suffix.lower() == ".webm"
    if ffmpeg is not None:
        return FfmpegWriter(ffmpeg, out, fps, size, "libvpx-vp9" if webm else "libx264")
    if webm:
        candidates = (("VP90", "vp9"), ("VP80", "vp8"))
    else:
        candidates = (("avc1", "h264"), ("mp4v", "mp4v"))
    for fourcc, codec in candidates:
        writer = _opencv(out, fps, size, fourcc, codec)
        if writer is not None:
            return writer
    raise VideoError(
        f"{out}: cannot write video (no writer for {' or '.join(c for _, c in candidates)})"
    )
