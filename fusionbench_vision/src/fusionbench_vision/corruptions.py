"""The seven corruptions of the robustness suite, as upstream FusionBench's generator makes them.

Upstream (``fusion_bench/dataset/image_corruption/make_corruption.py``, v0.2.33) follows Hendrycks &
Dietterich's CIFAR-10-C generator: the severity constants below are its values, and it corrupts the raw
image at its native size, before the CLIP preprocessing (:mod:`fusionbench_vision.data` does the same
here). ``pixelate`` returns a 32×32 image whatever the input size, as upstream's does. Each corruption
takes one RGB :class:`PIL.Image.Image`, a severity from 1 to 5 and a :class:`numpy.random.Generator`,
and returns an RGB image; float results become ``uint8`` by truncation (``np.uint8``), as Hendrycks'
scripts store them.

Written with numpy and Pillow (and scipy for ``spatter``) (upstream uses scikit-image, OpenCV and ImageMagick):

- ``motion_blur`` computes ImageMagick's ``MotionBlurImage`` kernel (a one-sided Gaussian of
  ``2·radius + 1`` taps along the angle, edge pixels repeated) directly;
- ``spatter`` follows upstream's steps, with an own Canny edge detector (3×3 Sobel, L1 magnitude,
  thresholds 50/150), the exact Euclidean distance transform in place of OpenCV's 5×5 chamfer
  approximation, and OpenCV's box blur, histogram equalisation and filter with their default borders.

Random draws (noise, the blur angle, the liquid layer) come from a generator seeded per (seed,
corruption, severity, example index) by :func:`corrupt`, so an image gets the same corruption whatever
the batch, worker count or order; upstream draws from NumPy's global generator, so its pixels cannot
be reproduced, only its distribution.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

from .suites import CORRUPTIONS

GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)
"""Standard deviation of the noise on [0, 1] pixels."""
IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)
"""Fraction of values set to 0 or 1 (salt and pepper, half each)."""
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
"""Factor of the distance to the per-channel mean."""
JPEG_QUALITY = (80, 65, 58, 50, 40)
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)
"""Side of the box-downsampled image, as a fraction of 32 (the image is then box-resized to 32×32)."""
PIXELATE_SIZE = 32
MOTION_BLUR = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))
"""(radius, sigma) of ImageMagick's motion blur; the angle is uniform in [-45°, 45°]."""
SPATTER = ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
           (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1))
"""(liquid mean, liquid std, liquid blur sigma, threshold, strength or mud blur sigma, mud?)."""
WATER = np.array([175, 238, 238], dtype=np.float32) / 255.0
MUD = np.array([63, 42, 20], dtype=np.float32) / 255.0


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _store(x: np.ndarray) -> Image.Image:
    """A float image in [0, 255] as upstream stores it: ``np.uint8`` (truncation) of the values."""
    return Image.fromarray(np.uint8(np.clip(x, 0, 255)))


