"""The steps of a scan as plain functions and classes, callable without Ray.

``read_decode`` turns a batch of listed inputs into decoded rows (CPU tasks); ``Scorer`` turns
decoded rows into verdict rows (actor pool; model loaded once per actor). Ray wiring lives in
``deepfake_scan.scan``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone

import numpy as np

from deepfake_scan.decode import decode
from deepfake_scan.faces import FaceGeometry
from deepfake_scan.preprocess import Preprocessing
from deepfake_scan.sources import batch_inputs, read_inputs
from deepfake_scan.startup import collector_paused


def _empty(n: int, size: int, faces: bool) -> dict[str, np.ndarray]:
    # Between stages, "" and -1 stand for null: Ray may turn None in object columns into NaN.
    def text() -> np.ndarray:
        return np.full(n, "", dtype=object)

    # With faces: each row's face crops as raw bytes (K x size x size x 3), boxes and the crops'
    # sides before the fit (for the model's upsample calibration) as JSON.
    extra = (
        {"face_pixels": np.full(n, b"", dtype=object), "face_boxes": text(), "face_sides": text()}
        if faces
        else {}
    )
    return extra | {
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
    faces: dict | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Read every record of the listed inputs in ``batch`` and decode it at the model's size.

    Yields batches of at most ``rows_per_batch`` rows, so a tar shard of 100k members streams
    through memory instead of landing in one block. ``done`` lists record uris that already have
    a committed verdict (resume): they are skipped before decoding. ``faces`` (a
    ``FaceGeometry`` as a dict) also finds each image's faces and crops them for the model.
    """
    pre = Preprocessing.from_dict(preprocessing)
    geometry = FaceGeometry.from_dict(faces) if faces else None
    out, n = _empty(rows_per_batch, pre.input_size, bool(faces)), 0
    inputs = batch_inputs(batch)
    done = [set(d) if d is not None else set() for d in batch.get("done", [None] * len(inputs))]
    for i, rec in read_inputs(inputs, image_column, key_column, max_bytes):
        if rec.uri in done[i]:
            continue
        d = decode(rec.data, pre, max_pixels, geometry) if rec.error is None else None
        out["uri"][n], out["source_etag"][n], out["key"][n] = rec.uri, inputs[i].etag, rec.key or ""
        if d is None:
            out["error"][n] = rec.error
        else:
            out["sha256"][n], out["error"][n] = d.sha256 or "", d.error or ""
            out["format"][n] = d.format or ""
            if d.pixels is not None:
                out["pixels"][n] = d.pixels
                out["width"][n], out["height"][n] = d.width, d.height
            if d.faces is not None:
                out["face_pixels"][n] = d.face_pixels.tobytes()
                out["face_boxes"][n] = json.dumps([list(f.__dict__.values()) for f in d.faces])
                out["face_sides"][n] = json.dumps(d.face_sides)
        n += 1
        if n == rows_per_batch:
            yield out
            out, n = _empty(rows_per_batch, pre.input_size, bool(faces)), 0
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
        batch_size: int = 64,
        precision: str = "auto",
        compile: bool = False,
    ):
        with collector_paused(freeze=True):  # an actor's process is ours
            import torch

            from deepfake_scan.detector import load_detector

            if num_threads:
                torch.set_num_threads(num_threads)
            self.detector = load_detector(model, precision=precision)
            if compile:
                self.detector.compile()
        card = self.detector.card
        self.threshold = card.threshold if threshold is None else threshold
        self.band = tuple(card.review_band) if review_band is None else tuple(review_band)
        self.run_id = run_id
        # A face-only model (its card says so) labels images without a face "no_face".
        self.face_only = bool(card.face_geometry and card.face_geometry.face_only)
        self.batch_size = batch_size  # images per model batch (an image may bring many faces)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from deepfake_scan.detector import label_for

        pixels = batch.pop("pixels")
        errors = batch["error"]
        ok = np.array([not e for e in errors], dtype=bool)
        scores = np.full(len(errors), np.nan, dtype=np.float32)
        labels = np.full(len(errors), "error", dtype=object)
        if "face_pixels" in batch:
            ok, no_face = self._score_faces(batch, ok, scores)
            labels[no_face] = "no_face"
        if ok.any():
            whole = ok & np.isnan(scores)  # images scored as a whole (no faces searched or found)
            if whole.any():
                sizes = np.stack([batch["width"], batch["height"]], axis=1)[whole]
                scores[whole] = self.detector.predict_pixels(pixels[whole], self.batch_size, sizes)
            labels[ok] = [label_for(float(s), self.threshold, self.band) for s in scores[ok]]
        batch["score"] = scores
        batch["label"] = labels
        batch["compiled"] = ok & self.detector.compiled  # for the summary, not a verdict column
        batch["model_id"] = np.full(len(errors), self.detector.model_id, dtype=object)
        batch["run_id"] = np.full(len(errors), self.run_id, dtype=object)
        batch["scanned_at"] = np.full(
            len(errors), np.datetime64(datetime.now(timezone.utc).replace(tzinfo=None), "us")
        )
        return batch

    def _score_faces(
        self, batch: dict[str, np.ndarray], ok: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score every face crop; an image's score is its highest face score. Writes the
        ``faces`` column (JSON between stages). Returns (rows still to label, rows with no face
        under a face-only model)."""
        from deepfake_scan.detector import label_for

        size = self.detector.card.preprocessing.input_size
        blobs, boxes = batch.pop("face_pixels"), batch.pop("face_boxes")
        crops = [np.frombuffer(b or b"", np.uint8).reshape(-1, size, size, 3) for b in blobs]
        counts = np.array([len(c) for c in crops])
        sides = np.array([s for j in batch.pop("face_sides") for s in json.loads(j or "[]")])
        sizes = np.repeat(sides.reshape(-1, 1), 2, axis=1)  # square crops: (side, side)
        face_scores = self.detector.predict_pixels(np.concatenate(crops), self.batch_size, sizes)
        out, at = np.full(len(blobs), "", dtype=object), 0
        for i, (box_json, k) in enumerate(zip(boxes, counts, strict=True)):
            mine, at = face_scores[at : at + k], at + k
            if not ok[i]:
                continue
            faces = [
                dict(zip(("x", "y", "w", "h", "confidence"), box, strict=True))
                | {"score": float(s), "label": label_for(float(s), self.threshold, self.band)}
                for box, s in zip(json.loads(box_json or "[]"), mine, strict=True)
            ]
            out[i] = json.dumps(faces)
            if k:
                scores[i] = float(mine.max())
        batch["faces"] = out
        no_face = ok & (counts == 0) & self.face_only
        return ok & ~no_face, no_face
