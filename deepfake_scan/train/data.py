"""Training data: list the labelled sources, read them with the scan's readers, split by content.

The split is a function of the image bytes' sha256 only, so it is the same on every run and
machine, and no file name or path (which carry the label in the shared data) can leak into it.
Ray Data does the reading and the per-epoch augmentation; the maths lives in plain functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

from deepfake_scan.errors import ScanError
from deepfake_scan.faces import FaceGeometry
from deepfake_scan.train.config import TrainConfig

LABELS = {"real": 0, "fake": 1}
SPLITS = ("train", "val", "test")


def split_of(sha256: str, val_fraction: float, test_fraction: float) -> str:
    """``train``, ``val`` or ``test`` from the first 64 bits of the content hash."""
    u = int(sha256[:16], 16) / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def list_labelled(cfg: TrainConfig) -> list[dict]:
    """Every listed input of the real and fake sources, with its label (0 real, 1 fake)."""
    from deepfake_scan.sources import list_inputs

    rows = []
    for name, sources in (("real", cfg.real), ("fake", cfg.fake)):
        inputs = [inp for src in sources for inp in list_inputs(src)]
        if cfg.limit_per_class:
            inputs = inputs[: cfg.limit_per_class]
        if not inputs:
            raise ScanError(f"no {name} images found in {', '.join(sources)}")
        rows += [
            {"uri": i.uri, "kind": i.kind, "size": i.size, "etag": i.etag, "label": LABELS[name]}
            for i in inputs
        ]
    return _with_corrections(rows, cfg.corrections)


def _with_corrections(rows: list[dict], stores: list[str]) -> list[dict]:
    """Human decisions from verdict stores: each corrected record is trained with the
    reviewer's label (read by its record uri: a file, a tar member or a Parquet row)."""
    from deepfake_scan.label.corrections import corrections_as_training_lists

    corrected: dict[str, int] = {}
    for store in stores:
        real, fake = corrections_as_training_lists(store)
        corrected.update({u: LABELS["real"] for u in real} | {u: LABELS["fake"] for u in fake})
    if not corrected:
        return rows
    kept = [r for r in rows if r["uri"] not in corrected]
    return kept + [
        {"uri": u, "kind": "record", "size": 0, "etag": "", "label": label}
        for u, label in sorted(corrected.items())
    ]


def read_labelled(batch: dict[str, np.ndarray], val_fraction: float, test_fraction: float):
    """Listed inputs -> one row per readable record: uri, sha256, label, split and bytes.

    Records that cannot be read are dropped here (training needs pixels); the count of dropped
    records is what ``dataset_summary`` reports as ``unreadable``.
    """
    from deepfake_scan.sources import batch_inputs, iter_records, read_record

    out: dict[str, list] = {k: [] for k in ("uri", "sha256", "label", "split", "data", "error")}
    for i, inp in enumerate(batch_inputs(batch)):
        records = [read_record(inp.uri)] if inp.kind == "record" else iter_records(inp)
        for rec in records:
            sha = hashlib.sha256(rec.data).hexdigest() if rec.data else ""
            out["uri"].append(rec.uri)
            out["sha256"].append(sha)
            out["label"].append(int(batch["label"][i]))
            out["split"].append(split_of(sha, val_fraction, test_fraction) if sha else "")
            out["data"].append(rec.data or b"")
            out["error"].append(rec.error or ("" if rec.data else "empty_file: 0 bytes"))
    return {k: np.array(v, dtype=np.int64 if k == "label" else object) for k, v in out.items()}


