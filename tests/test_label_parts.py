"""The labelling steps without Ray: items from verdicts, duplicates, shard plans, review page,
manifest and corrections (real stores and files in tmp_path, no mocks)."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfake_scan.cli import main
from deepfake_scan.errors import ScanError
from deepfake_scan.label.corrections import corrections_as_training_lists, import_corrections
from deepfake_scan.label.dedup import assign_groups, choose_kept, near_pairs
from deepfake_scan.label.items import Item, load_items, sidecar
from deepfake_scan.label.manifest import write_manifest
from deepfake_scan.label.plan import ShardRecord, plan_shards
from deepfake_scan.label.review import render_page, review_items
from deepfake_scan.label.shards import tar_samples
from deepfake_scan.sources import list_inputs
from deepfake_scan.store import VERDICT_SCHEMA, VerdictStore, read_verdicts
from tests.fixtures import image_bytes

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def verdict(uri: str, **kw) -> dict:
    row = {
        "uri": uri,
        "source_etag": "e",
        "sha256": "s-" + uri,
        "width": 10,
        "height": 10,
        "format": "PNG",
        "score": 0.9,
        "label": "fake",
        "error": None,
        "model_id": "tiny@1+abc",
        "run_id": "r",
        "scanned_at": T0,
        "key": None,
    }
    return {**row, **kw}


def commit(store: str, rows: list[dict], run_id: str = "r") -> None:
    vs = VerdictStore(store)
    part = vs.write_part(run_id, 0, pa.Table.from_pylist(rows, schema=VERDICT_SCHEMA))
    vs.commit(run_id, [part], len(rows), True)


def item(uri: str, label: str = "real", sha: str | None = None, **kw) -> Item:
    base = dict(
        input_uri=uri,
        source_etag="e",
        sha256=sha or "s-" + uri,
        width=10,
        height=10,
        format="JPEG",
        score=0.2,
        model_id="tiny@1+abc",
        error=None,
        source_key=None,
        model_label=label,
        label=label,
    )
    return Item(uri=uri, **{**base, **kw})


# -- items --------------------------------------------------------------------------------------
def test_items_take_this_models_current_verdict_and_matching_corrections(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png", "d.png"):
        (src / name).write_bytes(image_bytes("PNG", seed=len(name)))
    etag = {i.uri: i.etag for i in list_inputs(str(src))}
    a, b, c, d = (str(src / n) for n in ("a.png", "b.png", "c.png", "d.png"))
    store = str(tmp_path / "v")
    later = T0 + timedelta(hours=1)
    rows = [
        verdict(a, source_etag=etag[a], score=0.1),
        verdict(a, source_etag="old", score=0.99, scanned_at=later),  # a record since changed
        verdict(a, source_etag=etag[a], score=0.3, model_id="other@1+x", scanned_at=later),
        verdict(b, source_etag=etag[b], score=0.5),
        verdict(c, source_etag=etag[c], score=None, label="error", error="decode_error: bad"),
        verdict(d, source_etag=etag[d], score=0.7),
        verdict(b, label="fake", score=None, model_id="human@ann", scanned_at=later),
        verdict(d, label="real", score=None, model_id="human@bo", sha256="x", scanned_at=later),
        verdict("/elsewhere/z.png", score=0.9),
    ]
    commit(store, rows)
    items = load_items(VerdictStore(store), list_inputs(str(src)), "tiny", 0.5, (0.4, 0.6))
    got = {it.uri: it for it in items}
    assert list(got) == [a, b, c, d]  # one per record of this source, sorted
    assert got[a].score == pytest.approx(0.1) and got[a].label == "real"
    assert got[b].model_label == "uncertain" and got[b].label == "fake"  # a reviewer decided
    assert got[b].reviewer == "ann" and got[b].label_source == "human"
    assert got[c].label == "error" and got[c].error.startswith("decode_error")
    assert got[d].label == "fake" and got[d].reviewer is None  # review was of other bytes
    side = json.loads(sidecar(got[b], 0.5, (0.4, 0.6)))
    assert side["label"] == "fake" and side["model_label"] == "uncertain"
    assert side["threshold"] == 0.5 and side["uri"] == b and side["sha256"] == got[b].sha256


def test_a_face_only_models_no_face_verdict_is_labelled_as_such(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "wall.png").write_bytes(image_bytes("PNG", seed=1))
    (inp,) = list_inputs(str(src))
    store = str(tmp_path / "v")
    commit(store, [verdict(inp.uri, source_etag=inp.etag, score=None, label="no_face", faces=[])])
    (it,) = load_items(VerdictStore(store), list_inputs(str(src)), "tiny", 0.5, (0.4, 0.6))
    assert it.label == "error" and it.error == "no_face: no face found (face-only model)"


# -- duplicates ---------------------------------------------------------------------------------
def test_near_pairs_finds_exactly_the_hashes_within_the_distance():
    base = 0x0123456789ABCDEF
    hashes = [base, base ^ 0b1011, base ^ (0b11111 << 30), ~base & (2**64 - 1), base ^ (1 << 63)]
    assert near_pairs(hashes, 4) == {(0, 1), (0, 4), (1, 4)}
    assert near_pairs(hashes, 5) == {(0, 1), (0, 2), (0, 4), (1, 4)}


def test_groups_are_flagged_and_one_is_kept_per_group_and_label():
    h = "00000000000000ff"
    items = [
        item("a", sha="s1", phash=h),
        item("b", sha="s1", phash=h),  # exact copy of a
        item("c", sha="s2", phash="00000000000000fe", width=20),  # near copy, larger
        item("d", sha="s3", phash="00000000000000fc", label="fake"),  # near copy, other label
        item("e", sha="s4", phash="ffffffffffffff00"),  # unrelated
        item("f", sha=None, phash=None, error="empty_file: 0 bytes", label="error"),
    ]
    assign_groups(items, "near", 4)
    by = {it.uri: it for it in items}
    assert by["a"].exact_group == by["b"].exact_group == "s1" and by["c"].exact_group is None
    assert by["a"].near_group == by["b"].near_group == by["c"].near_group == by["d"].near_group
    assert by["e"].near_group is None and by["f"].near_group is None
    assert choose_kept(items, "near") == 2
    assert by["c"].duplicate_of is None  # the largest picture of the real ones
    assert by["a"].duplicate_of == by["b"].duplicate_of == "c"
    assert by["d"].duplicate_of is None  # the only fake of the group stays
    assert choose_kept(items, "near", previously_sharded={"b"}) == 2
    assert by["b"].duplicate_of is None and by["c"].duplicate_of == "b"  # no shard rewrite
    assign_groups(items, "exact")
    assert by["a"].near_group is None and by["a"].exact_group == "s1"
    assert choose_kept(items, "exact") == 1 and by["b"].duplicate_of == "a"


# -- shard plan ---------------------------------------------------------------------------------
def test_plan_keeps_current_shards_and_repacks_only_what_changed():
    wanted = {f"u{i}": ("real", f"d{i}") for i in range(5)} | {"f0": ("fake", "x")}
    first = plan_shards(wanted, [], set(), shard_size=2)
    assert first.new == {
        "real/real-000000.tar": ["u0", "u1"],
        "real/real-000001.tar": ["u2", "u3"],
        "real/real-000002.tar": ["u4"],
        "fake/fake-000000.tar": ["f0"],
    }
    records = [
        ShardRecord(s, s.split("/")[0], n, {u: wanted[u][1] for u in uris})
        for (s, uris), n in zip(first.new.items(), (0, 1, 2, 0), strict=True)
    ]
    tars = set(first.new) | {"real/real-000009.tar"}  # an unrecorded tar left by a crash
    again = plan_shards(wanted, records, tars, shard_size=2)
    assert not again.new and len(again.keep) == 4 and again.remove == ["real/real-000009.tar"]
    wanted["u2"] = ("fake", "d2b")  # relabelled: its shard goes, u3 is packed again
    wanted["u9"] = ("real", "d9")
    plan = plan_shards(wanted, records, set(first.new), shard_size=2)
    assert plan.remove == ["real/real-000001.tar"]
    assert plan.new == {"real/real-000001.tar": ["u3", "u9"], "fake/fake-000001.tar": ["u2"]}


def test_tar_samples_are_deterministic_webdataset_pairs():
    samples = [("k2", "png", b"png-bytes", b"{}"), ("k1", "jpg", b"jpg-bytes", b'{"a":1}')]
    bufs = [io.BytesIO(), io.BytesIO()]
    for buf in bufs:
        tar_samples(buf, samples)
    assert bufs[0].getvalue() == bufs[1].getvalue()
    with tarfile.open(fileobj=io.BytesIO(bufs[0].getvalue())) as tar:
        assert tar.getnames() == ["k1.jpg", "k1.json", "k2.png", "k2.json"]


# -- review page and manifest -------------------------------------------------------------------
def test_review_page_lists_uncertain_items_with_escaped_uris():
    items = [
        item('/a/<script>alert("x")</script>.jpg', "uncertain", score=0.52),
        item("/a/b.jpg", "uncertain", score=0.48),
        item("/a/c.jpg", "real"),
    ]
    page = render_page(review_items(items), "/v", 0.5, (0.45, 0.55))
    assert page.count('<li class="item"') == 2 and "/a/c.jpg" not in page
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert page.index("/a/b.jpg") < page.index("alert")  # by score
    assert f"thumbs/{items[1].sha256}.jpg" in page
    assert "corrections import decisions.csv --store /v" in page and 'id="download"' in page


def test_manifest_in_every_format_and_errors_apart(tmp_path):
    items = [
        item("/a.jpg", shard="real/real-000000.tar"),
        item("/b.jpg", "error", sha=None, error="decode_error: bad", score=None),
    ]
    write_manifest(str(tmp_path), items, 0.5, ("jsonl", "csv"))
    table = pq.read_table(tmp_path / "labels.parquet")
    assert table.column("uri").to_pylist() == ["/a.jpg", "/b.jpg"]
    assert table.column("shard").to_pylist() == ["real/real-000000.tar", None]
    lines = (tmp_path / "labels.jsonl").read_text().splitlines()
    assert [json.loads(x)["key"] for x in lines] == [it.key for it in items]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "labels.csv").read_text())))
    assert [(r["uri"], r["label"]) for r in rows] == [("/a.jpg", "real"), ("/b.jpg", "error")]
    errors = pq.read_table(tmp_path / "errors.parquet").to_pylist()
    assert [(e["uri"], e["code"]) for e in errors] == [("/b.jpg", "decode_error")]


# -- corrections --------------------------------------------------------------------------------
def test_corrections_import_commits_rows_that_read_verdicts_returns(tmp_path):
    store = str(tmp_path / "v")
    commit(store, [verdict("/a.jpg", score=0.5, label="uncertain"), verdict("/b.jpg")])
    decisions = tmp_path / "decisions.csv"
    decisions.write_text('uri,label,reviewer\n"/a.jpg",fake,ann\n/b.jpg,REAL,\n')
    s = import_corrections(str(decisions), store, reviewer="bo")
    assert (s.rows, s.labels) == (2, {"real": 1, "fake": 1})
    latest = {r["uri"]: r for r in read_verdicts(store).to_pylist()}
    assert latest["/a.jpg"]["label"] == "fake" and latest["/a.jpg"]["model_id"] == "human@ann"
    assert latest["/b.jpg"]["model_id"] == "human@bo" and latest["/b.jpg"]["score"] is None
    assert latest["/a.jpg"]["sha256"] == "s-/a.jpg"  # the bytes the decision is about
    commits = VerdictStore(store).commits()
    assert commits[-1].record["kind"] == "corrections" and commits[-1].run_id == s.run_id
    again = import_corrections(str(decisions), store, reviewer="bo")
    assert (again.rows, again.unchanged) == (0, 2)  # importing twice adds nothing
    assert corrections_as_training_lists(store) == (["/b.jpg"], ["/a.jpg"])
    # the image changes and is rescanned: the decision is about other bytes now
    commit(store, [verdict("/a.jpg", sha256="new", scanned_at=datetime.now(timezone.utc))], "r2")
    assert corrections_as_training_lists(store) == (["/b.jpg"], [])


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ("uri,label\n/a.jpg,maybe\n", "d.csv", "is not one of real, fake"),
        ("uri,label\n/a.jpg,fake\n", "d.csv", "no reviewer"),
        ("path,label\n/a.jpg,fake\n", "d.csv", "header"),
        ('{"uri": "/nope.jpg", "label": "fake", "reviewer": "a"}\n', "d.jsonl", "no verdict"),
        ("[{", "d.json", "not valid JSON"),
    ],
)
def test_bad_corrections_import_nothing(tmp_path, text, name, message):
    store = str(tmp_path / "v")
    commit(store, [verdict("/a.jpg")])
    (tmp_path / name).write_text(text)
    with pytest.raises(ScanError, match=message):
        import_corrections(str(tmp_path / name), store)
    assert read_verdicts(store, all_runs=True).num_rows == 1


def test_corrections_command_and_label_option_errors(tmp_path, capsys):
    store = str(tmp_path / "v")
    commit(store, [verdict("/a.jpg")])
    (tmp_path / "d.json").write_text(json.dumps([{"uri": "/a.jpg", "label": "real"}]))
    args = ["corrections", "import", str(tmp_path / "d.json"), "--store", store]
    assert main([*args, "--reviewer", "cy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 1
    assert main(["label", str(tmp_path), "--out", str(tmp_path / "d"), "--dedup", "fuzzy"]) == 2
    assert "--dedup must be one of" in " ".join(capsys.readouterr().err.split())
    assert main(["label", str(tmp_path), "--out", str(tmp_path / "d")]) == 2
    assert "is inside SOURCE" in " ".join(capsys.readouterr().err.split())  # rich wraps lines
