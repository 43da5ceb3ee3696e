"""Bytes -> model input: each bad kind becomes a coded error, each odd-but-valid kind is scored."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deepfake_scan.decode import decode, open_image
from deepfake_scan.preprocess import Preprocessing, fit_image
from tests.fixtures import image_bytes

PRE = Preprocessing(input_size=32)


def error_code(data: bytes | None, **kw) -> str:
    d = decode(data, PRE, **kw)
    assert d.pixels is None and d.error
    return d.error.split(":", 1)[0]


def test_valid_jpeg_is_fitted_to_the_model_input():
    d = decode(image_bytes("JPEG", (120, 80)), PRE)
    assert d.error is None
    assert (d.width, d.height, d.format) == (120, 80, "JPEG")
    assert d.pixels.shape == (32, 32, 3) and d.pixels.dtype == np.uint8
    assert len(d.sha256) == 64


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"hello, this is a text file\n", "not_an_image"),
        (b"%PDF-1.4\n" + bytes(200), "not_an_image"),
        (image_bytes("JPEG", (200, 200))[:300], "decode_error"),  # truncated
        (image_bytes("PNG", (200, 200))[:200], "decode_error"),  # truncated PNG
        # a JPEG whose header is followed by zeros
        (image_bytes("JPEG", (64, 64))[:160] + bytes(2000), "decode_error"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "decode_error"),  # PNG signature, no chunks
    ],
    ids=["empty", "text", "pdf", "truncated-jpeg", "truncated-png", "corrupt-jpeg", "corrupt-png"],
)
def test_bad_bytes_become_coded_errors(data, code):
    assert error_code(data) == code


def test_decompression_bomb_is_refused_before_decoding():
    data = image_bytes("PNG", (400, 300))
    assert error_code(data, max_pixels=100_000) == "too_large"
    assert decode(data, PRE, max_pixels=120_000).error is None


def test_errors_keep_the_hash_of_what_was_read():
    data = b"not an image at all"
    d = decode(data, PRE)
    assert d.sha256 is not None and d.error.startswith("not_an_image: ")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _rgb(size=(40, 30)) -> Image.Image:
    return Image.open(io.BytesIO(image_bytes("PNG", size)))


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "blue", "green")]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def _sixteen_bit_png() -> bytes:
    arr = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    return _save(Image.fromarray(arr), "PNG")


@pytest.mark.parametrize(
    "data",
    [
        _save(_rgb().convert("CMYK"), "JPEG"),
        _save(_rgb().convert("L"), "PNG"),
        _save(_rgb().convert("P"), "PNG"),
        _save(_rgb().convert("RGBA"), "PNG"),
        _save(_rgb().convert("LA"), "PNG"),
        _sixteen_bit_png(),
        _animated_gif(),
        _save(_rgb((300, 200)), "JPEG", progressive=True),
        _save(_rgb((1, 1)), "PNG"),
        _save(_rgb(), "WEBP"),
        _save(_rgb(), "BMP"),
        _save(_rgb(), "TIFF"),
    ],
    ids=[
        "cmyk",
        "grey",
        "palette",
        "rgba",
        "la",
        "16bit",
        "animated",
        "progressive",
        "tiny",
        "webp",
        "bmp",
        "tiff",
    ],
)
def test_odd_but_valid_images_are_scored(data):
    d = decode(data, PRE)
    assert d.error is None, d.error
    assert d.pixels.shape == (32, 32, 3)


def test_sixteen_bit_keeps_its_contrast():
    img, _, _ = open_image(_sixteen_bit_png())
    arr = np.asarray(img)
    assert arr.min() == 0 and arr.max() == 255  # scaled, not clipped to white


def test_animated_image_uses_the_first_frame():
    img, fmt, _ = open_image(_animated_gif())
    assert fmt == "GIF"
    r, g, b = img.getpixel((10, 10))
    assert r > 200 and g < 50 and b < 50


def test_exif_rotation_is_applied():
    # Left half red, right half blue; EXIF orientation 6 = rotate 90 degrees clockwise to view.
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, :40] = (255, 0, 0)
    arr[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _save(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95)
    img, _, (w, h) = open_image(data)
    assert img.size == (40, 80) and (w, h) == (40, 80)
    top, bottom = img.getpixel((20, 5)), img.getpixel((20, 75))
    assert top[0] > 200 and top[2] < 60  # red now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_large_jpeg_is_decoded_at_reduced_size():
    data = image_bytes("JPEG", (1024, 768))
    img, fmt, size = open_image(data, draft=224)
    assert size == (1024, 768) and fmt == "JPEG"
    assert 224 <= min(img.size) < 768  # libjpeg scaled the decode down


def test_format_comes_from_bytes_not_names():
    d = decode(image_bytes("PNG"), PRE)
    assert d.format == "PNG"


@pytest.mark.parametrize("size", [(240, 120), (120, 240), (97, 61)])
def test_center_crop_keeps_the_centred_square_at_the_model_size(size):
    """The centred square of a wide or tall image, resampled to the input size: the same pixels
    as resizing the whole image and cropping (within rounding), and nothing from the sides."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    side = min(w, h)
    x0, y0 = (w - side) // 2, (h - side) // 2
    arr[..., 2] = 255  # blue margins
    arr[y0 : y0 + side, x0 : x0 + side] = (0, 200, 0)  # green centre square
    img = Image.fromarray(arr)
    fitted = fit_image(img, PRE).astype(int)
    assert fitted.shape == (32, 32, 3)
    scale = 32 / side
    whole = img.resize((max(32, round(w * scale)), max(32, round(h * scale))), Image.BILINEAR)
    left, top = (whole.width - 32) // 2, (whole.height - 32) // 2
    cropped = np.asarray(whole.crop((left, top, left + 32, top + 32))).astype(int)
    assert np.abs(fitted - cropped).max() <= 1
    inner = fitted[2:-2, 2:-2]  # away from the edges, where the margin's colour may bleed in
    assert (inner[..., 1] > 190).all() and (inner[..., 2] < 10).all()
