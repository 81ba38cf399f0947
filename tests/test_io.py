"""Image input: formats, conversions, EXIF orientation and every bad-input case."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesphere.errors import ImageError
from facesphere.io import load_image
from facesphere.io.draw import MarkSizes, draw_faces, mark_sizes


def _gradient(width: int = 64, height: int = 48) -> np.ndarray:
    xs = np.linspace(0, 255, width, dtype=np.float32)
    ys = np.linspace(0, 255, height, dtype=np.float32)
    red = np.tile(xs, (height, 1))
    green = np.tile(ys[:, None], (1, width))
    blue = np.full((height, width), 90.0, np.float32)
    return np.stack([red, green, blue], axis=2).astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP", "PPM"])
def test_lossless_formats_round_trip(fmt: str) -> None:
    pixels = _gradient()
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    loaded = load_image(_encode(Image.fromarray(pixels), fmt, **kwargs))
    assert loaded.dtype == np.uint8 and loaded.shape == (48, 64, 3)
    np.testing.assert_array_equal(loaded, pixels)


def test_jpeg_and_pgm() -> None:
    pixels = _gradient()
    jpeg = load_image(_encode(Image.fromarray(pixels), "JPEG", quality=95))
    assert jpeg.shape == (48, 64, 3)
    assert np.abs(jpeg.astype(int) - pixels).mean() < 4
    grey = Image.fromarray(pixels[:, :, 0])
    pgm = load_image(_encode(grey, "PPM"))  # PIL writes mode L as binary PGM
    assert pgm.shape == (48, 64, 3)
    np.testing.assert_array_equal(pgm[:, :, 0], pgm[:, :, 2])
    np.testing.assert_array_equal(pgm[:, :, 1], pixels[:, :, 0])


def test_path_input_and_pil_input(tmp_path: Path) -> None:
    pixels = _gradient()
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(load_image(path), pixels)
    np.testing.assert_array_equal(load_image(str(path)), pixels)
    np.testing.assert_array_equal(load_image(Image.fromarray(pixels)), pixels)


def test_modes_become_rgb_uint8() -> None:
    pixels = _gradient()
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(load_image(_encode(Image.fromarray(rgba), "PNG")), pixels)
    # Fully transparent pixels become white, not black.
    clear = rgba.copy()
    clear[:, :, 3] = 0
    assert (load_image(_encode(Image.fromarray(clear), "PNG")) == 255).all()
    palette = Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    from_palette = load_image(_encode(palette, "PNG"))
    np.testing.assert_array_equal(from_palette, np.asarray(palette.convert("RGB")))
    cmyk = Image.fromarray(pixels).convert("CMYK")
    from_cmyk = load_image(_encode(cmyk, "JPEG", quality=95))
    assert from_cmyk.shape == (48, 64, 3) and np.abs(from_cmyk.astype(int) - pixels).mean() < 12
    deep = pixels[:, :, 0].astype(np.uint16) * 257
    from_16bit = load_image(_encode(Image.fromarray(deep), "PNG"))
    np.testing.assert_array_equal(from_16bit[:, :, 1], pixels[:, :, 0])


def test_numpy_arrays() -> None:
    pixels = _gradient()
    np.testing.assert_array_equal(load_image(pixels), pixels)
    grey = load_image(pixels[:, :, 0])
    np.testing.assert_array_equal(grey[:, :, 2], pixels[:, :, 0])
    np.testing.assert_array_equal(load_image(pixels[:, :, :1])[:, :, 0], pixels[:, :, 0])
    np.testing.assert_array_equal(load_image(pixels.astype(np.float32) / 255.0), pixels)
    np.testing.assert_array_equal(load_image(pixels.astype(np.uint16) * 257), pixels)
    with pytest.raises(ImageError, match="array must be"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        load_image(np.full((4, 4, 3), 2.0))
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan))
    with pytest.raises(ImageError, match="no pixels"):
        load_image(np.zeros((0, 4, 3), np.uint8))


def test_exif_orientation_is_applied() -> None:
    pixels = _gradient(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())
    loaded = load_image(data)
    assert loaded.shape == (64, 48, 3)
    expected = np.rot90(pixels, k=-1)
    assert np.abs(loaded.astype(int) - expected).mean() < 4


def test_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    big = Image.new("L", (8000, 8000))
    data = _encode(big, "PNG")
    # Keep the header, drop the pixel data: decoding would fail as truncated, so an error that
    # names the size proves the check ran on the header alone.
    header_only = data[:100]
    with pytest.raises(ImageError, match=r"over the limit of 50\.0 MP"):
        load_image(header_only)
    small = _encode(Image.fromarray(_gradient()), "PNG")
    with pytest.raises(ImageError, match="over the limit"):
        load_image(small, max_pixels=1000)
    assert load_image(small, max_pixels=64 * 48).shape == (48, 64, 3)


def test_bad_files_name_the_file_and_reason(tmp_path: Path) -> None:
    good = _encode(Image.fromarray(_gradient(200, 200)), "JPEG")
    cases = {
        "truncated.jpg": (good[: len(good) // 3], "truncated"),
        "corrupt.png": (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "not a recognised image|corrupt"),
        "empty.jpg": (b"", "empty file"),
        "text.jpg": (b"hello, I am not an image\n" * 10, "not a recognised image format"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ImageError, match=reason) as info:
            load_image(path)
        assert name in str(info.value)
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="empty input"):
        load_image(b"")
    with pytest.raises(ImageError, match="unsupported input type"):
        load_image(12345)  # type: ignore[arg-type]


@dataclass
class _DrawnFace:
    box: np.ndarray
    landmarks: np.ndarray
    score: float = 0.99
    source: str = "detector"


def _red_pixels(drawn: np.ndarray, x: float, y: float, reach: int = 12) -> int:
    patch = drawn[int(y) - reach : int(y) + reach + 1, int(x) - reach : int(x) + reach + 1]
    return int(((patch[..., 0] > 200) & (patch[..., 1] < 90) & (patch[..., 2] < 90)).sum())


def test_drawn_marks_scale_with_the_face() -> None:
    small = _DrawnFace(np.array([20.0, 60, 60, 100]), np.array([[40.0, 80]] * 5))
    large = _DrawnFace(np.array([100.0, 100, 500, 500]), np.array([[300.0, 300]] * 5))
    drawn = np.asarray(draw_faces(np.zeros((600, 600, 3), np.uint8), [small, large]))
    small_dot, large_dot = _red_pixels(drawn, 40, 80), _red_pixels(drawn, 300, 300)
    assert 0 < small_dot <= 9  # a dot of radius 1 on a 40 px face
    assert large_dot >= 8 * small_dot
    assert (mark_sizes(small.box), mark_sizes(large.box)) == (
        MarkSizes(line=1, dot=1, text=10),
        MarkSizes(line=5, dot=5, text=40),
    )
    # the large face's label is taller than the small one's
    green = (drawn[..., 1] > 200) & (drawn[..., 0] < 90)
    small_rows = np.flatnonzero(green[:58, 20:60].any(axis=1))
    large_rows = np.flatnonzero(green[:98, 100:300].any(axis=1))
    assert np.ptp(large_rows) > 2 * np.ptp(small_rows)
