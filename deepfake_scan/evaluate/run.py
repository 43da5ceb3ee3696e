"""An evaluation end to end: list the labelled sources, launder and score on Ray, report.

Reading is the scan's (``list_inputs`` / ``read_inputs``: folders, tar shards, Parquet, local or
s3://); decoding and laundering run as CPU tasks; scoring and the attacks run in an actor pool
sized as the scan sizes its detectors (GPU when the cluster has one). Only labels, scores and
uris come back to the driver.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np

from deepfake_scan.decode import DEFAULT_MAX_PIXELS
from deepfake_scan.errors import ScanError
from deepfake_scan.evaluate import results
from deepfake_scan.evaluate.attacks import ATTACKS, EPSILONS, PGD_STEPS, attack_columns
from deepfake_scan.evaluate.launder import DEFAULT_VIEWS, LAUNDERINGS, check_views
from deepfake_scan.evaluate.results import Scored
from deepfake_scan.models.artifact import ModelCard
from deepfake_scan.sources import DEFAULT_MAX_BYTES, list_inputs

LABELS = {"real": 0, "fake": 1}
# Laundering re-encodes every image about ten times: heavier than the scan's decode. The value
# must also differ from any actor's request (0.5 and up, or 1 with a GPU), or Ray fuses reading
# into the actor pool and laundering and scoring run one after the other.
DECODE_CPUS = 0.4


@dataclass
class EvalOptions:
    model: str | None = None  # model directory or URI; None = the bundled default
    views: tuple[str, ...] = DEFAULT_VIEWS  # launderings; "none" (as the scan sees it) is added
    attacks: tuple[str, ...] = ATTACKS  # () = no adversarial table
    epsilons: tuple[float, ...] = EPSILONS  # in [0, 1] pixel units
    pgd_steps: int = PGD_STEPS
    # Share of fakes attacked, picked by content hash (the same images for every model): PGD
    # costs ~3 x steps forward passes per image and epsilon, a lot on CPU for a large set.
    attack_share: float = 1.0
    batch_size: int = 64  # images per batch to the model (records x views)
    concurrency: int | None = None  # detector actors; None = from the cluster's resources
    num_gpus: float | None = None  # GPUs per actor; None = 1 when the cluster has GPUs
    address: str | None = None  # Ray address; None = RAY_ADDRESS or a local Ray
    image_column: str = "image"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    threshold: float | None = None  # overrides the model's decision threshold
    review_band: tuple[float, float] | None = None  # overrides the model's review band
    worst: int = 16  # images per contact sheet of worst mistakes
    compare: str | None = None  # another evaluation's summary.json: adds "difference" rows
    s3_endpoint: str | None = None

    def validate(self) -> EvalOptions:
        try:
            self.views = check_views(self.views)
        except ValueError as e:
            raise ScanError(str(e)) from None
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ScanError(f"unknown attack {unknown}; known: {', '.join(ATTACKS)}")
        if any(not 0 < e <= 1 for e in self.epsilons):
            raise ScanError("epsilons are in pixel units of [0, 1], e.g. 0.00392 for 1/255")
        if not 0 <= self.attack_share <= 1 or self.pgd_steps < 1 or self.batch_size < 1:
            raise ScanError("need 0 <= attack_share <= 1, pgd_steps >= 1 and batch_size >= 1")
        self.attacks, self.epsilons = tuple(self.attacks), tuple(self.epsilons)
        return self


def list_labelled(real: Iterable[str], fake: Iterable[str]) -> list[dict]:
    """Every listed input of every source with its label and the source it came from."""
    real, fake = list(real), list(fake)
    if not real or not fake:
        raise ScanError("an evaluation needs at least one --real and one --fake source")
    both = set(real) & set(fake)
    if both:
        raise ScanError(f"a source cannot be both real and fake: {', '.join(sorted(both))}")
    items = []
    for name, sources in (("real", real), ("fake", fake)):
        for src in sources:
            inputs = list(list_inputs(src))  # a missing source raises one ScanError line
            if not inputs:
                raise ScanError(f"no {name} inputs found in {src}")
            items += [
                {"uri": i.uri, "kind": i.kind, "size": i.size, "etag": i.etag}
                | {"label": LABELS[name], "source": src}
                for i in inputs
            ]
    return items


def _dataset(items: list[dict], card: ModelCard, opts: EvalOptions):
    import ray

    from deepfake_scan.evaluate.steps import EvalScorer, read_views
    from deepfake_scan.scanning import (
        ScanOptions,
        actor_resources,
        input_dataset,
        worker_env_args,
    )

    ray.data.DataContext.get_current().enable_progress_bars = False
    # Sized exactly as a scan sizes its detectors, so an evaluation and a scan share a cluster.
    n_actors, res = actor_resources(
        ScanOptions(concurrency=opts.concurrency, num_gpus=opts.num_gpus)
    )
    env = worker_env_args()
    # Every record carries all its views: a model batch of ~batch_size images is this many rows.
    rows = max(1, opts.batch_size // len(opts.views))
    ds = input_dataset(items, n_actors, 16, res["decode_tasks"]).map_batches(
        read_views,
        batch_size=None,
        num_cpus=DECODE_CPUS,
        **env,
        fn_kwargs={
            "preprocessing": card.preprocessing.to_dict(),
            "views": opts.views,
            "attack_share": opts.attack_share if opts.attacks else 0.0,
            "rows_per_batch": rows,
            "image_column": opts.image_column,
            "max_pixels": opts.max_pixels,
            "max_bytes": opts.max_bytes,
        },
    )
    return ds.map_batches(
        EvalScorer,
        batch_size=rows,
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=res["num_cpus"],
        num_gpus=res["num_gpus"],
        **env,
        fn_constructor_kwargs={
            "model": opts.model,
            "attacks": opts.attacks,
            "epsilons": opts.epsilons,
            "pgd_steps": opts.pgd_steps,
            "num_threads": res["threads"],
        },
    )


def collect(batches: Iterable[dict], views: tuple[str, ...], columns: tuple[str, ...]) -> Scored:
    """Scored batches (numpy) -> one ``Scored``, ordered by uri so reports are reproducible."""
    parts: dict[str, list] = {k: [] for k in ("uri", "source", "label", "error", "scores", "adv")}
    for b in batches:
        for k in parts:
            parts[k].append(np.asarray(b[k]))
    if not parts["uri"]:
        raise ScanError("no records were read from the sources")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    order = np.argsort(cat["uri"].astype(str), kind="stable")
    cat = {k: v[order] for k, v in cat.items()}
    cat["error"] = np.array(["" if _null(e) else str(e) for e in cat["error"]], dtype=object)
    cat["label"] = cat["label"].astype(np.int64)
    adv = cat["adv"].reshape(len(order), len(columns)).astype(np.float32)
    return Scored(
        cat["uri"].astype(object),
        cat["source"].astype(object),
        cat["label"],
        cat["error"],
        cat["scores"].reshape(len(order), len(views)).astype(np.float32),
        adv,
        views,
        columns,
    )


def _null(v: object) -> bool:
    # Ray may hand an all-empty object column back as NaNs (as in the scan's verdict_table).
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


def evaluate(real: list[str], fake: list[str], out: str, **options: object) -> dict:
    """Evaluate a model on labelled ``real`` and ``fake`` sources; write the report to ``out``.

    Returns the summary also written as ``out/summary.json``.
    """
    from deepfake_scan.evaluate.report import write_report
    from deepfake_scan.models.artifact import load_model
    from deepfake_scan.scanning import init_ray
    from deepfake_scan.storage import get_fs, set_s3_endpoint, storage_errors

    opts = EvalOptions(**options).validate()
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    set_s3_endpoint(opts.s3_endpoint)
    with storage_errors("model not readable", opts.model or "bundled model"):
        _, card = load_model(opts.model)  # fail fast, before any listing or Ray start
    baseline = _read_baseline(opts.compare) if opts.compare else None
    with storage_errors("report folder not writable", out):
        fs, path = get_fs(out)
        fs.makedirs(path, exist_ok=True)  # fail now, not after scoring every image
    items = list_labelled(real, fake)
    init_ray(opts.address)
    columns = tuple(attack_columns(opts.attacks, opts.epsilons))
    batches = _dataset(items, card, opts).iter_batches(batch_size=None, batch_format="numpy")
    data = collect(batches, opts.views, columns)
    run = {
        "real": real,
        "fake": fake,
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 1),
        "options": _options_record(opts),
    }
    summary = build_summary(data, card, opts, run, baseline)
    write_report(out, summary, data)
    return summary


def build_summary(
    data: Scored, card: ModelCard, opts: EvalOptions, run: dict, baseline: dict | None = None
) -> dict:
    """Everything ``summary.json`` holds; undefined numbers are null."""
    threshold = card.threshold if opts.threshold is None else opts.threshold
    band = tuple(card.review_band if opts.review_band is None else opts.review_band)
    table = results.metric_table(data, threshold, band)
    summary = {
        "model": {
            "model_id": card.model_id,
            "uri": opts.model or "bundled default model",
            "architecture": card.architecture,
            "threshold": threshold,
            "review_band": list(band),
            "temperature": card.temperature,
        },
        "run": run,
        "counts": results.counts(data),
        "views": {v: LAUNDERINGS[v].description for v in data.views},
        "metrics": table[data.views[0]],
        "robustness": results.robustness(table),
        "adversarial": results.adversarial(data, threshold, band),
        "metrics_by_view": table,
        "worst_mistakes": results.worst_mistakes(data, threshold, opts.worst),
    }
    if baseline is not None:
        summary["difference"] = results.compare(summary, baseline)
    return results.finite_or_none(summary)


def _options_record(opts: EvalOptions) -> dict:
    return results.finite_or_none(asdict(opts))


def _read_baseline(uri: str) -> dict:
    import json

    from deepfake_scan.storage import get_fs

    fs, path = get_fs(uri)
    try:
        with fs.open(path, "r") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ScanError(f"cannot read --compare {uri}: {type(e).__name__}: {e}") from None
