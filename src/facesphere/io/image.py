"""Image loading from a path, bytes, a numpy array or a PIL image, to RGB uint8."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facesphere.errors import ImageError
from facesphere.io.files import file_problem

DEFAULT_MAX_PIXELS = 50_000_000

ImageInput = Union[str, os.PathLike, bytes, bytearray, np.ndarray, Image.Image]  # noqa: UP007


def describe_source(src: object) -> str:
    """A short human name for an image input, for error messages."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, (bytes, bytearray)):
        return f"<{len(src)} bytes>"
    if isinstance(src, np.ndarray):
        return f"<array {src.shape} {src.dtype}>"
    if isinstance(src, Image.Image):
        return f"<PIL image {src.mode} {src.size[0]}x{src.size[1]}>"
    return f"<{type(src).__name__}>"


def load_image(src: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load `src` as an RGB uint8 array of shape (H, W, 3).

    Accepts a file path, encoded bytes, a numpy array (H,W), (H,W,1), (H,W,3) or (H,W,4) of
    uint8/uint16/float in [0,1], or a PIL image. EXIF orientation is applied; greyscale, RGBA,
    palette, CMYK and 16-bit images become RGB uint8. Images over `max_pixels` are refused
    from their header, before decoding. Raises `ImageError` on any unusable input.
    """
    name = describe_source(src)
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src, name, max_pixels)
    if isinstance(src, Image.Image):
        _check_size(src.size, name, max_pixels)
        return _pil_to_rgb(src, name)
    if isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise ImageError(name, "empty input")
        return _decode(io.BytesIO(bytes(src)), name, max_pixels)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        problem = file_problem(path)
        if problem is not None:
            raise ImageError(name, problem)
        if path.stat().st_size == 0:
            raise ImageError(name, "empty file")
        try:
            with path.open("rb") as handle:
                return _decode(io.BytesIO(handle.read()), name, max_pixels)
        except OSError as exc:
            raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from exc
    raise ImageError(name, "unsupported input type; give a path, bytes, numpy array or PIL image")


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(name, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            name,
            f"image is {width}x{height} = {width * height / 1e6:.1f} MP, over the limit of "
            f"{max_pixels / 1e6:.1f} MP",
        )


_limit_lock = threading.Lock()
_decoding = 0  # decodes running, in every thread
_pillow_limit: int | None = None  # Pillow's limit while they run


@contextlib.contextmanager
def _without_pillow_limit() -> Iterator[None]:
    """Pillow's own decompression-bomb limit off while any thread decodes here (counted, so
    overlapping decodes restore it once): `_check_size` applies the project's limit instead,
    with its wording, and a `max_pixels` above Pillow's limit is honoured."""
    global _decoding, _pillow_limit
    with _limit_lock:
        if _decoding == 0:
            _pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        _decoding += 1
    try:
        yield
    finally:
        with _limit_lock:
            _decoding -= 1
            if _decoding == 0:
                Image.MAX_IMAGE_PIXELS = _pillow_limit


def _decode(stream: io.BytesIO, name: str, max_pixels: int) -> np.ndarray:
    try:
        with _without_pillow_limit():
            image = Image.open(stream)
            # The header is read here; pixel data only on load(), after the size check.
            _check_size(image.size, name, max_pixels)
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(name, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, OSError):
            raise ImageError(name, f"corrupt or truncated image ({reason})") from exc
        raise ImageError(name, f"cannot decode image ({reason})") from exc
    return _pil_to_rgb(image, name)


def _pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    # A damaged EXIF block must not make the pixels unusable.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    try:
        rgb = image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ImageError(name, f"cannot convert {mode} image to RGB ({exc})") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _array_to_rgb(array: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(name, "array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    _check_size((array.shape[1], array.shape[0]), name, max_pixels)
    if array.dtype == np.uint8:
        data = array
    elif array.dtype == np.uint16:
        data = (array.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError(name, "array holds NaN or infinite values")
        if array.min() < 0.0 or array.max() > 1.0:
            raise ImageError(name, "float arrays must hold values in [0, 1]")
        data = (array * 255.0 + 0.5).astype(np.uint8)
    elif array.dtype == np.bool_:
        data = array.astype(np.uint8) * 255
    else:
        raise ImageError(name, f"unsupported array dtype {array.dtype}")
    if data.ndim == 2:
        data = np.repeat(data[:, :, None], 3, axis=2)
    elif data.shape[2] == 4:
        alpha = data[:, :, 3:4].astype(np.float32) / 255.0
        data = (data[:, :, :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(data)


def jpeg_thumbnail(pixels: np.ndarray, side: int = 112, quality: int = 85) -> bytes:
    """An RGB uint8 image as a `side` x `side` JPEG (resized, not cropped)."""
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).convert("RGB")
    buffer = io.BytesIO()
    image.resize((side, side), Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
