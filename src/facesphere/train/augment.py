"""Face-crop augmentation in numpy/torch (no torchvision).

Every random choice comes from the ``numpy.random.Generator`` passed in, which the data
pipeline seeds from (run seed, epoch, position in the epoch): the same sample gets the same
augmentation whatever the number of workers, and a resumed run replays it exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from facesphere.cards import TRAINING_NORMALIZATION
from facesphere.train.config import AugmentConfig


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of float HWC to (height, width)."""
    if image.shape[:2] == size:
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    out = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).numpy()


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(3 * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    out = sum(kernel[i] * padded[i : i + image.shape[0]] for i in range(len(kernel)))
    padded = np.pad(out, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    return sum(kernel[i] * padded[:, i : i + image.shape[1]] for i in range(len(kernel)))


def _gray(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def augment(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Augment an RGB uint8/float HWC crop; returns float32 HWC in 0..255, same size."""
    out = image.astype(np.float32)
    height, width = out.shape[:2]
    if config.random_crop and rng.random() < config.random_crop:
        area = rng.uniform(config.crop_scale, 1.0) * height * width
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        h = round(float(min(height, np.sqrt(area / ratio))))
        w = round(float(min(width, np.sqrt(area * ratio))))
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        out = resize(out[top : top + h, left : left + w], (height, width))
    if config.color_jitter and rng.random() < config.color_jitter:
        s = config.color_strength
        brightness, contrast, saturation = rng.uniform(1 - s, 1 + s, size=3)
        out = out * brightness
        out = (out - _gray(out).mean()) * contrast + _gray(out).mean()
        grey = _gray(out)[..., None]
        out = (out - grey) * saturation + grey
    if config.blur and rng.random() < config.blur:
        out = _gaussian_blur(out, float(rng.uniform(0.5, 1.5)))
    if config.low_res and rng.random() < config.low_res:
        side = int(rng.integers(16, max(17, min(height, width) // 2)))
        small = resize(out, (side, max(1, side * width // height)))
        out = resize(small, (height, width))
    if config.grayscale and rng.random() < config.grayscale:
        out = np.repeat(_gray(out)[..., None], 3, axis=2)
    if config.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out, 0.0, 255.0).astype(np.float32, copy=False)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HWC 0..255 image -> normalised float32 CHW tensor."""
    array = TRAINING_NORMALIZATION.apply(image)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
