"""The two steps of an evaluation, as plain callables (Ray wiring lives in ``run``).

``read_views`` (CPU tasks) reads the labelled inputs with the scan's readers and gives one row
per record: its label and source, and its pixels under every laundering view. ``EvalScorer``
(actor pool, the scan's ``Scorer`` with its model loading) scores every view and attacks the
fakes picked for it. Rows carry no bytes and, after scoring, no pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from deepfake_scan.decode import DEFAULT_MAX_PIXELS
from deepfake_scan.evaluate.attacks import ATTACKS, EPSILONS, PGD_STEPS, attack_detector
from deepfake_scan.evaluate.launder import launder_record
from deepfake_scan.pipeline import Scorer
from deepfake_scan.preprocess import Preprocessing
from deepfake_scan.sources import DEFAULT_MAX_BYTES, batch_inputs, read_inputs


def picked_for_attack(sha256: str, label: int, share: float) -> bool:
    """Fakes attacked, by content hash: the same images for every model and every rerun. (Bits
    16-32 of the hash: training splits on bits 0-16, so the pick does not favour a split.)"""
    if label != 1 or share <= 0 or not sha256:
        return False
    return int(sha256[16:32], 16) / 2**64 < share


def _empty(n: int, views: int, size: int) -> dict[str, np.ndarray]:
    return {
        "uri": np.full(n, "", dtype=object),
        "source": np.full(n, "", dtype=object),
        "label": np.zeros(n, dtype=np.int8),
        "sha256": np.full(n, "", dtype=object),
        "error": np.full(n, "", dtype=object),
        "attack": np.zeros(n, dtype=bool),
        "pixels": np.zeros((n, views, size, size, 3), dtype=np.uint8),
        "sizes": np.zeros((n, views, 2), dtype=np.int32),  # (width, height) before the fit
    }


def read_views(
    batch: dict[str, np.ndarray],
    preprocessing: dict,
    views: Sequence[str],
    attack_share: float = 1.0,
    rows_per_batch: int = 8,
    image_column: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[dict[str, np.ndarray]]:
    """Listed inputs (uri, kind, size, etag, label, source) -> rows of laundered pixels.

    The label is copied to the row and used for nothing else: every view of every record is
    made by the same code with the same parameters. Unreadable records keep their ``error``.
    """
    pre = Preprocessing.from_dict(preprocessing)
    out, n = _empty(rows_per_batch, len(views), pre.input_size), 0
    for i, rec in read_inputs(batch_inputs(batch), image_column, None, max_bytes):
        label = int(batch["label"][i])
        out["uri"][n], out["source"][n], out["label"][n] = rec.uri, batch["source"][i], label
        if rec.error is not None:
            out["error"][n] = rec.error
        else:
            decoded, pixels, sizes = launder_record(rec.data, pre, views, max_pixels)
            out["sha256"][n], out["error"][n] = decoded.sha256 or "", decoded.error or ""
            if pixels is not None:
                out["pixels"][n], out["sizes"][n] = pixels, sizes
                out["attack"][n] = picked_for_attack(decoded.sha256 or "", label, attack_share)
        n += 1
        if n == rows_per_batch:
            yield out
            out, n = _empty(rows_per_batch, len(views), pre.input_size), 0
    if n:
        yield {k: v[:n] for k, v in out.items()}


class EvalScorer(Scorer):
    """Actor-pool step: scores of every view, and of the picked fakes after every attack."""

    def __init__(
        self,
        model: str | None,
        attacks: Sequence[str] = ATTACKS,
        epsilons: Sequence[float] = EPSILONS,
        pgd_steps: int = PGD_STEPS,
        num_threads: int | None = None,
    ):
        super().__init__(model, num_threads=num_threads)
        self.attacks, self.epsilons, self.pgd_steps = tuple(attacks), tuple(epsilons), pgd_steps

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels, sizes = batch.pop("pixels"), batch.pop("sizes")
        n, v = pixels.shape[:2]
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        scores = np.full((n, v), np.nan, dtype=np.float32)
        if ok.any():
            flat = pixels[ok].reshape(-1, *pixels.shape[2:])
            flat_sizes = sizes[ok].reshape(-1, 2)
            scores[ok] = self.detector.predict_pixels(flat, sizes=flat_sizes).reshape(-1, v)
        adv = np.full((n, len(self.attacks) * len(self.epsilons)), np.nan, dtype=np.float32)
        picked = ok & batch["attack"].astype(bool)
        if picked.any() and adv.shape[1]:
            # The attacks start from the clean view (index 0): the image as the scan sees it.
            adv[picked] = attack_detector(
                self.detector,
                pixels[picked, 0],
                self.attacks,
                self.epsilons,
                self.pgd_steps,
                sizes=sizes[picked, 0],
            )
        batch["scores"], batch["adv"] = scores, adv
        return batch
