"""A scan: list the source, read and decode on CPU tasks, score in an actor pool, commit verdicts.

The driver writes the (small) verdict rows itself, part by part, and commits as it goes, so a
crash loses at most the uncommitted tail and a rerun resumes where the last commit left off.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from deepfake_scan.decode import DEFAULT_MAX_PIXELS
from deepfake_scan.errors import ScanError
from deepfake_scan.faces import FaceGeometry, face_detector
from deepfake_scan.models.artifact import ModelCard, build_model, default_model_uri, read_model
from deepfake_scan.precision import check_precision
from deepfake_scan.sources import DEFAULT_MAX_BYTES, Input, list_inputs
from deepfake_scan.startup import collector_paused
from deepfake_scan.storage import set_s3_endpoint, storage_errors, worker_env
from deepfake_scan.store import VERDICT_SCHEMA, CommittedKeys, VerdictStore, new_run_id

log = logging.getLogger(__name__)
# Decoding at the model's input size is light, and what a decode task reserves is only Ray's
# bookkeeping: the task pool's size, not this, caps how many run. Ray Data grants an operator a
# share of the CPUs the actors leave; at 0.25 a task, only one of two decode tasks fit in that
# share on 2 cores and the actors waited for input (30,000 images: cores 1.8 busy, 112.7
# images/s; at 0.1, both tasks ran: 2.0 busy, 119.6). (Differing from the actors' request also
# keeps Ray from fusing decode into the actor pool, where it would serialise decoding with the
# model.)
DECODE_CPUS = 0.1
# torch.compile of a CPU actor's forward (--compile auto): 1.12-1.16x its rate, but each actor
# compiles first, 2-3.5 core-s with inductor's on-disk cache warm, ~20 s more on a machine's first
# scan. 3,000 photos on 2 cores (two actors), `python -m jobs.scan`: 29.7 s eager, 32.3 s compiled
# (warm), 48.7 s (cold); 30,000: 9 s faster compiled. Auto compiles where each actor has about
# as many images as pay for a warm compile.
COMPILE_MIN_IMAGES_PER_ACTOR = 2500
PHOTO_BYTES = 100_000  # a tar shard or Parquet file counts as its size over a typical photo's
COMPILE_CHOICES = ("auto", "on", "off")


@dataclass
class ScanOptions:
    model: str | None = None  # model directory or URI; None = the bundled default
    batch_size: int = 64  # images per batch to an actor (a CPU runs a few at a time)
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
    rescan_on_model_change: bool = False  # a new version or new weights of the model rescans
    run_id: str | None = None  # default: a new id; a retried job may pass its own
    manifest: str | None = None  # Parquet/CSV of URIs (or an S3 Inventory) instead of listing
    s3_endpoint: str | None = None  # S3-compatible store: sets AWS_ENDPOINT_URL_S3 (process-wide)
    faces: bool = False  # score each face (crops as the model card says) instead of whole images
    precision: str = "auto"  # the model's arithmetic: auto, fp32, bf16, fp16 (precision.PRECISIONS)
    compile: str = "auto"  # torch.compile the CPU actors' model: auto, on, off (compile_forward)


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
    compiled: int = 0  # images scored by a compiled model (--compile)
    seconds: float = 0.0
    started_at: str = ""
    ended_at: str = ""

    @property
    def images_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 2)}


def scan(source: str, out: str, **options: object) -> ScanSummary:
    """Scan ``source`` (folder, file or URI) into the verdict store ``out``.

    Incremental: inputs whose (uri, etag) already have a committed verdict from this model are
    skipped, so rerunning after a crash resumes, and a nightly run scans only what is new.
    """
    opts = ScanOptions(**options)
    try:
        check_precision(opts.precision)
    except ValueError as e:
        raise ScanError(str(e)) from None
    if opts.compile not in COMPILE_CHOICES:
        choices = ", ".join(COMPILE_CHOICES)
        raise ScanError(f"compile must be one of {choices}, not {opts.compile!r}")
    started = time.perf_counter()
    set_s3_endpoint(opts.s3_endpoint)
    # Fail fast, before any work: source, output and model are checked before anything is read.
    inputs = list_inputs(source, opts.manifest)  # checked now, streamed when consumed
    store = VerdictStore(out)
    store.check_writable()
    with storage_errors("model not readable", opts.model or "bundled model"):
        card, weights = read_model(opts.model)  # the model id; build_model below checks the rest
    if opts.faces:
        try:  # a face search that cannot run would make every image an error row
            face_detector(card.face_geometry or FaceGeometry())
        except RuntimeError as e:
            raise ScanError(f"--faces: {e}") from None
        if card.face_geometry is None:
            log.warning(
                "%s was not trained on face crops; --faces crops with the default geometry %s",
                card.model_id,
                FaceGeometry(),
            )
    summary = ScanSummary(
        opts.run_id or new_run_id(),
        source,
        out,
        card.model_id,
        started_at=datetime.now(timezone.utc).isoformat(),
    )
    # The model's build checks that the weights fit before anything is read. It imports torch
    # (1 s here, 2.5-4 s on a GPU machine), so where the scan starts its own Ray it runs beside
    # the listing and ray.init. Connecting to a cluster is quick, and in a Ray job it replaces
    # the driver's working directory under anything running beside it (torch's import then
    # failed in os.getcwd()): there the build comes first. Start-up makes objects that live as
    # long as the process: no collections while it runs (deepfake_scan.startup).
    with ThreadPoolExecutor(1) as pool, collector_paused():
        built = pool.submit(build_model, card, weights, opts.model or default_model_uri())
        if _ray_address(opts.address):
            built.result()
        # --full scores everything again, but still never commits one key twice within this
        # run or against a scan running at the same time: only commits from now on count.
        keys = CommittedKeys(
            store,
            by_model_id=opts.rescan_on_model_change,
            since=store.last_number() if opts.full else -1,
        )
        keys.refresh()
        items, summary.skipped = _work_items(inputs, keys, keys.model_key(card.model_id))
        summary.inputs = len(items) + summary.skipped
        if items:
            init_ray(opts.address)
        built.result()  # a ModelError (a ScanError) if the weights do not fit
    if items:
        batches = _dataset(items, card, opts, summary.run_id).iter_batches(
            batch_size=None, batch_format="numpy"
        )
        _write(store, keys, summary, batches, opts)
    summary.seconds = time.perf_counter() - started
    summary.ended_at = datetime.now(timezone.utc).isoformat()
    store.commit(summary.run_id, files=[], rows=0, final=True, **_record(summary))
    return summary


def _record(summary: ScanSummary) -> dict:
    return {"source": summary.source, "model_id": summary.model_id, "summary": summary.to_dict()}


def _work_items(
    inputs: Iterable[Input], keys: CommittedKeys, model_key: str
) -> tuple[list[dict], int]:
    """The inputs still to read; container members already committed are listed as done."""
    members: dict[tuple[str, str], list[str]] = defaultdict(list)
    for uri, etag, mk in keys.keys:
        if mk == model_key and "#" in uri:
            members[(uri.split("#", 1)[0], etag)].append(uri)
    items, skipped = [], 0
    for inp in inputs:
        done = members.get((inp.uri, inp.etag), [])
        if inp.kind == "file" and (inp.uri, inp.etag, model_key) in keys.keys:
            skipped += 1
            continue
        items.append(
            {"uri": inp.uri, "kind": inp.kind, "size": inp.size, "etag": inp.etag, "done": done}
        )
    return items, skipped


def init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    ray.init(
        address=_ray_address(address),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    # Ray's own exit handler sleeps 0.5 s first so that workers' last log lines print; none are
    # forwarded here. Registered after it, this runs first and ends the session without the wait
    # (once, however many sessions this process starts).
    atexit.unregister(_end_ray)
    atexit.register(_end_ray)


def _ray_address(address: str | None) -> str | None:
    """The cluster a scan connects to; None: it starts a local Ray of its own."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _end_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def actor_resources(opts: ScanOptions) -> tuple[int, dict]:
    """Actor count and per-actor resources, sized from the cluster so decode tasks keep CPUs."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = int(res.get("CPU", 1)), int(res.get("GPU", 0))
    # One actor lives on one node: never ask for more CPUs than the largest node has.
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1)
    num_gpus = opts.num_gpus if opts.num_gpus is not None else (1.0 if gpus else 0.0)
    # Decode tasks at a time. Each task needs its own worker process, and a burst of them
    # starting at once held the actor's start back by ~10 s on 2 cores (first scored batch 26 s
    # -> 16 s after launch when capped at 2 here). Where decoding is the limit (beside a GPU, or
    # with a face search), every core but one decodes.
    all_but_one = max(2, cpus - 1)
    if num_gpus > 0:
        n = opts.concurrency or max(1, int(gpus // num_gpus))
        res = {"num_gpus": num_gpus, "num_cpus": 1, "threads": 2, "decode_tasks": all_but_one}
        return n, res
    # CPU only: the model is the expensive step, but actors holding every CPU starve the decode
    # tasks and the pipeline stalls (measured here on 2 cores). A scan's actors together reserve
    # half of what the decoders leave, so a second scan on the same cluster still finds room
    # (with a floor of 0.5 CPU per actor, two scans of two actors held all 2 CPUs and both
    # hung); their torch threads, not the reservation, decide how many cores they really use.
    # One actor per core, each with one torch thread: a forward of a few images splits poorly
    # over threads, and a threaded actor sharing its cores with decode tasks left them idle
    # (6,000-image scan here: one actor of 2 threads 78 images/s, cores 1.6 busy; two of one
    # thread 105, cores 2.0).
    n = opts.concurrency or cpus
    decode_cpus = max(1, cpus // 4)
    share = max(0.01, min((cpus - decode_cpus) / n / 2, node_cpus / 2))
    threads = max(1, min(math.ceil(cpus / n), int(node_cpus)))
    # Decode tasks: one per three cores. A task decodes about four times what a one-thread actor
    # scores, and fewer busy processes take fewer turns on the cores (3,000 images on 2 cores:
    # two tasks 84 images/s, one 94). A face search costs about as much as the forward.
    decode_tasks = all_but_one if opts.faces else math.ceil(cpus / 3)
    return n, {"num_gpus": 0, "num_cpus": share, "threads": threads, "decode_tasks": decode_tasks}


def compile_forward(choice: str, items: list[dict], n_actors: int, on_gpu: bool) -> bool:
    """Whether the scan's actors compile their model: ``on``, or ``auto`` where the images (plain
    files, and containers counted by size) come to ``COMPILE_MIN_IMAGES_PER_ACTOR`` an actor;
    never on a GPU, where it is not measured."""
    if on_gpu or choice == "off":
        return False
    if choice == "on":
        return True
    images = sum(1 if it["kind"] == "file" else max(1, it["size"] // PHOTO_BYTES) for it in items)
    return images >= COMPILE_MIN_IMAGES_PER_ACTOR * n_actors


def object_store_budget(batch_size: int, card: ModelCard, n_actors: int, res: dict) -> int:
    """Bytes of decoded batches the scan may hold in the object store: eight batches for each
    decode task and actor, at least 256 MiB."""
    batch_bytes = batch_size * card.preprocessing.input_size**2 * 3
    return max(256 * 2**20, 8 * batch_bytes * (res["decode_tasks"] + n_actors))


def input_dataset(items: list[dict], n_actors: int, files_per_block: int, decode_tasks: int):
    """Listed inputs as a Ray Dataset of ``block_count`` blocks."""
    import ray

    blocks = block_count(items, n_actors, files_per_block, decode_tasks)
    return ray.data.from_items(items, override_num_blocks=blocks)


def block_count(items: list[dict], n_actors: int, files_per_block: int, decode_tasks: int) -> int:
    """Each container (tar, Parquet) may get a block of its own, plain files go
    ``files_per_block`` to a block, and there are enough blocks to feed the actors and to give
    every decode task one (a small scan beside a GPU: 1,000 files made 8 blocks for 15 tasks)."""
    containers = sum(1 for it in items if it["kind"] != "file")
    files = math.ceil(len(items) / files_per_block)
    return max(1, min(len(items), max(containers, files, 2 * n_actors, decode_tasks)))


def worker_env_args() -> dict:
    """Remote args giving workers on other nodes the driver's S3 endpoint and checksum settings
    (never secrets)."""
    env = worker_env()
    return {"runtime_env": {"env_vars": env}} if env else {}


def _dataset(items: list[dict], card: ModelCard, opts: ScanOptions, run_id: str):
    import ray

    from deepfake_scan.pipeline import Scorer, read_decode

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # Ray Data warns every 30 s when an actor uses more memory than a share of the node per CPU it
    # reserves; the actors reserve a fraction of a CPU (actor_resources), so a compiled model
    # (~650 MiB an actor on 2 cores) set it off all scan long. The object store is budgeted below.
    ctx.issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1
    n_actors, res = actor_resources(opts)
    env = worker_env_args()
    geometry = (card.face_geometry or FaceGeometry()) if opts.faces else None
    # A decode task reads two model batches of files (at least 32) and yields them one model
    # batch at a time. Fewer, longer tasks: each task's start costs every process involved.
    # 6,000-image scan, one batch of files per task against 32 files: 116-124 -> 130-133 images/s;
    # 3,000-image scan (`python -m jobs.scan`, runs alternating), two batches against one: 30.8 s
    # mean of six against 31.8 of three; four batches 31.4, eight 46 (too few tasks to share).
    files_per_block = max(32, 2 * opts.batch_size)
    ds = input_dataset(items, n_actors, files_per_block, res["decode_tasks"]).map_batches(
        read_decode,
        batch_size=None,
        compute=ray.data.TaskPoolStrategy(size=res["decode_tasks"]),
        num_cpus=DECODE_CPUS,
        **env,
        fn_kwargs={
            "preprocessing": card.preprocessing.to_dict(),
            "rows_per_batch": opts.batch_size,
            "image_column": opts.image_column,
            "key_column": opts.key_column,
            "max_pixels": opts.max_pixels,
            "max_bytes": opts.max_bytes,
            "faces": geometry.to_dict() if geometry else None,
        },
    )
    # Decoding outruns a CPU model: without a budget its output queues in the object store and
    # memory grows with the archive (proportional memory of all processes +18 % for 10x the
    # images here; +8 % with this budget, and no slower). This dataset's own context: a copy.
    options = ds.context.execution_options
    options.resource_limits = options.resource_limits.copy(
        object_store_memory=object_store_budget(opts.batch_size, card, n_actors, res)
    )
    return ds.map_batches(
        Scorer,
        batch_size=opts.batch_size,
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=res["num_cpus"],
        num_gpus=res["num_gpus"],
        **env,
        fn_constructor_kwargs={
            "model": opts.model,
            "threshold": opts.threshold,
            "review_band": opts.review_band,
            "run_id": run_id,
            "num_threads": res["threads"],
            "batch_size": opts.batch_size,
            "precision": opts.precision,
            "compile": compile_forward(opts.compile, items, n_actors, res["num_gpus"] > 0),
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
        elif f.name == "faces":  # JSON between stages
            values = pa.array([json.loads(v) if _str_or_none(v) else None for v in values], f.type)
        else:
            values = pa.array([_str_or_none(v) for v in values], f.type)
        cols[f.name] = values
    return pa.table(cols, schema=VERDICT_SCHEMA)


def _str_or_none(v: object) -> str | None:
    # Between stages "" stands for null (and Ray may hand back an all-null column as NaNs).
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


def _write(
    store: VerdictStore, keys: CommittedKeys, summary: ScanSummary, batches, opts: ScanOptions
) -> None:
    """Commit verdicts as they arrive: every ``commit_every`` rows or ``commit_seconds``."""
    pending: list[pa.Table] = []
    rows, seq, last = 0, 0, time.monotonic()
    for batch in batches:
        summary.compiled += int(batch["compiled"].sum())
        pending.append(verdict_table(batch))
        rows += pending[-1].num_rows
        if rows >= opts.commit_every or time.monotonic() - last > opts.commit_seconds:
            _flush(store, keys, summary, seq, pending)
            pending, rows, seq, last = [], 0, seq + 1, time.monotonic()
    if pending:
        _flush(store, keys, summary, seq, pending)


def _flush(
    store: VerdictStore,
    keys: CommittedKeys,
    summary: ScanSummary,
    seq: int,
    pending: list[pa.Table],
) -> None:
    try:
        committed = store.commit_rows(
            summary.run_id,
            seq,
            pa.concat_tables(pending),
            keys,
            source=summary.source,
            model_id=summary.model_id,
        )
    except OSError as e:
        raise ScanError(
            f"cannot write verdicts to {summary.out}: {type(e).__name__}: {e}; "
            f"{summary.rows} verdicts were committed before this; rerun to resume"
        ) from e
    summary.rows += committed.num_rows
    summary.labels = dict(Counter(summary.labels) + Counter(committed["label"].to_pylist()))
    codes = (e.split(":", 1)[0] for e in committed["error"].to_pylist() if e)
    summary.errors = dict(Counter(summary.errors) + Counter(codes))