def gaussian_noise(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """``clip(x + N(0, c²), 0, 1)`` on [0, 1] pixels."""
    x = _array(image) / 255.0
    return _store(np.clip(x + rng.normal(size=x.shape, scale=GAUSSIAN_NOISE[severity - 1]), 0, 1) * 255)


def impulse_noise(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Each value flipped with probability c, to 1 or 0 with equal odds (scikit-image's ``s&p``)."""
    x = _array(image) / 255.0
    flipped = rng.random(x.shape) < IMPULSE_NOISE[severity - 1]
    salted = rng.random(x.shape) < 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return _store(np.clip(out, 0, 1) * 255)


def contrast(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """``clip((x − m) c + m, 0, 1)`` with ``m`` the per-channel mean over the image."""
    x = _array(image) / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return _store(np.clip((x - means) * CONTRAST[severity - 1] + means, 0, 1) * 255)


def jpeg_compression(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """A round trip through JPEG at quality c (Pillow)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY[severity - 1])
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def pixelate(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Box-resize to ``int(32c)²``, then to 32×32, whatever the input size (as upstream)."""
    side = int(PIXELATE_SIZE * PIXELATE[severity - 1])
    small = image.convert("RGB").resize((side, side), Image.Resampling.BOX)
    return small.resize((PIXELATE_SIZE, PIXELATE_SIZE), Image.Resampling.BOX)


def motion_blur_kernel(radius: float, sigma: float, angle: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """ImageMagick's motion blur: tap weights and (row, column) offsets along ``angle`` degrees.

    ``2·ceil(radius) + 1`` taps ``i = 0, 1, …``, weighted ``exp(−i² / 2σ²)`` normalised to sum 1, tap ``i``
    at ``(ceil(i sin a − ½), ceil(i cos a − ½))``.
    """
    width = int(2 * np.ceil(radius) + 1)
    taps = np.arange(width, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2 * sigma**2))
    weights /= weights.sum()
    a = np.deg2rad(angle)
    offsets = [(int(np.ceil(i * np.sin(a) - 0.5)), int(np.ceil(i * np.cos(a) - 0.5))) for i in range(width)]
    return weights, offsets


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[r, c] = x[r + dy, c + dx]``, indices clamped to the edge."""
    h, w = x.shape[:2]
    rows = np.clip(np.arange(h) + dy, 0, h - 1)
    cols = np.clip(np.arange(w) + dx, 0, w - 1)
    return x[rows][:, cols]


def motion_blur(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """ImageMagick's ``MotionBlurImage`` with upstream's (radius, sigma) and a random angle in [-45°, 45°]."""
    radius, sigma = MOTION_BLUR[severity - 1]
    weights, offsets = motion_blur_kernel(radius, sigma, rng.uniform(-45, 45))
    x = _array(image).astype(np.float64)
    out = sum(weight * _shifted(x, dy, dx) for weight, (dy, dx) in zip(weights, offsets))
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))  # ImageMagick rounds to 8 bits


def _ndimage():
    """``scipy.ndimage`` (``spatter`` needs it), or one line saying so."""
    try:
        from scipy import ndimage
    except ImportError as exc:
        from fusionbench_core.errors import ConfigError

        raise ConfigError("the generated 'spatter' corruption needs scipy: pip install scipy") from exc
    return ndimage


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's ``filters.gaussian`` of a 2-D float array (edge values repeated, truncated at 4σ)."""
    return _ndimage().gaussian_filter(x, sigma=sigma, mode="nearest", truncate=4.0)


def _reflect101(x: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(x, pad, mode="reflect")


def _correlate3(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """3×3 correlation with OpenCV's default border (reflect-101), in float64."""
    p = _reflect101(x.astype(np.float64), 1)
    h, w = x.shape
    return sum(kernel[i, j] * p[i:i + h, j:j + w] for i in range(3) for j in range(3))


def box_blur3(x: np.ndarray) -> np.ndarray:
    """OpenCV's ``blur(x, (3, 3))``: the mean of each 3×3 neighbourhood (reflect-101 border), float64."""
    return _correlate3(x, np.full((3, 3), 1.0 / 9.0))


def canny(x: np.ndarray, low: float = 50, high: float = 150) -> np.ndarray:
    """Canny edges of a ``uint8`` image (255 on edges): 3×3 Sobel, ``|gx| + |gy|``, thinning, hysteresis."""
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    padded = np.pad(x.astype(np.float64), 1, mode="edge")
    h, w = x.shape
    window = lambda i, j: padded[i:i + h, j:j + w]  # noqa: E731 - a view of the neighbour at (i - 1, j - 1)
    gx = sum(sobel[i, j] * window(i, j) for i in range(3) for j in range(3))
    gy = sum(sobel.T[i, j] * window(i, j) for i in range(3) for j in range(3))
    magnitude = np.abs(gx) + np.abs(gy)
    m = np.pad(magnitude, 1)
    at = lambda dy, dx: m[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731
    ax, ay = np.abs(gx), np.abs(gy)
    tan22, tan67 = np.tan(np.deg2rad(22.5)), np.tan(np.deg2rad(67.5))
    horizontal = ay < ax * tan22
    vertical = ay > ax * tan67
    same_sign = (gx * gy) > 0
    keep = np.where(horizontal, (magnitude > at(0, -1)) & (magnitude >= at(0, 1)),
                    np.where(vertical, (magnitude > at(-1, 0)) & (magnitude >= at(1, 0)),
                             np.where(same_sign, (magnitude > at(-1, -1)) & (magnitude > at(1, 1)),
                                      (magnitude > at(-1, 1)) & (magnitude > at(1, -1)))))
    candidate = keep & (magnitude > low)
    regions, count = _ndimage().label(candidate, structure=np.ones((3, 3)))
    strong = np.unique(regions[candidate & (magnitude > high)])
    edges = np.isin(regions, strong[strong > 0]) if count else np.zeros_like(candidate)
    return np.where(edges, 255, 0).astype(np.uint8)


def equalize_hist(x: np.ndarray) -> np.ndarray:
    """OpenCV's ``equalizeHist`` of a ``uint8`` image: the cumulative histogram above the first used level,
    scaled to 255."""
    hist = np.bincount(x.ravel(), minlength=256)
    first = int(np.flatnonzero(hist)[0])
    total = x.size
    if hist[first] == total:
        return np.full_like(x, first)
    scale = 255.0 / (total - hist[first])
    lut = np.zeros(256, dtype=np.float64)
    lut[first + 1:] = np.cumsum(hist[first + 1:]) * scale
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)[x]


def spatter(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Water splashes (severity 1–3) or mud (4–5) over the image, as upstream's ``spatter``."""
    mean, std, sigma, threshold, strength, mud = SPATTER[severity - 1]
    x = _array(image).astype(np.float32) / 255.0
    liquid = _gaussian(rng.normal(size=x.shape[:2], loc=mean, scale=std), sigma)
    liquid[liquid < threshold] = 0
    if not mud:
        layer = np.clip(liquid * 255, 0, 255).astype(np.uint8)
        edges = canny(layer) > 0
        # Distance to the nearest edge, truncated at 20 (OpenCV's distanceTransform + THRESH_TRUNC).
        dist = np.minimum(_ndimage().distance_transform_edt(~edges), 20) if edges.any() else np.full(edges.shape, 20.0)
        dist = box_blur3(dist).astype(np.uint8)  # a float blur, then truncated
        dist = equalize_hist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)
        dist = np.clip(np.rint(_correlate3(dist, ker)), 0, 255).astype(np.uint8)
        dist = np.clip(np.rint(box_blur3(dist)), 0, 255).astype(np.uint8).astype(np.float32)  # a uint8 blur
        m = layer.astype(np.float32) * dist
        peak = m.max()
        m = (m / peak if peak > 0 else m) * strength
        return _store(np.clip(x + m[..., None] * WATER, 0, 1) * 255)
    m = _gaussian(np.where(liquid > threshold, 1, 0).astype(np.float32), strength)
    m[m < 0.8] = 0
    return _store(np.clip(x * (1 - m[..., None]) + MUD * m[..., None], 0, 1) * 255)


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

GENERATOR = "upstream-cifar10c-1"
"""Identifies this generator in cache keys, so images made by an earlier one are never reused."""


def corrupt(image: Image.Image, corruption: str, severity: int, *, seed: int, index: int) -> Image.Image:
    """Apply ``corruption`` at ``severity`` to raw image ``index``; the same arguments give the same pixels."""
    if corruption not in CORRUPTION_FUNCTIONS:
        raise ValueError(f"unknown corruption '{corruption}'")
    if not 1 <= severity <= 5:
        raise ValueError(f"corruption severity must be 1 to 5, got {severity}")
    rng = np.random.default_rng([seed, zlib.crc32(corruption.encode()), severity, index])
    return CORRUPTION_FUNCTIONS[corruption](image, severity, rng)
