"""Self-blended pseudo-fakes (after Self-Blended Images, Shiohara & Yamasaki, CVPR 2022).

A real face is blended with a slightly transformed copy of itself through a soft, irregular mask
around the face region. The result has no identity or content change, only the traces a face
swap or photo edit leaves: a blending boundary, a colour or sharpness mismatch, a small
misalignment. No landmark detector is available here, so the mask is a randomly deformed ellipse
placed where aligned face crops (LFW-style) put the face; its shape, size, softness and blend ratio
are all random so the boundary itself, not one mask shape, is what the model learns.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def _source_transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The 'other face': the same image with a colour, sharpness and geometry change."""
    out = img
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        out = enhance(out).enhance(float(rng.uniform(0.85, 1.15)))
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    else:
        out = ImageEnhance.Sharpness(out).enhance(float(rng.uniform(1.2, 2.0)))
    w, h = img.size
    scale = rng.uniform(0.95, 1.05)
    dx, dy = rng.uniform(-0.03, 0.03, size=2) * (w, h)
    # Inverse affine for PIL: scale about the centre, then shift a few pixels.
    cx, cy = w / 2, h / 2
    coeffs = (1 / scale, 0, cx - cx / scale - dx, 0, 1 / scale, cy - cy / scale - dy)
    return out.transform(img.size, Image.AFFINE, coeffs, resample=Image.BILINEAR)


def blend_mask(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A soft mask in [0, 1], HxW: a deformed ellipse around the (roughly centred) face."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = w * (0.5 + rng.uniform(-0.06, 0.06))
    cy = h * (0.52 + rng.uniform(-0.06, 0.06))
    ax, ay = w * rng.uniform(0.16, 0.3), h * rng.uniform(0.2, 0.36)
    r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    # Low-frequency noise bends the boundary so it is not always a clean ellipse.
    noise = rng.normal(0, 1, size=(4, 4)).astype(np.float32)
    noise_img = Image.fromarray(noise).resize((w, h), Image.BICUBIC)
    r = r + rng.uniform(0.0, 0.25) * np.asarray(noise_img)
    mask = (r <= 1.0).astype(np.float32)
    soft = float(rng.uniform(0.01, 0.08)) * min(w, h)
    mask_img = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(soft))
    return np.asarray(mask_img, dtype=np.float32) / 255.0


def self_blend(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A pseudo-fake made from one real image (same size and mode RGB)."""
    img = img.convert("RGB")
    source = _source_transform(img, rng)
    mask = blend_mask(img.size, rng) * float(rng.choice([1.0, rng.uniform(0.5, 1.0)]))
    tgt = np.asarray(img, dtype=np.float32)
    src = np.asarray(source, dtype=np.float32)
    out = src * mask[..., None] + tgt * (1.0 - mask[..., None])
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
