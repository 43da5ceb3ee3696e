"""Laundering: what archives do to images (re-compression, resizing, blur, noise, crops,
screenshots), applied to every image of both classes with the same parameters.

A laundering function never sees the label. Its only per-image input is the seed of the noise
view, taken from the image's content hash, so a rerun, and an evaluation of another model on the
same files, launders every image exactly as before. The re-encoding, resizing and blur steps are
the training augmentations' own functions (``deepfake_scan.train.augment``) at fixed parameters.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deepfake_scan.decode import DEFAULT_MAX_PIXELS, Decoded, decode, open_image
from deepfake_scan.preprocess import Preprocessing, fit_image
from deepfake_scan.train.augment import blur, jpeg, rescale

CLEAN = "none"  # the image as the scan sees it; always the first view


@dataclass(frozen=True)
class Laundering:
    name: str
    description: str
    fn: Callable[[Image.Image, np.random.Generator], Image.Image]


def _noise(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    a = a + rng.normal(0.0, sigma, a.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")


def _crop_resize(img: Image.Image, keep: float) -> Image.Image:
    """A centred crop keeping ``keep`` of each side, scaled back up to the original size: the
    reframing a re-post does, which also resamples every pixel."""
    w, h = img.size
    cw, ch = max(8, round(w * keep)), max(8, round(h * keep))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)


def _png(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def _screenshot(img: Image.Image) -> Image.Image:
    """Shown at 90 % zoom (bicubic, as browsers scale) and captured losslessly as PNG. A PNG
    round trip alone would change no pixel of a decoded image; the display resampling does."""
    return _png(rescale(img, 0.9, Image.BICUBIC))


LAUNDERINGS: dict[str, Laundering] = {
    lau.name: lau
    for lau in (
        Laundering(CLEAN, "files as they are", lambda img, rng: img),
        Laundering("jpeg90", "JPEG re-encoded at q90", lambda img, rng: jpeg(img, 90)),
        Laundering("jpeg70", "JPEG re-encoded at q70", lambda img, rng: jpeg(img, 70)),
        Laundering("jpeg50", "JPEG re-encoded at q50", lambda img, rng: jpeg(img, 50)),
        Laundering("down0.5", "downscaled 0.5x (bilinear)", lambda img, rng: rescale(img, 0.5)),
        Laundering("down0.25", "downscaled 0.25x (bilinear)", lambda img, rng: rescale(img, 0.25)),
        Laundering("blur1", "Gaussian blur, sigma 1 px", lambda img, rng: blur(img, 1.0)),
        Laundering("noise4", "Gaussian noise, sd 4/255", lambda img, rng: _noise(img, rng, 4.0)),
        Laundering(
            "crop0.8", "centre crop 80 %, resized back", lambda img, rng: _crop_resize(img, 0.8)
        ),
        Laundering(
            "screenshot", "90 % zoom (bicubic), PNG round trip", lambda img, rng: _screenshot(img)
        ),
    )
}
DEFAULT_VIEWS = tuple(LAUNDERINGS)


def check_views(views: Sequence[str]) -> tuple[str, ...]:
    """Known view names, in the given order, with the clean view first (the attacks and the
    robustness deltas are measured from it)."""
    unknown = [v for v in views if v not in LAUNDERINGS]
    if unknown:
        raise ValueError(f"unknown laundering {unknown}; known: {', '.join(LAUNDERINGS)}")
    return (CLEAN, *dict.fromkeys(v for v in views if v != CLEAN))


def seed_of(sha256: str) -> int:
    """The noise seed of an image: from its bytes' hash, never from its label or name."""
    return int(sha256[:16], 16) if sha256 else 0


def launder(img: Image.Image, view: str, seed: int) -> Image.Image:
    """``img`` after the laundering ``view``, deterministic for a given ``seed``."""
    return LAUNDERINGS[view].fn(img, np.random.default_rng(seed))


def launder_record(
    data: bytes | None,
    pre: Preprocessing,
    views: Sequence[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[Decoded, np.ndarray | None, np.ndarray | None]:
    """Decode one record and fit every view at the model's input: (decoded, uint8 V x H x W x 3,
    each view's (width, height) before the fit, V x 2).

    The clean view is the scan's own ``decode`` (JPEG draft decoding included), so it scores
    exactly what a scan would. The laundered views start from a full-size decode, because that
    is the picture a re-encoder or a resizer in the wild works on.
    """
    d = decode(data, pre, max_pixels)
    if d.error is not None or d.pixels is None:
        return d, None, None
    out = np.zeros((len(views), pre.input_size, pre.input_size, 3), dtype=np.uint8)
    sizes = np.zeros((len(views), 2), dtype=np.int32)
    out[0], sizes[0] = d.pixels, (d.width, d.height)
    if len(views) > 1:
        try:
            img, _, _ = open_image(data, max_pixels=max_pixels)
            for i, view in enumerate(views[1:], start=1):
                laundered = launder(img, view, seed_of(d.sha256 or ""))
                out[i], sizes[i] = fit_image(laundered, pre), laundered.size
        except Exception as e:  # a codec failing on one view must not lose the record silently
            d.error = f"launder_error: {type(e).__name__}: {str(e)[:200]}"
            return d, None, None
    return d, out, sizes
