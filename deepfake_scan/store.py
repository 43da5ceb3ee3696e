"""The verdict store: Parquet parts, then commit records. Only committed parts are visible.

Layout under ``OUT`` (local path or URI)::

    data/<run_id>/part-000000.parquet      verdict rows (written first)
    _commits/000000000042.json             commit 42: names the parts it makes visible

Commits are numbered. A writer claims the next number with a create-if-absent write (``O_EXCL``
link locally, ``If-None-Match: *`` on S3), so two writers can never both make commit 42: the
loser re-reads what the winner committed, drops rows that are now duplicates, and tries 43. This
optimistic protocol is what makes verdicts exactly-once, whatever Ray retries or whoever else
writes the store at the same time. A part without a commit (a crash between the part and its
commit) is invisible to readers and removed by ``gc``.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from deepfake_scan.errors import ScanError
from deepfake_scan.storage import (
    describe_error,
    error_code,
    get_fs,
    is_local,
    is_storage_error,
    join,
    redact,
)

FACE_TYPE = pa.struct(
    [
        ("x", pa.int32()),
        ("y", pa.int32()),
        ("w", pa.int32()),
        ("h", pa.int32()),
        ("confidence", pa.float32()),
        ("score", pa.float32()),
        ("label", pa.string()),
    ]
)
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
        # Scans with --faces: every face found (box in the image's pixels, the face detector's
        # confidence, the model's score and label); [] = none found; null = not searched.
        ("faces", pa.list_(FACE_TYPE)),
    ]
)
COMMITS = "_commits"
DATA = "data"
MAX_COMMIT_TRIES = 100
# Answers of stores that do not do conditional writes (older MinIO, Ceph RGW, ...).
CONDITIONAL_UNSUPPORTED = {"NotImplemented", "501", "InvalidArgument", "InvalidRequest"}
log = logging.getLogger(__name__)


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass
class Commit:
    number: int
    run_id: str
    files: list[str]  # parts made visible, relative to the store root
    rows: int
    final: bool
    replaces: list[str] = field(default_factory=list)  # parts hidden from now on (compaction)
    record: dict = field(default_factory=dict)


class VerdictStore:
    # Commits claim names with If-None-Match: * ; False where the store ignores or rejects it.
    conditional_writes = True

    def __init__(self, out: str):
        self.out = out
        self.fs, self.root = get_fs(out)

    # -- writing ---------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail fast, before any work, when the store cannot be written; and find out whether an
        object store honours ``If-None-Match: *`` (some S3-compatible stores ignore it)."""
        probe = join(self.root, f".probe-{uuid.uuid4().hex}")
        try:
            if is_local(self.fs):  # (on S3 this would create a missing bucket: never)
                self.fs.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(probe, b"ok")
            if not is_local(self.fs):
                self.conditional_writes = self._honours_if_none_match(probe)
        except Exception as e:
            if not is_storage_error(e):
                raise
            why = describe_error(e)
            raise ScanError(f"output not writable: {redact(self.out)}: {why}") from None
        finally:
            try:
                self.fs.rm_file(probe)
            except Exception:  # a leftover probe is harmless; that writing works is what counts
                pass

    def _honours_if_none_match(self, existing: str) -> bool:
        try:
            self.fs.pipe_file(existing, b"again", mode="create")
        except FileExistsError:
            return True
        except OSError as e:
            if _lost_race(e):
                return True
            if error_code(e) in CONDITIONAL_UNSUPPORTED:
                return False
            raise
        log.warning("%s ignores If-None-Match: commit records get unique names", redact(self.out))
        return False

    def write_part(self, run_id: str, seq: int, table: pa.Table) -> str:
        """Write rows to a new part (invisible until committed); returns its relative path."""
        rel = f"{DATA}/{run_id}/part-{seq:06d}-{uuid.uuid4().hex[:6]}.parquet"
        self.fs.makedirs(join(self.root, DATA, run_id), exist_ok=True)
        with self.fs.open(join(self.root, rel), "wb") as f:
            pq.write_table(conform(table, VERDICT_SCHEMA), f, compression="zstd")
        return rel

    def commit(
        self, run_id: str, files: list[str], rows: int, final: bool, **record: object
    ) -> Commit:
        """Claim the next commit number for ``files`` (retrying on a lost race)."""
        for _ in range(MAX_COMMIT_TRIES):
            commit = self.commit_at(self.last_number() + 1, run_id, files, rows, final, **record)
            if commit:
                return commit
        raise ScanError(f"could not commit to {self.out}: {MAX_COMMIT_TRIES} lost races")

    def commit_at(
        self,
        number: int,
        run_id: str,
        files: list[str],
        rows: int,
        final: bool = True,
        replaces: list[str] | None = None,
        **record: object,
    ) -> Commit | None:
        """Commit as exactly ``number``; None if that number is taken."""
        body = {
            "number": number,
            "run_id": run_id,
            "files": files,
            "rows": rows,
            "final": final,
            "replaces": replaces or [],
            "committed_at": datetime.now(timezone.utc).isoformat(),
            **record,
        }
        if self._create(self._commit_path(number), json.dumps(body, default=str).encode()):
            return _parse(body)
        return None

    def commit_rows(
        self, run_id: str, seq: int, table: pa.Table, keys: CommittedKeys, **record: object
    ) -> pa.Table:
        """Commit ``table`` as one part, exactly once per key: rows whose key another commit
        already holds are dropped, before the first try and again after every lost race.
        Returns the rows committed (possibly none)."""
        keys.refresh()
        for _ in range(MAX_COMMIT_TRIES):
            table = keys.new_rows(table)
            if table.num_rows == 0:
                return table
            part = self.write_part(run_id, seq, table)
            if self.commit_at(keys.known + 1, run_id, [part], table.num_rows, False, **record):
                keys.add(table, keys.known + 1)
                return table
            self.fs.rm_file(join(self.root, part))  # lost the race for this number
            keys.refresh()
        raise ScanError(f"could not commit to {self.out}: {MAX_COMMIT_TRIES} lost races")

    def _commit_path(self, number: int) -> str:
        return join(self.root, COMMITS, f"{number:012d}.json")

    def _create(self, path: str, blob: bytes) -> bool:
        """Write ``path`` only if it does not exist; False if someone else has it."""
        self.fs.makedirs(join(self.root, COMMITS), exist_ok=True)
        if _is_local(self.fs):
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and fails if the name is taken
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        if not self.conditional_writes:  # a unique name instead: still never overwrites
            self.fs.pipe_file(f"{path.removesuffix('.json')}-{uuid.uuid4().hex[:8]}.json", blob)
            return True
        try:
            self.fs.pipe_file(path, blob, mode="create")  # one PUT with If-None-Match: *
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if _lost_race(e):
                return False
            if error_code(e) in CONDITIONAL_UNSUPPORTED:
                self.conditional_writes = False
                return self._create(path, blob)
            raise

    # -- reading ---------------------------------------------------------------------------
    def last_number(self) -> int:
        names = self._commit_names()
        return int(names[-1].rsplit("/", 1)[-1][:12]) if names else -1

    def _commit_names(self) -> list[str]:
        try:
            names = self.fs.glob(join(self.root, COMMITS, "*.json"))
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.rsplit("/", 1)[-1][:12].isdigit())

    def commits(self, after: int | None = -1) -> list[Commit]:
        """Commit records in order; ``after``: only those numbered higher."""
        out = []
        for name in self._commit_names():
            number = int(name.rsplit("/", 1)[-1][:12])
            if after is not None and number <= after:
                continue
            try:
                out.append(_parse(json.loads(self.fs.cat_file(name))))
            except (ValueError, KeyError, TypeError):
                continue  # not a record we wrote (ours are written whole, never torn)
        return out

    def committed_files(self, commits: list[Commit] | None = None) -> list[str]:
        """Visible parts: committed, and not replaced by a later compaction."""
        commits = self.commits() if commits is None else commits
        files: dict[str, None] = {}
        for c in commits:
            for f in c.replaces:
                files.pop(join(self.root, f), None)
            files.update(dict.fromkeys(join(self.root, f) for f in c.files))
        return list(files)

    def read(
        self,
        all_runs: bool = False,
        columns: list[str] | None = None,
        commits: list[Commit] | None = None,
    ) -> pa.Table:
        tables = []
        for path in self.committed_files(commits):
            with self.fs.open(path, "rb") as f:
                tables.append(pq.read_table(f, columns=columns))
        schema = (
            VERDICT_SCHEMA
            if columns is None
            else pa.schema([VERDICT_SCHEMA.field(c) for c in columns])
        )
        if not tables:
            return schema.empty_table()
        table = conform(pa.concat_tables(tables, promote_options="permissive"), schema)
        return table if all_runs else latest_per_uri(table)


