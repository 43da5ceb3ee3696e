"""``label``: score a source with the scan, then write it out as a labelled WebDataset.

Steps, each resumable on its own:

1. **score**: ``deepfake_scan.scanning.scan`` into the verdict store (same exactly-once commits,
   so a rerun scores only what has no verdict yet);
2. **items**: the committed verdicts of this source and model, relabelled with this run's
   threshold and band, human corrections applied;
3. **inspect**: perceptual hashes and review thumbnails, cached by sha256;
4. **dedup**: exact and near-duplicate groups, optionally one kept per group and label;
5. **plan + write**: shards still current are kept, the rest (re)written by a Ray Data job;
6. **manifest, errors, review page, label.json** (written last: a finished run has them).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from deepfake_scan.errors import ScanError
from deepfake_scan.label import dedup as dups
from deepfake_scan.label.files import put_atomic
from deepfake_scan.label.inspect import inspect
from deepfake_scan.label.items import LABELS, Item, digest, load_items, sidecar
from deepfake_scan.label.manifest import FORMATS, write_manifest
from deepfake_scan.label.plan import Plan, plan_shards
from deepfake_scan.label.review import write_page
from deepfake_scan.label.shards import ShardState, write_shards
from deepfake_scan.scanning import ScanOptions, ScanSummary, init_ray
from deepfake_scan.storage import get_fs, join
from deepfake_scan.store import VerdictStore, new_run_id

Progress = Callable[[str, int, "int | None"], None]  # (phase, done, total or None if unknown)
SUMMARY = "label.json"


@dataclass
class LabelOptions:
    store: str | None = None  # verdict store; None = DEST/verdicts
    shard_size: int = 1000  # samples per shard (WebDataset readers like 100 MB - 1 GB shards)
    dedup: str = "near"  # none | exact | near
    near_distance: int = 4  # max differing pHash bits (of 64) for a near-duplicate
    keep_one: bool = False  # only one sample per duplicate group and label in the shards
    formats: tuple[str, ...] = ()  # extra manifest formats: jsonl, csv

    def check(self) -> None:
        if self.shard_size < 1:
            raise ScanError(f"--shard-size must be at least 1, not {self.shard_size}")
        if self.dedup not in dups.MODES:
            raise ScanError(f"--dedup must be one of {', '.join(dups.MODES)}, not {self.dedup}")
        if not 0 <= self.near_distance <= 16:
            raise ScanError(f"--near-distance must be within 0..16, not {self.near_distance}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ScanError(f"--format must be one of {', '.join(FORMATS)}, not {bad[0]}")


@dataclass
class LabelSummary:
    run_id: str
    source: str
    dest: str
    store: str
    model_id: str = ""
    threshold: float = 0.5
    review_band: tuple[float, float] = (0.5, 0.5)
    scan: dict = field(default_factory=dict)
    items: int = 0
    labels: dict[str, int] = field(default_factory=dict)  # final labels, errors included
    corrected: int = 0  # labels decided by a reviewer
    in_shards: int = 0
    shards: dict[str, int] = field(default_factory=dict)  # shards per label, now
    shards_written: int = 0
    shards_kept: int = 0
    shards_removed: int = 0
    exact_groups: int = 0
    near_groups: int = 0
    duplicates: int = 0  # group members other than the one kept
    dropped_duplicates: int = 0  # ... left out of the shards (keep_one)
    changed: int = 0  # bytes differ from what was scored: left out until rescanned
    images_read: int = 0  # by the inspect pass (hashes, thumbnails)
    review: int = 0  # images on the review page
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def label(
    source: str,
    dest: str,
    *,
    progress: Progress | None = None,
    store: str | None = None,
    shard_size: int = 1000,
    dedup: str = "near",
    near_distance: int = 4,
    keep_one: bool = False,
    formats: tuple[str, ...] | list[str] = (),
    **scan_options: object,
) -> LabelSummary:
    """Score ``source`` into the verdict store and write the labelled dataset to ``dest``.

    ``scan_options`` are those of ``deepfake_scan.scan`` (model, batch_size, threshold, ...)."""
    opts = LabelOptions(store, shard_size, dedup, near_distance, keep_one, tuple(formats))
    opts.check()
    scan_opts = ScanOptions(**scan_options)  # unknown options fail here, before any work
    report = progress or (lambda phase, done, total: None)
    started = time.perf_counter()
    summary = LabelSummary(new_run_id(), source, dest, opts.store or join(dest, "verdicts"))
    _check_apart(source, {"--out": dest, "--store": summary.store})
    VerdictStore(dest).check_writable()
    report("score", 0, None)
    scanned = _scan(source, summary.store, scan_options)
    report("score", scanned.rows, scanned.rows)
    items, inputs = _items(source, summary, scanned, scan_opts)
    summary.items = len(items)
    _label_dataset(items, inputs, summary, opts, scan_opts, report)
    summary.seconds = round(time.perf_counter() - started, 3)
    fs, root = get_fs(dest)
    record = {"summary": summary.to_dict(), "options": asdict(opts), "scan_options": scan_options}
    put_atomic(fs, join(root, SUMMARY), json.dumps(record, indent=2, default=str).encode())
    return summary


def _check_apart(source: str, outputs: dict[str, str]) -> None:
    """Outputs inside the source would be read back as input by the next run (shards labelled
    as images of the archive, verdict parts as Parquet tables)."""
    src_fs, src = get_fs(source)
    for option, uri in outputs.items():
        fs, path = get_fs(uri)
        if fs.protocol == src_fs.protocol and f"{path.rstrip('/')}/".startswith(
            f"{src.rstrip('/')}/"
        ):
            raise ScanError(f"{option} {uri} is inside SOURCE {source}; put it elsewhere")


def _scan(source: str, store: str, scan_options: dict) -> ScanSummary:
    from deepfake_scan.scanning import scan

    return scan(source, store, **scan_options)


def _items(source: str, summary: LabelSummary, scanned: ScanSummary, opts: ScanOptions):
    from deepfake_scan.models.artifact import read_card
    from deepfake_scan.sources import list_inputs

    card = read_card(opts.model)
    summary.model_id, summary.scan = scanned.model_id, scanned.to_dict()
    summary.threshold = card.threshold if opts.threshold is None else opts.threshold
    summary.review_band = tuple(card.review_band if opts.review_band is None else opts.review_band)
    inputs = {inp.uri: inp for inp in list_inputs(source, opts.manifest)}
    store = VerdictStore(summary.store)
    items = load_items(
        store, list(inputs.values()), card.name, summary.threshold, summary.review_band
    )
    return items, inputs


def _label_dataset(
    items: list[Item], inputs: dict, summary: LabelSummary, opts: LabelOptions, scan_opts, report
) -> None:
    read_options = {"image_column": scan_opts.image_column, "max_bytes": scan_opts.max_bytes}
    init_ray(scan_opts.address)  # the scan starts Ray only when it had something to score
    summary.images_read = inspect(
        items,
        inputs,
        summary.dest,
        opts.dedup == "near",
        {**read_options, "max_pixels": scan_opts.max_pixels},
        report,
    )
    state = ShardState(summary.dest)
    plan, sidecars = _plan(items, state, summary, opts)
    for shard in plan.remove:
        state.remove(shard)
    by_uri = {it.uri: it for it in items}
    written, changed = write_shards(
        plan, by_uri, inputs, sidecars, summary.dest, summary.run_id, read_options, report
    )
    _finish(items, plan, written, changed, summary, opts)


def _plan(
    items: list[Item], state: ShardState, summary: LabelSummary, opts: LabelOptions
) -> tuple[Plan, dict[str, bytes]]:
    """Flag duplicates, pick what goes into shards, and plan the shards against what exists."""
    dups.assign_groups(items, opts.dedup, opts.near_distance)
    records = state.records()
    sharded = {uri for rec in records for uri in rec.members}
    summary.duplicates = dups.choose_kept(items, opts.dedup, sharded)
    sidecars = {
        it.uri: sidecar(it, summary.threshold, summary.review_band)
        for it in items
        if not it.error and not (opts.keep_one and it.duplicate_of)
    }
    labels = {it.uri: it.label for it in items}
    wanted = {uri: (labels[uri], digest(side)) for uri, side in sidecars.items()}
    return plan_shards(wanted, records, state.tars(), opts.shard_size), sidecars


def _finish(items, plan: Plan, written, changed, summary: LabelSummary, opts) -> None:
    by_uri = {it.uri: it for it in items}
    shards = Counter()
    for rec in plan.keep + written:
        shards[rec.label] += 1
        for uri in rec.members:
            by_uri[uri].shard = rec.shard
    write_manifest(summary.dest, items, summary.threshold, opts.formats)
    summary.review = write_page(
        summary.dest, items, summary.store, summary.threshold, summary.review_band
    )
    summary.labels = dict(Counter(it.label for it in items))
    summary.corrected = sum(1 for it in items if it.reviewer)
    summary.in_shards = sum(1 for it in items if it.shard)
    summary.shards = {lab: shards[lab] for lab in LABELS}
    summary.shards_written, summary.shards_kept = len(written), len(plan.keep)
    summary.shards_removed = len(plan.remove)
    summary.exact_groups = len({it.exact_group for it in items if it.exact_group})
    summary.near_groups = len({it.near_group for it in items if it.near_group is not None})
    summary.dropped_duplicates = summary.duplicates if opts.keep_one else 0
    summary.changed = len(changed)
