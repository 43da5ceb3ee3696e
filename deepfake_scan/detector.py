"""The detector: a model artifact loaded for inference, on GPU when present, CPU otherwise."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from deepfake_scan.errors import first_line
from deepfake_scan.metrics import calibrated
from deepfake_scan.models.artifact import ModelCard, load_model
from deepfake_scan.precision import check_precision
from deepfake_scan.preprocess import fit_image, upscale_log2

log = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (AVX512-BF16 or AMX), where bf16 autocast pays."""
    return getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the forward pass runs in under ``torch.autocast``; None = full fp32."""
    check_precision(precision)
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def label_for(score: float, threshold: float, band: tuple[float, float]) -> str:
    """``uncertain`` inside the review band [low, high), else ``fake`` at or above threshold."""
    lo, hi = band
    if lo <= score < hi:
        return "uncertain"
    return "fake" if score >= threshold else "real"


class Detector:
    """Fake probabilities for images. ``predict`` takes PIL images; ``predict_pixels`` takes the
    uint8 NHWC arrays the scan's decode step produces (already at the model's input size).

    ``precision`` (see ``precision.PRECISIONS``): bf16 on this project's 2-core AMX machine ran
    the default model 2.9-3.1x faster than fp32, test AUC within 0.0002, probabilities within 0.019
    (``benchmarks/precision.py``).

    On CPU a forward takes at most ``CPU_FORWARD`` images, whatever the batch: activations of a
    few images stay in the CPU's caches and in memory the allocator reuses, where those of 64
    exceed glibc's mmap threshold (32 MiB) and are mapped and faulted in afresh every forward.
    Default model, bf16, 2 cores (median of 4): 178 images/s in forwards of 64, 246 of 16,
    253-364 of 8, 375 of 4, 342 of 2."""

    CPU_FORWARD = 4

    def __init__(
        self,
        model: torch.nn.Module,
        card: ModelCard,
        device: str | None = None,
        precision: str = "auto",
    ):
        self.card = card
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = autocast_dtype(precision, self.device)
        self.max_forward = self.CPU_FORWARD if self.device.type == "cpu" else None
        # channels_last + inference_mode doubled MobileNetV2's CPU throughput here.
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        pre = card.preprocessing
        self._mean = torch.tensor(pre.mean, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(pre.std, device=self.device).view(1, 3, 1, 1) * 255
        self.forward = self.model  # the compiled model after ``compile()``

    @property
    def model_id(self) -> str:
        return self.card.model_id

    @property
    def compiled(self) -> bool:
        return self.forward is not self.model

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> normalised float NCHW (channels_last) on the model's device."""
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return x.sub_(self._mean).div_(self._std).contiguous(memory_format=torch.channels_last)

    def predict_pixels(
        self, pixels: np.ndarray, batch_size: int | None = None, sizes: np.ndarray | None = None
    ) -> np.ndarray:
        """Fake probabilities; ``batch_size`` splits a large array into forwards of that size
        (on CPU at most ``max_forward``). ``sizes``: each image's original (width, height), for
        the card's upsample calibration of images the fit enlarged (None: not enlarged)."""
        step = batch_size or len(pixels)
        if self.max_forward:
            step = min(step, self.max_forward)
        step = max(1, step)
        logits = np.concatenate(
            [np.zeros(0, np.float32)]
            + [self._logits(pixels[i : i + step]) for i in range(0, len(pixels), step)]
        )
        return self.probabilities(logits, sizes)

    def probabilities(self, logits: np.ndarray, sizes: np.ndarray | None = None) -> np.ndarray:
        """The card's calibration of raw logits: fake probabilities (``sizes`` as in
        ``predict_pixels``)."""
        card = self.card
        upscale = None
        if sizes is not None:
            upscale = upscale_log2(sizes[:, 0], sizes[:, 1], card.preprocessing)
        probs = calibrated(logits, card.temperature, upscale, card.upsample_calibration)
        return probs.astype(np.float32)

    def compile(self) -> bool:
        """Compile the CPU forward with ``torch.compile`` (inductor, weights frozen), compiling
        now rather than on the first batch. Returns False, and the model stays eager, on a GPU
        (not measured there) or where inductor cannot build (no C++ compiler, say)."""
        if self.device.type != "cpu" or self.compiled:
            return self.compiled
        import torch._inductor.config as inductor

        inductor.compile_threads = 1  # no pool of compiler processes beside a scan's actors
        # One shape only: forwards of fewer images are padded to it (_logits), never recompiled.
        self.forward = torch.compile(self.model, dynamic=False, options={"freezing": True})
        size = self.card.preprocessing.input_size
        try:
            self._logits(np.zeros((self.max_forward, size, size, 3), np.uint8))
        except Exception as e:  # inductor's errors come in many types
            log.warning("torch.compile failed, the model runs eagerly: %s", first_line(e))
            self.forward = self.model
        return self.compiled

    @torch.inference_mode()
    def _logits(self, pixels: np.ndarray) -> np.ndarray:
        n = len(pixels)
        if self.compiled and n < self.max_forward:  # compiled for one shape
            pad = np.zeros((self.max_forward - n, *pixels.shape[1:]), np.uint8)
            pixels = np.concatenate([pixels, pad])
        x = self.normalise(torch.from_numpy(np.ascontiguousarray(pixels)))
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.forward(x).float()
        return logits[:n].cpu().numpy()

    def predict(self, images: Sequence[Image.Image]) -> np.ndarray:
        pre = self.card.preprocessing
        if not images:
            return np.zeros(0, np.float32)
        pixels = np.stack([fit_image(img, pre) for img in images])
        return self.predict_pixels(pixels, sizes=np.array([img.size for img in images]))

    def label(self, score: float) -> str:
        return label_for(score, self.card.threshold, self.card.review_band)


def load_detector(
    model: str | None = None, device: str | None = None, precision: str = "auto"
) -> Detector:
    """Load a model artifact (a directory or URI; None = the bundled default model) for
    inference."""
    net, card = load_model(model)
    return Detector(fold_batchnorm(net), card, device=device, precision=precision)


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` for inference with every BatchNorm folded into the convolution before
    it (``torch.fx``): the same function, one memory pass fewer per layer (default model on 2
    cores: 20 % faster). A model that ``torch.fx`` cannot trace is returned as it is."""
    import torch.fx.experimental.optimization as fx_opt

    try:
        return fx_opt.fuse(model.eval())
    except Exception as e:  # tracing fails on data-dependent control flow
        log.info("BatchNorm not folded for %s: %s", type(model).__name__, e)
        return model
