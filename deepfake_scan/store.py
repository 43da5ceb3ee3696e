"""The verdict store: Parquet parts, then commit records. Only committed parts are visible.

Layout under ``OUT`` (local path or URI)::

    data/<run_id>/part-000000.parquet      verdict rows (written first)
    _commits/<run_id>-000000.json          commit record: names the parts it makes visible

A commit record is one small object written in one PUT (S3) or one rename (local), so a reader
sees a part either fully committed or not at all. Parts without a record (a crash between the
part and its record) are invisible to readers.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from deepfake_scan.errors import ScanError
from deepfake_scan.storage import get_fs, join

VERDICT_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("source_etag", pa.string()),
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("score", pa.float32()),
        ("label", pa.string()),
        ("error", pa.string()),
        ("model_id", pa.string()),
        ("run_id", pa.string()),
        ("scanned_at", pa.timestamp("us", tz="UTC")),
        ("key", pa.string()),  # the Parquet source's key column, when one was named
    ]
)
COMMITS = "_commits"
DATA = "data"


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass
class Commit:
    run_id: str
    seq: int
    files: list[str]  # relative to the store root
    rows: int
    final: bool
    record: dict


class VerdictStore:
    def __init__(self, out: str):
        self.out = out
        self.fs, self.root = get_fs(out)

    # -- writing ---------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail fast, before any work, when the store cannot be written."""
        probe = join(self.root, f".probe-{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(probe, b"ok")
            self.fs.rm_file(probe)
        except Exception as e:
            raise ScanError(f"output not writable: {self.out}: {type(e).__name__}: {e}") from None

    def write_part(self, run_id: str, seq: int, table: pa.Table) -> str:
        rel = f"{DATA}/{run_id}/part-{seq:06d}.parquet"
        path = join(self.root, rel)
        self.fs.makedirs(join(self.root, DATA, run_id), exist_ok=True)
        with self.fs.open(path, "wb") as f:
            pq.write_table(table.cast(VERDICT_SCHEMA), f, compression="zstd")
        return rel

    def commit(
        self, run_id: str, seq: int, files: list[str], rows: int, final: bool, **record: object
    ) -> None:
        body = {
            "run_id": run_id,
            "seq": seq,
            "files": files,
            "rows": rows,
            "final": final,
            "committed_at": datetime.now(timezone.utc).isoformat(),
            **record,
        }
        blob = json.dumps(body, indent=1, default=str).encode()
        name = join(self.root, COMMITS, f"{run_id}-{seq:06d}.json")
        self.fs.makedirs(join(self.root, COMMITS), exist_ok=True)
        if _is_local(self.fs):
            tmp = f"{name}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name)
        else:
            self.fs.pipe_file(name, blob)  # one PUT: atomic on object stores

    # -- reading ---------------------------------------------------------------------------
    def commits(self) -> list[Commit]:
        pattern = join(self.root, COMMITS, "*.json")
        try:
            names = sorted(self.fs.glob(pattern))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            try:
                rec = json.loads(self.fs.cat_file(name))
                out.append(
                    Commit(
                        rec["run_id"],
                        int(rec["seq"]),
                        list(rec["files"]),
                        int(rec["rows"]),
                        bool(rec["final"]),
                        rec,
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue  # not a commit record we wrote; never half of one (atomic writes)
        out.sort(key=lambda c: (c.record.get("committed_at", ""), c.run_id, c.seq))
        return out

    def committed_files(self) -> list[str]:
        files = []
        for c in self.commits():
            files.extend(join(self.root, f) for f in c.files)
        return list(dict.fromkeys(files))

    def read(self, all_runs: bool = False, columns: list[str] | None = None) -> pa.Table:
        tables = []
        for path in self.committed_files():
            with self.fs.open(path, "rb") as f:
                tables.append(pq.read_table(f, columns=columns))
        schema = (
            VERDICT_SCHEMA
            if columns is None
            else pa.schema([VERDICT_SCHEMA.field(c) for c in columns])
        )
        if not tables:
            return schema.empty_table()
        table = pa.concat_tables(tables, promote_options="permissive")
        return table if all_runs else latest_per_uri(table)


def latest_per_uri(table: pa.Table) -> pa.Table:
    """The newest row for each uri (by scanned_at; later commits win ties)."""
    if table.num_rows == 0:
        return table
    indexed = table.append_column("__i", pa.array(range(table.num_rows), pa.int64()))
    ordered = indexed.sort_by([("scanned_at", "ascending"), ("__i", "ascending")])
    ordered = ordered.append_column("__o", pa.array(range(ordered.num_rows), pa.int64()))
    keep = ordered.group_by("uri", use_threads=False).aggregate([("__o", "max")])
    rows = ordered.take(keep.column("__o_max")).sort_by("__o")
    return rows.drop_columns(["__i", "__o"])


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def read_verdicts(out: str, all_runs: bool = False) -> pa.Table:
    """Committed verdicts in ``out``: the latest per uri, or every committed row (``all_runs``)."""
    return VerdictStore(out).read(all_runs=all_runs)