def load_records(cfg: TrainConfig, rows: list[dict]):
    """The listed inputs' records as one materialised Ray Dataset (bytes read once, not per
    epoch); ``rows`` come from ``list_labelled``."""
    import ray

    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(64, len(rows) // 256)))
    ds = ds.map_batches(
        read_labelled,
        fn_kwargs={"val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction},
        batch_size=64,
        batch_format="numpy",
    )
    return ds.materialize()


def split_datasets(records) -> dict:
    """train / val / test views of the materialised records (readable ones only)."""
    from ray.data.expressions import col

    readable = records.filter(expr=col("error") == "")
    return {s: readable.filter(expr=col("split") == s) for s in SPLITS}


def dataset_summary(records) -> dict:
    """Counts per split and class, and unreadable records: goes into model.json."""
    # Three small columns to the driver: cheaper than a distributed group-by at any size that
    # the driver also scores at the end.
    summary: dict = {s: {"real": 0, "fake": 0} for s in SPLITS}
    summary["unreadable"] = 0
    for batch in records.select_columns(["split", "label", "error"]).iter_batches(
        batch_format="numpy", batch_size=65536
    ):
        for split, label, error in zip(batch["split"], batch["label"], batch["error"], strict=True):
            if error:
                summary["unreadable"] += 1
            else:
                summary[split]["fake" if label else "real"] += 1
    return summary


def decode_rgb(data: bytes, draft: int | None = None, faces: FaceGeometry | None = None):
    """Bytes -> RGB PIL image through the scan's decoder, or None if it cannot be decoded.

    With ``faces``: the crop of the image's largest face, made exactly as the scan crops faces;
    an image without a face comes back whole, or None for a face-only model."""
    got = _decode(data, draft, faces)
    return None if got is None else got[0]


def _decode(data: bytes, draft: int | None, faces: FaceGeometry | None):
    """``decode_rgb``'s image, and whether the draft decode came out smaller than the file."""
    from deepfake_scan.decode import DecodeError, open_image
    from deepfake_scan.faces import largest_face_crop

    if faces is not None and draft is not None:
        draft = max(draft, faces.search_size)
    try:
        img, _, size = open_image(data, draft=draft)
    except DecodeError:
        return None
    reduced = img.size != size
    if faces is None:
        return img, reduced
    crop = largest_face_crop(img, faces)
    return (crop if crop is not None or faces.face_only else img), reduced


class TrainTransform:
    """Ray Data step: bytes -> one random augmented view per image (+ self-blended fakes)."""

    def __init__(self, cfg: dict):
        self.cfg = TrainConfig.from_dict(cfg)
        self.pre = self.cfg.preprocessing()
        self.faces = self.cfg.face_geometry()
        self.rng = np.random.default_rng()  # fresh views every epoch, on every worker

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from deepfake_scan.train.augment import train_view
        from deepfake_scan.train.sbi import self_blend

        cfg, rng = self.cfg, self.rng
        pixels, labels = [], []
        for data, label in zip(batch["data"], batch["label"], strict=True):
            img = decode_rgb(data, faces=self.faces)
            if img is None:
                continue
            pixels.append(train_view(img, rng, cfg.augment, self.pre, cfg.train_crop))
            labels.append(float(label))
            if cfg.sbi and label == 0 and rng.random() < cfg.sbi_share:
                fake = self_blend(img, rng)
                pixels.append(train_view(fake, rng, cfg.augment, self.pre, cfg.train_crop))
                labels.append(1.0)
        return _pixel_batch(pixels, labels, cfg.train_crop or self.pre.input_size)


class EvalTransform:
    """Ray Data step: bytes -> the image as the scan sees it, and identically re-encoded."""

    def __init__(self, cfg: dict):
        self.cfg = TrainConfig.from_dict(cfg)
        self.pre = self.cfg.preprocessing()
        self.faces = self.cfg.face_geometry()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from deepfake_scan.preprocess import fit_image
        from deepfake_scan.train.augment import eval_view

        as_is, reenc, labels = [], [], []
        for data, label in zip(batch["data"], batch["label"], strict=True):
            pair = eval_pair(data, self.pre.input_size, self.faces)
            if pair is None:
                continue
            scanned, full = pair
            as_is.append(fit_image(scanned, self.pre))
            reenc.append(fit_image(eval_view(full, "reencoded", self.cfg.eval_quality), self.pre))
            labels.append(float(label))
        out = _pixel_batch(as_is, labels, self.pre.input_size)
        out["pixels_reencoded"] = _pixel_batch(reenc, labels, self.pre.input_size)["pixels"]
        return out


def train_batch(batch: dict[str, np.ndarray], cfg: dict) -> dict[str, np.ndarray]:
    """Task form of ``TrainTransform`` (no actor pool holding CPUs between epochs)."""
    return TrainTransform(cfg)(batch)


def eval_batch(batch: dict[str, np.ndarray], cfg: dict) -> dict[str, np.ndarray]:
    return EvalTransform(cfg)(batch)


def _pixel_batch(pixels: list, labels: list, size: int) -> dict[str, np.ndarray]:
    if not pixels:
        return {
            "pixels": np.zeros((0, size, size, 3), np.uint8),
            "label": np.zeros(0, np.float32),
        }
    return {"pixels": np.stack(pixels), "label": np.asarray(labels, np.float32)}


def eval_pair(data: bytes, draft: int, faces: FaceGeometry | None = None):
    """(the image as the scan decodes it, the image at full size), or None if undecodable.

    The clean view is the scan's own decode (a JPEG decoded straight at the model's input size);
    every other evaluation view (re-encoding, shrinking) starts from the full-size picture, as a
    re-encoder or a resizer in the wild does, and as ``evaluate.launder_record`` does. Starting
    them from the reduced decode measured a model with a smaller input than the files on other
    images: "halved" was a quarter of a 250 px photo for a 125 px model."""
    got = _decode(data, draft, faces)
    if got is None or got[0] is None:
        return None
    scanned, reduced = got
    full = decode_rgb(data, faces=faces) if reduced else None  # else the decode was full size
    return scanned, full if full is not None else scanned


def iter_eval_images(
    rows: list[dict], draft: int, faces: FaceGeometry | None = None
) -> Iterator[tuple[tuple, int]]:
    """(``eval_pair``, label) for records fetched to the driver, skipping undecodable ones."""
    for row in rows:
        pair = eval_pair(row["data"], draft, faces)
        if pair is not None:
            yield pair, int(row["label"])
