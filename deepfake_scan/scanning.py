"""A scan: list the source, read and decode on CPU tasks, score in an actor pool, commit verdicts.

The driver writes the (small) verdict rows itself, part by part, and commits as it goes, so a
crash loses at most the uncommitted tail and a rerun resumes where the last commit left off.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfake_scan.decode import DEFAULT_MAX_PIXELS
from deepfake_scan.models.artifact import ModelCard, load_model
from deepfake_scan.sources import DEFAULT_MAX_BYTES, Input, list_inputs
from deepfake_scan.store import VERDICT_SCHEMA, VerdictStore, new_run_id

log = logging.getLogger(__name__)
# Decoding at the model's input size is light: two decode tasks share a CPU. (Differing from the
# actors' request also keeps Ray from fusing decode into the actor pool, where it would serialise
# decoding with the model.)
DECODE_CPUS = 0.5


@dataclass
class ScanOptions:
    model: str | None = None  # model directory or URI; None = the bundled default
    batch_size: int = 64  # images per model forward
    concurrency: int | None = None  # detector actors; None = from the cluster's resources
    num_gpus: float | None = None  # GPUs per actor; None = 1 when the cluster has GPUs
    address: str | None = None  # Ray address; None = RAY_ADDRESS or a local Ray
    image_column: str = "image"
    key_column: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    threshold: float | None = None  # overrides the model's decision threshold
    review_band: tuple[float, float] | None = None  # overrides the model's review band
    commit_every: int = 5000  # rows per commit; a crash loses at most this many
    commit_seconds: float = 60.0  # ... or this much time
    full: bool = False  # rescan inputs that already have verdicts from this model


@dataclass
class ScanSummary:
    run_id: str
    source: str
    out: str
    model_id: str
    inputs: int = 0
    skipped: int = 0
    rows: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    started_at: str = ""

    @property
    def images_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 2)}


def scan(source: str, out: str, **options: object) -> ScanSummary:
    """Scan ``source`` (folder, file or URI) into the verdict store ``out``."""
    opts = ScanOptions(**options)
    started = time.perf_counter()
    _, card = load_model(opts.model)  # fail fast on a missing or wrong model, before any work
    inputs = list_inputs(source)
    store = VerdictStore(out)
    store.check_writable()
    summary = ScanSummary(
        new_run_id(),
        source,
        out,
        card.model_id,
        inputs=len(inputs),
        started_at=datetime.now(timezone.utc).isoformat(),
    )
    done = {} if opts.full else _committed(store, card.model_id)
    items, summary.skipped = _work_items(inputs, done)
    if items:
        _init_ray(opts.address)
        batches = _dataset(items, card, opts, summary.run_id).iter_batches(
            batch_size=None, batch_format="numpy"
        )
        _write(store, summary, batches, opts)
    summary.seconds = time.perf_counter() - started
    _commit(store, summary, seq=_next_seq(store, summary.run_id), files=[], rows=0, final=True)
    return summary


def _committed(store: VerdictStore, model_id: str) -> dict[str, str]:
    """uri -> source_etag of every committed verdict from this model (for resume/incremental)."""
    table = store.read(all_runs=True, columns=["uri", "source_etag", "model_id"])
    table = table.filter(pc.equal(table["model_id"], model_id))
    return dict(zip(table["uri"].to_pylist(), table["source_etag"].to_pylist(), strict=True))


def _work_items(inputs: list[Input], done: dict[str, str]) -> tuple[list[dict], int]:
    items, skipped = [], 0
    for inp in inputs:
        if inp.kind == "file":
            if done.get(inp.uri) == inp.etag:
                skipped += 1
                continue
            members: list[str] = []
        else:
            prefix = inp.uri + "#"
            members = [u for u, e in done.items() if e == inp.etag and u.startswith(prefix)]
        items.append(
            {"uri": inp.uri, "kind": inp.kind, "size": inp.size, "etag": inp.etag, "done": members}
        )
    return items, skipped


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    ray.init(
        address=address or os.environ.get("RAY_ADDRESS") or None,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )


def _resources(opts: ScanOptions) -> tuple[int, dict]:
    """Actor count and per-actor resources, sized from the cluster so decode tasks keep CPUs."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = int(res.get("CPU", 1)), int(res.get("GPU", 0))
    num_gpus = opts.num_gpus if opts.num_gpus is not None else (1.0 if gpus else 0.0)
    if num_gpus > 0:
        n = opts.concurrency or max(1, int(gpus // num_gpus))
        return n, {"num_gpus": num_gpus, "num_cpus": 1, "threads": 2}
    # CPU only: the model is the expensive step, but actors holding every CPU starve the decode
    # tasks and the pipeline stalls: keep a quarter of the CPUs (at least one) for decoding.
    n = opts.concurrency or max(1, cpus // 8)
    decode_cpus = max(1, cpus // 4)
    share = max(0.25, (cpus - decode_cpus) / n)
    return n, {"num_gpus": 0, "num_cpus": share, "threads": max(1, math.ceil(cpus / n))}


def _dataset(items: list[dict], card: ModelCard, opts: ScanOptions, run_id: str):
    import ray

    from deepfake_scan.pipeline import Scorer, read_decode

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    n_actors, res = _resources(opts)
    containers = sum(1 for it in items if it["kind"] != "file")
    blocks = min(len(items), max(containers, math.ceil(len(items) / 32), 2 * n_actors))
    ds = ray.data.from_items(items, override_num_blocks=max(1, blocks))
    ds = ds.map_batches(
        read_decode,
        batch_size=None,
        num_cpus=DECODE_CPUS,
        fn_kwargs={
            "preprocessing": card.preprocessing.to_dict(),
            "rows_per_batch": opts.batch_size,
            "image_column": opts.image_column,
            "key_column": opts.key_column,
            "max_pixels": opts.max_pixels,
            "max_bytes": opts.max_bytes,
        },
    )
    return ds.map_batches(
        Scorer,
        batch_size=opts.batch_size,
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=res["num_cpus"],
        num_gpus=res["num_gpus"],
        fn_constructor_kwargs={
            "model": opts.model,
            "threshold": opts.threshold,
            "review_band": opts.review_band,
            "run_id": run_id,
            "num_threads": res["threads"],
        },
    )


def verdict_table(batch: dict[str, np.ndarray]) -> pa.Table:
    """A scored numpy batch as verdict rows: sentinels become nulls, columns as the schema says."""
    n = len(batch["uri"])
    cols = {}
    for f in VERDICT_SCHEMA:
        values = batch.get(f.name, np.full(n, None, dtype=object))
        if f.name in ("width", "height"):
            values = pa.array(values, pa.int32(), mask=np.asarray(values) < 0)
        elif f.name == "score":
            values = pa.array(values, pa.float32(), mask=np.isnan(values.astype(np.float32)))
        elif f.name == "scanned_at":
            values = pa.array(values.astype("datetime64[us]"), pa.timestamp("us")).cast(f.type)
        else:
            values = pa.array([_str_or_none(v) for v in values], f.type)
        cols[f.name] = values
    return pa.table(cols, schema=VERDICT_SCHEMA)


def _str_or_none(v: object) -> str | None:
    # Between stages "" stands for null (and Ray may hand back an all-null column as NaNs).
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


def _write(store: VerdictStore, summary: ScanSummary, batches, opts: ScanOptions) -> None:
    pending: list[pa.Table] = []
    rows, seq, last = 0, 0, time.monotonic()
    labels: Counter = Counter()
    errors: Counter = Counter()
    for batch in batches:
        table = verdict_table(batch)
        pending.append(table)
        rows += table.num_rows
        labels.update(table["label"].to_pylist())
        errors.update(e.split(":", 1)[0] for e in table["error"].to_pylist() if e)
        if rows >= opts.commit_every or time.monotonic() - last > opts.commit_seconds:
            _flush(store, summary, seq, pending, rows)
            pending, rows, seq, last = [], 0, seq + 1, time.monotonic()
        summary.labels, summary.errors = dict(labels), dict(errors)
    if pending:
        _flush(store, summary, seq, pending, rows)


def _flush(
    store: VerdictStore, summary: ScanSummary, seq: int, pending: list[pa.Table], rows: int
) -> None:
    part = store.write_part(summary.run_id, seq, pa.concat_tables(pending))
    _commit(store, summary, seq, [part], rows, final=False)
    summary.rows += rows


def _commit(
    store: VerdictStore, summary: ScanSummary, seq: int, files: list[str], rows: int, final: bool
) -> None:
    store.commit(
        summary.run_id,
        seq,
        files,
        rows,
        final,
        source=summary.source,
        model_id=summary.model_id,
        started_at=summary.started_at,
        summary=summary.to_dict() if final else None,
    )


def _next_seq(store: VerdictStore, run_id: str) -> int:
    seqs = [c.seq for c in store.commits() if c.run_id == run_id]
    return max(seqs, default=-1) + 1