class CommittedKeys:
    """The (uri, source_etag, model key) of every committed verdict, kept current commit by
    commit. The model key is the model's name, or its full id to rescan on any model change."""

    def __init__(self, store: VerdictStore, by_model_id: bool = False, since: int = -1):
        self.store, self.by_model_id = store, by_model_id
        self.keys: set[tuple[str, str, str]] = set()
        self.known = since  # highest commit number absorbed

    def model_key(self, model_id: str) -> str:
        return model_id if self.by_model_id else model_id.split("@", 1)[0]

    def refresh(self) -> None:
        newer = self.store.commits(after=self.known)
        if not newer:
            return
        cols = ["uri", "source_etag", "model_id"]
        table = self.store.read(all_runs=True, columns=cols, commits=newer)
        self.add(table, max(c.number for c in newer))

    def add(self, table: pa.Table, number: int) -> None:
        self.keys.update(self._keys(table))
        self.known = max(self.known, number)

    def _keys(self, table: pa.Table) -> list[tuple[str, str, str]]:
        models = [self.model_key(m or "") for m in table["model_id"].to_pylist()]
        etags = [e or "" for e in table["source_etag"].to_pylist()]
        return list(zip(table["uri"].to_pylist(), etags, models, strict=True))

    def new_rows(self, table: pa.Table) -> pa.Table:
        """Rows whose key no commit holds yet (and the first of any repeats within ``table``)."""
        keep, seen = [], set()
        for i, key in enumerate(self._keys(table)):
            if key not in self.keys and key not in seen:
                keep.append(i)
                seen.add(key)
        return table if len(keep) == table.num_rows else table.take(pa.array(keep, pa.int64()))


def _parse(rec: dict) -> Commit:
    return Commit(
        int(rec["number"]),
        rec["run_id"],
        list(rec["files"]),
        int(rec["rows"]),
        bool(rec["final"]),
        list(rec.get("replaces") or []),
        rec,
    )


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


def _lost_race(e: OSError) -> bool:
    """Another writer has the name (412), or is writing it right now (409 on AWS)."""
    return error_code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict")


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``'s column order; columns that older parts lack become nulls."""
    cols = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.table(cols, schema=schema)


def read_verdicts(out: str, all_runs: bool = False) -> pa.Table:
    """Committed verdicts in ``out``: the latest per uri, or every committed row (``all_runs``)."""
    return VerdictStore(out).read(all_runs=all_runs)
