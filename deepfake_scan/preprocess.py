"""Image preprocessing shared by training and scanning.

The preprocessing travels inside the model artifact (model.json), so the scan feeds a model exactly
what it was trained on. Everything here works on PIL images and uint8 arrays; normalisation to
floats happens on the model's device (see ``Detector``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

_INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class Preprocessing:
    input_size: int = 224
    # "center_crop": shorter side to input_size, then a centred square crop (keeps aspect ratio).
    # "squash": resize straight to input_size x input_size.
    resize: str = "center_crop"
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.resize not in ("center_crop", "squash"):
            raise ValueError(f"unknown resize mode {self.resize!r}")
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if not 8 <= self.input_size <= 4096:
            raise ValueError(f"input_size {self.input_size} out of range")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        d = dict(d)
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)


def upscale_log2(width, height, pre: Preprocessing) -> np.ndarray:
    """How far ``fit_image`` enlarges images of these sizes (arrays or numbers), as log2 of the
    factor: 0 for images it does not enlarge, 1 for a doubling. Unknown sizes (<= 0) give 0."""
    w, h = np.asarray(width, dtype=np.float64), np.asarray(height, dtype=np.float64)
    known = (w > 0) & (h > 0)
    w, h = np.where(known, w, pre.input_size), np.where(known, h, pre.input_size)
    # Both modes enlarge by input_size / shorter side (squash stretches the longer side less).
    return np.maximum(0.0, np.log2(pre.input_size / np.minimum(w, h)))


def fit_image(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """Resize an RGB image to the model's input; returns uint8 HxWx3."""
    size = pre.input_size
    interp = _INTERPOLATION[pre.interpolation]
    if img.mode != "RGB":
        img = img.convert("RGB")
    if pre.resize == "squash":
        img = img.resize((size, size), interp)
    else:
        w, h = img.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        left, top = (nw - size) // 2, (nh - size) // 2
        if (nw, nh) == (w, h):
            img = img.crop((left, top, left + size, top + size))
        else:  # resample only the centred square (the crop's box in source pixels): 25 % less work
            sx, sy = w / nw, h / nh
            box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
            img = img.resize((size, size), interp, box=box)
    return np.asarray(img, dtype=np.uint8)
