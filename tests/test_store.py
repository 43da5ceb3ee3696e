"""The commit protocol: only committed parts are visible; latest verdict per uri by default."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa

from deepfake_scan.store import VERDICT_SCHEMA, VerdictStore, read_verdicts


def rows(uris: list[str], label: str, run_id: str, at: datetime) -> pa.Table:
    n = len(uris)
    return pa.table(
        {
            "uri": uris,
            "source_etag": ["e"] * n,
            "sha256": ["s"] * n,
            "width": [1] * n,
            "height": [1] * n,
            "format": ["PNG"] * n,
            "score": [0.9] * n,
            "label": [label] * n,
            "error": [None] * n,
            "model_id": ["m@1+abc"] * n,
            "run_id": [run_id] * n,
            "scanned_at": [at] * n,
            "key": [None] * n,
            "faces": [None] * n,
        },
        schema=VERDICT_SCHEMA,
    )


def test_parts_without_a_commit_record_are_invisible(tmp_path):
    store = VerdictStore(str(tmp_path))
    now = datetime.now(timezone.utc)
    part = store.write_part("r1", 0, rows(["a", "b"], "fake", "r1", now))
    assert read_verdicts(str(tmp_path)).num_rows == 0  # written, not committed
    store.commit("r1", [part], rows=2, final=False)
    assert read_verdicts(str(tmp_path)).column("uri").to_pylist() == ["a", "b"]
    # a crashed run's part, never committed, stays invisible
    store.write_part("r2", 0, rows(["c"], "fake", "r2", now))
    assert sorted(read_verdicts(str(tmp_path)).column("uri").to_pylist()) == ["a", "b"]


def test_latest_verdict_per_uri_and_all_runs(tmp_path):
    store = VerdictStore(str(tmp_path))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    p1 = store.write_part("r1", 0, rows(["a", "b"], "real", "r1", t0))
    store.commit("r1", [p1], 2, final=True)
    p2 = store.write_part("r2", 0, rows(["a"], "fake", "r2", t0 + timedelta(days=1)))
    store.commit("r2", [p2], 1, final=True)
    latest = read_verdicts(str(tmp_path)).to_pylist()
    assert {(r["uri"], r["label"], r["run_id"]) for r in latest} == {
        ("a", "fake", "r2"),
        ("b", "real", "r1"),
    }
    assert read_verdicts(str(tmp_path), all_runs=True).num_rows == 3
    assert read_verdicts(str(tmp_path)).schema == VERDICT_SCHEMA


def test_stray_and_half_written_records_are_ignored(tmp_path):
    store = VerdictStore(str(tmp_path))
    (tmp_path / "_commits").mkdir()
    (tmp_path / "_commits" / "junk.json").write_text('{"run_id": "x", "se')  # torn, not ours
    (tmp_path / "_commits" / "000000000000.json.tmp-1234").write_text("{}")
    assert store.commits() == []
    assert read_verdicts(str(tmp_path)).num_rows == 0


def test_empty_store_reads_as_empty_table_with_schema(tmp_path):
    t = read_verdicts(str(tmp_path / "nothing-here"))
    assert t.num_rows == 0 and t.schema == VERDICT_SCHEMA


def test_parts_written_before_the_faces_column_still_read(tmp_path):
    import pyarrow.parquet as pq

    store = VerdictStore(str(tmp_path))
    old = rows(["a"], "real", "r0", datetime.now(timezone.utc)).drop_columns(["faces"])
    (tmp_path / "data" / "r0").mkdir(parents=True)
    pq.write_table(old, tmp_path / "data" / "r0" / "part-old.parquet")
    store.commit("r0", ["data/r0/part-old.parquet"], rows=1, final=True)
    table = read_verdicts(str(tmp_path))
    assert table.schema == VERDICT_SCHEMA and table.column("faces").to_pylist() == [None]
