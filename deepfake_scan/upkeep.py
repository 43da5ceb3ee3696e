"""Store upkeep: ``gc`` removes what no commit references; ``compact`` merges small parts.

Both leave what readers see unchanged: ``gc`` only touches files no commit makes visible (after a
grace period, so a scan still writing is never robbed of its part), and ``compact`` swaps parts
for merged copies in one new commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from deepfake_scan.errors import ScanError
from deepfake_scan.storage import join
from deepfake_scan.store import COMMITS, DATA, VerdictStore, new_run_id


@dataclass
class GcResult:
    removed: list[str]
    kept: int


def gc(out: str, grace_seconds: float = 3600.0) -> GcResult:
    """Delete parts no commit makes visible (crash leftovers, compacted parts), and torn
    temporary commit files, once they are older than ``grace_seconds``."""
    store = VerdictStore(out)
    visible = set(store.committed_files())
    candidates = _files(store, DATA) + [p for p in _files(store, COMMITS) if ".tmp-" in p]
    now, removed = time.time(), []
    for path in candidates:
        if path in visible or now - _mtime(store, path) < grace_seconds:
            continue
        store.fs.rm_file(path)
        removed.append(path)
    return GcResult(removed, len(visible))


def _files(store: VerdictStore, sub: str) -> list[str]:
    try:
        return [p for p in store.fs.find(join(store.root, sub)) if not p.endswith("/")]
    except FileNotFoundError:
        return []


def _mtime(store: VerdictStore, path: str) -> float:
    return store.fs.modified(path).timestamp()


@dataclass
class CompactResult:
    merged: int  # parts replaced
    written: int  # parts written
    rows: int


def compact(out: str, target_rows: int = 1_000_000) -> CompactResult:
    """Merge committed parts smaller than ``target_rows`` into parts of about that size."""
    store = VerdictStore(out)
    commits = store.commits()
    snapshot = commits[-1].number if commits else -1
    small = [p for p in store.committed_files(commits) if _rows(store, p) < target_rows]
    if len(small) < 2:
        return CompactResult(0, 0, 0)
    run_id = f"compact-{new_run_id()}"
    written, rows, buffer = [], 0, []
    for path in small:
        with store.fs.open(path, "rb") as f:
            buffer.append(pq.read_table(f))
        if sum(t.num_rows for t in buffer) >= target_rows:
            written.append(store.write_part(run_id, len(written), pa.concat_tables(buffer)))
            rows, buffer = rows + sum(t.num_rows for t in buffer), []
    if buffer:
        written.append(store.write_part(run_id, len(written), pa.concat_tables(buffer)))
        rows += sum(t.num_rows for t in buffer)
    root = store.root.rstrip("/") + "/"
    replaced = [p[len(root) :] for p in small]
    if not store.commit_at(
        snapshot + 1, run_id, written, rows, replaces=replaced, kind="compaction"
    ):
        for rel in written:  # someone committed meanwhile: leave the store as it was
            store.fs.rm_file(join(store.root, rel))
        raise ScanError(f"{out} changed during compaction; nothing was changed, run it again")
    return CompactResult(len(small), len(written), rows)


def _rows(store: VerdictStore, path: str) -> int:
    with store.fs.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows
