"""The seven image corruptions of the robustness suite, applied deterministically (numpy and Pillow only).

Each corruption takes one ``uint8`` image of shape ``(3, H, W)`` (already resized and cropped for
the model), a severity from 1 to 5 and a :class:`numpy.random.Generator`, and returns a corrupted
``uint8`` image of the same shape. Severity constants follow Hendrycks & Dietterich (2019), with
blur radii scaled from their 224-pixel reference to the image size; ``spatter`` and
``motion_blur`` are simplified re-implementations (no Wand or scikit-image). The generator is seeded
per (seed, corruption, severity, example index) by :func:`corrupt`, so an image gets the same
corruption whatever the batch, worker count or order.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

from .suites import CORRUPTIONS

_GAUSSIAN_NOISE = [0.08, 0.12, 0.18, 0.26, 0.38]
_IMPULSE_NOISE = [0.03, 0.06, 0.09, 0.17, 0.27]
_CONTRAST = [0.4, 0.3, 0.2, 0.1, 0.05]
_PIXELATE = [0.6, 0.5, 0.4, 0.3, 0.25]
_JPEG_QUALITY = [25, 18, 15, 10, 7]
_MOTION_BLUR = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]
# (mean, std, blur sigma, threshold, strength, mud?) of the liquid layer.
_SPATTER = [(0.65, 0.3, 4, 0.69, 0.6, False), (0.65, 0.3, 3, 0.68, 0.6, False), (0.65, 0.3, 2, 0.68, 0.5, False),
            (0.65, 0.3, 1, 0.65, 1.5, True), (0.67, 0.4, 1, 0.65, 1.5, True)]


def _float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))


def _chw(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()


def gaussian_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise."""
    x = _float(image)
    return _uint8(x + rng.normal(0.0, _GAUSSIAN_NOISE[severity - 1], size=x.shape).astype(np.float32))


def impulse_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise on a fraction of the values."""
    amount = _IMPULSE_NOISE[severity - 1]
    out = image.copy()
    u = rng.random(image.shape)
    out[u < amount / 2] = 0
    out[(u >= amount / 2) & (u < amount)] = 255
    return out


def contrast(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Pull every pixel towards the per-channel mean."""
    x = _float(image)
    means = x.mean(axis=(1, 2), keepdims=True)
    return _uint8((x - means) * _CONTRAST[severity - 1] + means)


def pixelate(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Box-downsample and upsample again."""
    pil = _pil(image)
    w, h = pil.size
    factor = _PIXELATE[severity - 1]
    small = pil.resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.Resampling.BOX)
    return _chw(small.resize((w, h), Image.Resampling.BOX))


def jpeg_compression(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Round-trip through JPEG at a low quality."""
    buffer = io.BytesIO()
    _pil(image).save(buffer, format="JPEG", quality=_JPEG_QUALITY[severity - 1])
    buffer.seek(0)
    return _chw(Image.open(buffer))


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` shifted by (dy, dx) with edge values repeated (x is C, H, W)."""
    _, h, w = x.shape
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return x[:, rows][:, :, cols]


def motion_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One-sided blur along a random direction, Gaussian-weighted by distance."""
    radius, sigma = _MOTION_BLUR[severity - 1]
    scale = image.shape[-1] / 224.0
    radius, sigma = max(1, round(radius * scale)), max(0.5, sigma * scale)
    angle = np.deg2rad(rng.uniform(-45.0, 45.0))
    x = _float(image)
    out = np.zeros_like(x)
    total = 0.0
    for k in range(radius + 1):
        weight = float(np.exp(-(k**2) / (2 * sigma**2)))
        out += weight * _shift(x, round(k * np.sin(angle)), round(k * np.cos(angle)))
        total += weight
    return _uint8(out / total)


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array, edges repeated."""
    radius = max(1, int(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    h, w = x.shape
    rows = sum(k * x[np.clip(np.arange(h) + o, 0, h - 1)] for k, o in zip(kernel, offsets))
    return sum(k * rows[:, np.clip(np.arange(w) + o, 0, w - 1)] for k, o in zip(kernel, offsets))


def spatter(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Liquid splashes: water-like highlights (severity 1-3) or mud blotches (4-5)."""
    mean, std, sigma, threshold, strength, mud = _SPATTER[severity - 1]
    x = _float(image)
    _, h, w = x.shape
    scale = w / 224.0
    liquid = _gaussian_blur(rng.normal(mean, std, size=(h, w)), max(0.5, sigma * scale))
    if mud:
        mask = _gaussian_blur((liquid >= threshold).astype(np.float64), max(0.5, scale))
        mask = np.clip(mask * strength, 0.0, 1.0).astype(np.float32)[None]
        colour = np.array([63, 42, 20], dtype=np.float32)[:, None, None] / 255.0
        return _uint8(x * (1 - mask) + colour * mask)
    layer = np.where(liquid >= threshold, liquid, 0.0)
    mask = np.clip(_gaussian_blur(layer, max(0.5, scale)) * strength, 0.0, 1.0).astype(np.float32)[None]
    colour = np.array([175, 238, 238], dtype=np.float32)[:, None, None] / 255.0
    return _uint8(x * (1 - mask) + colour * mask)


CORRUPTION_FUNCTIONS = {
    "motion_blur": motion_blur,
    "impulse_noise": impulse_noise,
    "gaussian_noise": gaussian_noise,
    "pixelate": pixelate,
    "spatter": spatter,
    "contrast": contrast,
    "jpeg_compression": jpeg_compression,
}
assert list(CORRUPTION_FUNCTIONS) == CORRUPTIONS


def corrupt(image: np.ndarray, corruption: str, severity: int, *, seed: int, index: int) -> np.ndarray:
    """Apply ``corruption`` at ``severity`` to example ``index``; the same arguments give the same bytes."""
    if corruption not in CORRUPTION_FUNCTIONS:
        raise ValueError(f"unknown corruption '{corruption}'")
    if not 1 <= severity <= 5:
        raise ValueError(f"corruption severity must be 1 to 5, got {severity}")
    rng = np.random.default_rng([seed, zlib.crc32(corruption.encode()), severity, index])
    return CORRUPTION_FUNCTIONS[corruption](image, severity, rng)
