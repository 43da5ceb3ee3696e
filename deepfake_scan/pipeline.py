"""The steps of a scan as plain functions and classes, callable without Ray.

``read_decode`` turns a batch of listed inputs into decoded rows (CPU tasks); ``Scorer`` turns
decoded rows into verdict rows (actor pool; model loaded once per actor). Ray wiring lives in
``deepfake_scan.scan``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import numpy as np

from deepfake_scan.decode import decode
from deepfake_scan.preprocess import Preprocessing
from deepfake_scan.sources import Input, iter_records


def _empty(n: int, size: int) -> dict[str, np.ndarray]:
    # Between stages, "" and -1 stand for null: Ray may turn None in object columns into NaN.
    def text() -> np.ndarray:
        return np.full(n, "", dtype=object)

    return {
        "uri": text(),
        "source_etag": text(),
        "key": text(),
        "sha256": text(),
        "width": np.full(n, -1, dtype=np.int32),
        "height": np.full(n, -1, dtype=np.int32),
        "format": text(),
        "error": text(),
        "pixels": np.zeros((n, size, size, 3), dtype=np.uint8),
    }


def read_decode(
    batch: dict[str, np.ndarray],
    preprocessing: dict,
    rows_per_batch: int = 64,
    image_column: str = "image",
    key_column: str | None = None,
    max_pixels: int = 100_000_000,
    max_bytes: int = 256 * 1024 * 1024,
) -> Iterator[dict[str, np.ndarray]]:
    """Read every record of the listed inputs in ``batch`` and decode it at the model's size.

    Yields batches of at most ``rows_per_batch`` rows, so a tar shard of 100k members streams
    through memory instead of landing in one block. ``done`` lists record uris that already have
    a committed verdict (resume): they are skipped before decoding.
    """
    pre = Preprocessing.from_dict(preprocessing)
    out, n = _empty(rows_per_batch, pre.input_size), 0
    for i in range(len(batch["uri"])):
        inp = Input(batch["uri"][i], batch["kind"][i], int(batch["size"][i]), batch["etag"][i])
        done = set(batch["done"][i]) if "done" in batch and batch["done"][i] is not None else ()
        for rec in iter_records(inp, image_column, key_column, max_bytes):
            if rec.uri in done:
                continue
            d = decode(rec.data, pre, max_pixels) if rec.error is None else None
            out["uri"][n], out["source_etag"][n], out["key"][n] = rec.uri, inp.etag, rec.key or ""
            if d is None:
                out["error"][n] = rec.error
            else:
                out["sha256"][n], out["error"][n] = d.sha256 or "", d.error or ""
                out["format"][n] = d.format or ""
                if d.pixels is not None:
                    out["pixels"][n] = d.pixels
                    out["width"][n], out["height"][n] = d.width, d.height
            n += 1
            if n == rows_per_batch:
                yield out
                out, n = _empty(rows_per_batch, pre.input_size), 0
    if n:
        yield {k: v[:n] for k, v in out.items()}


class Scorer:
    """Actor-pool step: the detector, loaded once per actor, scores decoded rows."""

    def __init__(
        self,
        model: str | None,
        threshold: float | None = None,
        review_band: tuple[float, float] | None = None,
        run_id: str = "",
        num_threads: int | None = None,
    ):
        import torch

        from deepfake_scan.detector import load_detector

        if num_threads:
            torch.set_num_threads(num_threads)
        self.detector = load_detector(model)
        card = self.detector.card
        self.threshold = card.threshold if threshold is None else threshold
        self.band = tuple(card.review_band) if review_band is None else tuple(review_band)
        self.run_id = run_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from deepfake_scan.detector import label_for

        pixels = batch.pop("pixels")
        errors = batch["error"]
        ok = np.array([not e for e in errors], dtype=bool)
        scores = np.full(len(errors), np.nan, dtype=np.float32)
        if ok.any():
            scores[ok] = self.detector.predict_pixels(pixels[ok])
        batch["score"] = scores
        batch["label"] = np.array(
            [
                label_for(float(s), self.threshold, self.band) if k else "error"
                for s, k in zip(scores, ok, strict=True)
            ],
            dtype=object,
        )
        batch["model_id"] = np.full(len(errors), self.detector.model_id, dtype=object)
        batch["run_id"] = np.full(len(errors), self.run_id, dtype=object)
        batch["scanned_at"] = np.full(
            len(errors), np.datetime64(datetime.now(timezone.utc).replace(tzinfo=None), "us")
        )
        return batch
