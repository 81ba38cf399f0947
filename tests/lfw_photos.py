"""LFW photos for the tests that compare detectors and recognizers with a reference."""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

from facesphere.io.data import data_dir

# Five people whose first LFW photo shows one clear face (Tony Blair's has a second, partial one).
NAMES = ["Aaron_Eckhart", "George_W_Bush", "Colin_Powell", "Tony_Blair", "Serena_Williams"]


@cache
def lfw(name: str) -> np.ndarray:
    """The first LFW photo of `name`, RGB uint8 (250, 250, 3)."""
    return np.asarray(Image.open(data_dir() / f"lfw/images/{name}/{name}_0001.jpg").convert("RGB"))


def group_photo(names: list[str], size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """Several LFW photos pasted onto one grey canvas (a multi-face scene)."""
    canvas = np.full((*size, 3), 90, np.uint8)
    for i, name in enumerate(names):
        y, x = (i % 2) * (size[0] - 250), i * (size[1] - 250) // max(len(names) - 1, 1)
        canvas[y : y + 250, x : x + 250] = lfw(name)
    return canvas
