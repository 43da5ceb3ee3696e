"""Robustness augmentations (both classes alike) and the identical re-encodings used to evaluate.

Each is a small function of a PIL image, as in CNNDetection; ``train_view`` chains them and ends
with ``fit_image``, the scan's own geometric step, so training and scanning cannot drift apart.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from deepfake_scan.preprocess import Preprocessing, fit_image
from deepfake_scan.train.config import AugmentConfig


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Re-encode as baseline JPEG at ``quality`` (4:2:0, as most encoders in the wild)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def blur(img: Image.Image, sigma: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=float(sigma)))


def rescale(img: Image.Image, factor: float, resample: int = Image.BILINEAR) -> Image.Image:
    w, h = img.size
    size = (max(8, round(w * factor)), max(8, round(h * factor)))
    return img if size == img.size else img.resize(size, resample)


def color_jitter(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(float(rng.uniform(1 - strength, 1 + strength)))
    return img


def random_crop(pixels: np.ndarray, rng: np.random.Generator, side: int) -> np.ndarray:
    """A ``side`` x ``side`` window of an HxWx3 array, without any resampling."""
    h, w = pixels.shape[:2]
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return pixels[top : top + side, left : left + side]


def train_view(
    img: Image.Image,
    rng: np.random.Generator,
    aug: AugmentConfig,
    pre: Preprocessing,
    crop: int | None = None,
) -> np.ndarray:
    """One random training view of ``img``: degraded like archives degrade images, fitted by
    the scan's ``fit_image``, then (with ``crop``) a random window at that same scale."""
    if rng.random() < aug.rescale_prob:
        resample = Image.BILINEAR if rng.random() < 0.5 else Image.BICUBIC
        img = rescale(img, float(rng.uniform(*aug.rescale)), resample)
    if rng.random() < aug.blur_prob:
        img = blur(img, rng.uniform(*aug.blur_sigma))
    if rng.random() < aug.jitter_prob:
        img = color_jitter(img, rng, aug.jitter)
    if aug.flip and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    # Last before fitting, as in the wild: whatever happened to an image, it was then saved.
    lo, hi = aug.jpeg_quality
    if rng.random() < aug.jpeg_light_share:
        lo = max(lo, min(hi, 75))
    img = jpeg(img, int(rng.integers(lo, hi + 1)))
    pixels = fit_image(img, pre)
    return random_crop(pixels, rng, crop) if crop and crop < pre.input_size else pixels


def eval_view(img: Image.Image, view: str, quality: int = 90) -> Image.Image:
    """Deterministic evaluation views, identical for both classes.

    ``as_is``: the file as it is. ``reencoded``: JPEG at ``quality``. ``jpeg50``: JPEG at 50.
    ``down<f>`` (``down0.5``, ``down0.25``, ...): shrunk by f (antialiased), then re-encoded at
    ``quality``.
    """
    if view == "as_is":
        return img
    if view == "reencoded":
        return jpeg(img, quality)
    if view == "jpeg50":
        return jpeg(img, 50)
    if view.startswith("down"):
        try:
            factor = float(view[4:])
        except ValueError:
            factor = 0.0
        if 0 < factor < 1:
            return jpeg(rescale(img, factor), quality)
    raise ValueError(f"unknown evaluation view {view!r}")


EVAL_VIEWS = ("as_is", "reencoded", "jpeg50", "down0.5")
