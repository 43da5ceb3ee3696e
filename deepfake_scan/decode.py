"""Bytes -> RGB image, recognising the format from the bytes, never from the name.

Every failure is a ``DecodeError`` with a short code, so the scan can turn it into a verdict row
(``error = "code: message"``) and carry on.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepfake_scan.errors import first_line
from deepfake_scan.faces import Face, FaceGeometry, crop_face, find_faces
from deepfake_scan.preprocess import Preprocessing, fit_image

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels; a decompression bomb is refused before decode


class DecodeError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class Decoded:
    sha256: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    pixels: np.ndarray | None = None  # uint8 HxWx3 at the model's input size
    error: str | None = None
    faces: list[Face] | None = None  # with a face geometry: the faces found, largest first
    face_pixels: np.ndarray | None = None  # uint8 KxHxWx3: each face's crop at the input size
    face_sides: list[int] | None = None  # each crop's side in decoded pixels, before the fit


def open_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None
) -> tuple[Image.Image, str, tuple[int, int]]:
    """Decode ``data`` to an RGB image. Returns (image, format, original (width, height)).

    ``draft``: for JPEGs, let libjpeg decode at a reduced scale that still covers ``draft`` pixels
    on the shorter side (4-6x less CPU than a full decode of a large photo).
    """
    if not data:
        raise DecodeError("empty_file", "0 bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        fmt = _magic_format(data)
        if fmt:
            raise DecodeError("decode_error", f"corrupt {fmt} data: header unreadable") from None
        raise DecodeError("not_an_image", "bytes are not a recognised image format") from None
    except Exception as e:  # Pillow raises many kinds for hostile headers
        raise DecodeError("decode_error", _msg(e)) from None
    fmt = img.format or "UNKNOWN"
    width, height = img.size
    if width * height > max_pixels:
        raise DecodeError(
            "too_large", f"{width}x{height} pixels exceeds the limit of {max_pixels} pixels"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if draft and fmt == "JPEG":
                # EXIF rotation may swap the sides, so ask for the shorter side in both directions.
                img.draft("RGB", (draft, draft))
            img.load()
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF rotation by 90 or 270 degrees
                width, height = height, width
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError("decode_error", _msg(e)) from None
    return img, fmt, (width, height)


_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _magic_format(data: bytes) -> str | None:
    """The format an unreadable file claims by its first bytes (to say corrupt, not alien)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC.items() if data.startswith(magic)), None)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping at 255.
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _msg(e: Exception) -> str:
    return first_line(e)[:300]


def decode(
    data: bytes | None,
    pre: Preprocessing,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    faces: FaceGeometry | None = None,
) -> Decoded:
    """Decode and fit one image for the model; with ``faces``, also find and crop its faces.
    Never raises for bad data."""
    if data is None:
        return Decoded(sha256=None, error="read_error: no bytes")
    sha = hashlib.sha256(data).hexdigest()
    draft = pre.input_size if faces is None else max(pre.input_size, faces.search_size)
    try:
        img, fmt, (w, h) = open_image(data, max_pixels=max_pixels, draft=draft)
        out = Decoded(sha256=sha, width=w, height=h, format=fmt, pixels=fit_image(img, pre))
        if faces is not None:
            found = find_faces(img, faces)
            cropped = [crop_face(img, f, faces) for f in found]
            crops = [fit_image(c, pre) for c in cropped]
            out.face_sides = [c.width for c in cropped]  # square crops
            # Boxes in the original image's pixels (the decode may have been reduced).
            sx, sy = w / img.width, h / img.height
            out.faces = [
                Face(
                    round(f.x * sx), round(f.y * sy), round(f.w * sx), round(f.h * sy), f.confidence
                )
                for f in found
            ]
            size = pre.input_size
            out.face_pixels = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    except DecodeError as e:
        return Decoded(sha256=sha if data else None, error=str(e))
    except Exception as e:  # a bug in a codec must not stop a scan either
        return Decoded(sha256=sha, error=f"decode_error: {_msg(e)}")
    return out
