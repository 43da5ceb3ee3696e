"""Writing WebDataset shards: ``DEST/<label>/<label>-NNNNNN.tar``, each sample a pair of
members ``<key>.<ext>`` (the original image bytes, untouched) and ``<key>.json`` (the sidecar).

The write pass is a Ray Data job: tasks stream each source input once and emit the wanted
samples, a groupby on the planned shard brings each shard's samples together, and one task per
shard writes the tar, then its completion record. A crash leaves complete shards with records
(kept by the rerun) and at worst an unrecorded tar (removed by the rerun).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from deepfake_scan.label.files import put_atomic, write_atomic
from deepfake_scan.label.items import LABELS, Item
from deepfake_scan.label.plan import Plan, ShardRecord
from deepfake_scan.label.reading import (
    DECODE_CPUS,
    remote_env,
    rows_of,
    unit_dataset,
    unit_records,
    work_units,
)
from deepfake_scan.sources import Input
from deepfake_scan.storage import get_fs, join

RECORDS = "_state/shards"


def record_path(shard: str) -> str:
    return f"{RECORDS}/{shard.rsplit('/', 1)[-1].removesuffix('.tar')}.json"


class ShardState:
    """The shards and completion records under DEST."""

    def __init__(self, dest: str):
        self.fs, self.root = get_fs(dest)

    def records(self) -> list[ShardRecord]:
        out = []
        for path in self._glob(f"{RECORDS}/*.json"):
            try:
                out.append(ShardRecord.from_json(self.fs.cat_file(path)))
            except (ValueError, KeyError, TypeError):
                continue  # not ours (ours are written whole): its shard counts as unrecorded
        return out

    def tars(self) -> set[str]:
        prefix = self.root.rstrip("/") + "/"
        found = set()
        for label in LABELS:
            found.update(p[len(prefix) :] for p in self._glob(f"{label}/*.tar"))
        return found

    def remove(self, shard: str) -> None:
        """Record first: a crash in between leaves an unrecorded tar, which is removed later."""
        for rel in (record_path(shard), shard):
            path = join(self.root, rel)
            if self.fs.exists(path):
                self.fs.rm_file(path)

    def _glob(self, pattern: str) -> list[str]:
        try:
            return sorted(self.fs.glob(join(self.root, pattern)))
        except FileNotFoundError:
            return []


def tar_samples(f, samples: list[tuple[str, str, bytes, bytes]]) -> None:
    """Write (key, ext, image bytes, sidecar) samples as a tar, in key order. Fixed mtime and
    owner, so the same samples always make the same bytes."""
    with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, ext, data, side in sorted(samples, key=lambda s: s[0]):
            for name, blob in ((f"{key}.{ext}", data), (f"{key}.json", side)):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(blob), 0o644, 0
                tar.addfile(info, io.BytesIO(blob))


def read_step(
    batch: dict[str, np.ndarray], image_column: str = "image", max_bytes: int = 256 * 1024 * 1024
) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data step over work units: one row per wanted record with its bytes. A record whose
    bytes no longer match the scored sha256 is flagged ``changed`` and carries none."""
    out: dict[str, list] = {k: [] for k in ("shard", "uri", "key", "ext", "data", "sidecar")}
    out["changed"] = []
    for unit in rows_of(batch):
        for rec, meta in unit_records(unit, image_column, max_bytes):
            data = rec.data if rec.data is not None else b""
            changed = rec.data is None or hashlib.sha256(data).hexdigest() != meta["sha256"]
            for k in ("shard", "key", "ext", "sidecar"):
                out[k].append(meta[k])
            out["uri"].append(rec.uri)
            out["data"].append(b"" if changed else data)
            out["changed"].append(changed)
            if len(out["uri"]) >= 64:
                yield _arrays(out)
                out = {k: [] for k in out}
    if out["uri"]:
        yield _arrays(out)


def _arrays(out: dict[str, list]) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=bool if k == "changed" else object) for k, v in out.items()}


def write_step(group: dict[str, np.ndarray], dest: str, run_id: str) -> dict[str, np.ndarray]:
    """Ray Data step over one shard's samples: writes the tar, then its completion record."""
    shard = str(group["shard"][0])
    label, number = shard.split("/", 1)[0], int(shard.rsplit("-", 1)[1][:-4])
    samples, members, changed = [], {}, []
    for row in rows_of(group):
        if row["changed"]:
            changed.append(str(row["uri"]))
            continue
        side = str(row["sidecar"]).encode()
        samples.append((str(row["key"]), str(row["ext"]), bytes(row["data"]), side))
        members[str(row["uri"])] = hashlib.sha256(side).hexdigest()
    record = ShardRecord(shard, label, number, members, run_id)
    if samples:
        fs, root = get_fs(dest)
        write_atomic(fs, join(root, shard), lambda f: tar_samples(f, samples))
        put_atomic(fs, join(root, record_path(shard)), record.to_json())
    return {
        "shard": np.array([shard], dtype=object),
        "record": np.array([record.to_json().decode() if samples else ""], dtype=object),
        "changed": np.array([json.dumps(changed)], dtype=object),
    }


def write_shards(
    plan: Plan,
    items: dict[str, Item],
    inputs: dict[str, Input],
    sidecars: dict[str, bytes],
    dest: str,
    run_id: str,
    read_options: dict,
    report: Callable[[str, int, int | None], None],
) -> tuple[list[ShardRecord], list[str]]:
    """Write the plan's new shards; returns their records and the uris found changed."""
    report("write", 0, len(plan.new))
    if not plan.new:
        return [], []
    meta = {
        uri: {
            "shard": shard,
            "key": items[uri].key,
            "ext": items[uri].ext,
            "sha256": items[uri].sha256,
            "sidecar": sidecars[uri].decode(),
        }
        for shard, uris in plan.new.items()
        for uri in uris
    }
    units = work_units([items[u] for u in meta], inputs, lambda it: meta[it.uri])
    with _sort_shuffle():
        ds = unit_dataset(units, read_step, read_options)
        # One shuffle partition per shard up to Ray's usual 200: a handful of shards must not
        # pay for 200 partitions, and many shards share partitions (each group is its own call).
        ds = ds.groupby("shard", num_partitions=min(len(plan.new), 200)).map_groups(
            write_step,
            batch_format="numpy",
            num_cpus=DECODE_CPUS,
            fn_kwargs={"dest": dest, "run_id": run_id},
            **remote_env(),
        )
        return _collect(ds, len(plan.new), report)


@contextmanager
def _sort_shuffle() -> Iterator[None]:
    """The sort-based shuffle for the groupby: it needs no aggregator actors, which made a
    few-shard write take 10x longer to start. Set for this job only, then restored."""
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    ctx = DataContext.get_current()
    saved, ctx.shuffle_strategy = ctx.shuffle_strategy, ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        ctx.shuffle_strategy = saved


def _collect(ds, total: int, report) -> tuple[list[ShardRecord], list[str]]:
    records, changed = [], []
    for done, row in enumerate(ds.iter_rows(), start=1):
        if row["record"]:
            records.append(ShardRecord.from_json(row["record"].encode()))
        changed += json.loads(row["changed"])
        report("write", done, total)
    return records, changed
