"""Listing and reading: folders, WebDataset tar shards, Parquet tables; hostile archives."""

from __future__ import annotations

import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfake_scan.errors import ScanError
from deepfake_scan.sources import Input, iter_records, list_inputs, read_inputs
from tests.fixtures import add_member, image_bytes, tar_bytes


def records(path, **kw) -> dict[str, tuple[bytes | None, str | None]]:
    (inp,) = list_inputs(str(path))
    return {r.uri: (r.data, r.error) for r in iter_records(inp, **kw)}


def test_listing_is_recursive_sorted_and_classifies_containers(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jpg").write_bytes(image_bytes())
    (tmp_path / "shard-0.tar").write_bytes(tar_bytes({"k.jpg": image_bytes()}))
    pq.write_table(pa.table({"image": [image_bytes()]}), tmp_path / "t.parquet")
    (tmp_path / ".hidden").write_bytes(b"x")
    (tmp_path / "noext").write_bytes(image_bytes("PNG"))
    inputs = list_inputs(str(tmp_path))
    assert [(i.uri.removeprefix(str(tmp_path)), i.kind) for i in inputs] == [
        ("/a/b/x.jpg", "file"),
        ("/noext", "file"),
        ("/shard-0.tar", "tar"),
        ("/t.parquet", "parquet"),
    ]
    assert all(i.etag and i.size > 0 for i in inputs)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(ScanError, match="source not found"):
        list_inputs(str(tmp_path / "nope"))


def test_tar_members_get_tar_uris_and_sidecars_are_ignored(tmp_path):
    shard = tmp_path / "shard.tar"
    shard.write_bytes(
        tar_bytes(
            {
                "0001.jpg": image_bytes(),
                "0001.json": b'{"a": 1}',
                "0001.cls": b"1",
                "dir/0002.png": image_bytes("PNG"),
                "0003.txt": b"caption",
                "0004.json": image_bytes("PNG"),  # an image is an image whatever its name
                "0005.dat": b"not an image",
            }
        )
    )
    recs = records(shard)
    base = f"{shard}#"
    assert set(recs) == {
        base + "0001.jpg",
        base + "dir/0002.png",
        base + "0004.json",
        base + "0005.dat",
    }
    assert recs[base + "0005.dat"][0] == b"not an image"  # kept: decode will call it not_an_image


def test_hostile_member_names_are_scored_in_place_never_extracted(tmp_path):
    shard = tmp_path / "evil.tar"
    shard.write_bytes(
        tar_bytes(
            {
                "../escape.jpg": image_bytes(),
                "/abs.jpg": image_bytes(),
                "a/../../b.jpg": image_bytes(),
            }
        )
    )
    recs = records(shard)
    assert set(recs) == {f"{shard}#../escape.jpg", f"{shard}#/abs.jpg", f"{shard}#a/../../b.jpg"}
    assert all(data and err is None for data, err in recs.values())
    assert not (tmp_path.parent / "escape.jpg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar"]


def test_links_and_devices_in_tars_are_errors_not_followed(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(image_bytes())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add_member(tar, "ok.jpg", image_bytes())
        for name, kind in [
            ("sym.jpg", tarfile.SYMTYPE),
            ("hard.jpg", tarfile.LNKTYPE),
            ("dev.jpg", tarfile.CHRTYPE),
            ("fifo.jpg", tarfile.FIFOTYPE),
        ]:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = str(tmp_path / "secret.jpg")
            tar.addfile(info)
    shard = tmp_path / "links.tar"
    shard.write_bytes(buf.getvalue())
    recs = records(shard)
    assert recs[f"{shard}#ok.jpg"][1] is None
    for name in ("sym.jpg", "hard.jpg", "dev.jpg", "fifo.jpg"):
        data, err = recs[f"{shard}#{name}"]
        assert data is None and err.startswith("unsupported_member: ")


def test_truncated_tar_keeps_what_was_read_and_reports_the_rest(tmp_path):
    full = tar_bytes({"a.jpg": image_bytes(seed=1), "b.jpg": image_bytes(size=(400, 400))})
    shard = tmp_path / "cut.tar"
    shard.write_bytes(full[: len(full) - 30000])  # cut inside b.jpg
    recs = records(shard)
    assert recs[f"{shard}#a.jpg"][1] is None
    errors = [err for uri, (_, err) in recs.items() if err]
    assert errors and all(e.split(":")[0] in ("truncated", "tar_error") for e in errors)


def test_not_a_tar_is_one_error_row(tmp_path):
    shard = tmp_path / "fake.tar"
    shard.write_bytes(b"this is not a tar archive" * 40)
    recs = records(shard)
    assert list(recs) == [str(shard)]
    assert recs[str(shard)][1].startswith("tar_error: ")


def test_enormous_members_are_refused_without_reading(tmp_path):
    shard = tmp_path / "big.tar"
    shard.write_bytes(tar_bytes({"big.jpg": image_bytes(size=(300, 300)), "ok.jpg": image_bytes()}))
    recs = records(shard, max_bytes=5000)
    assert recs[f"{shard}#big.jpg"][1].startswith("too_large: ")
    assert recs[f"{shard}#ok.jpg"][1] is None


def test_parquet_rows_get_row_uris_nulls_are_errors(tmp_path):
    path = tmp_path / "t.parquet"
    table = pa.table({"img": [image_bytes(), None, image_bytes("PNG")], "id": ["a", "b", None]})
    pq.write_table(table, path, row_group_size=2)
    (inp,) = list_inputs(str(path))
    recs = list(iter_records(inp, image_column="img", key_column="id"))
    assert [r.uri for r in recs] == [f"{path}#0", f"{path}#1", f"{path}#2"]
    assert [r.key for r in recs] == ["a", "b", None]
    assert recs[1].error.startswith("null_image: ")
    assert recs[0].data and recs[2].data


def test_parquet_huggingface_image_struct(tmp_path):
    path = tmp_path / "hf.parquet"
    pq.write_table(pa.table({"image": [{"bytes": image_bytes(), "path": "x.jpg"}]}), path)
    recs = records(path)
    assert recs[f"{path}#0"][0] == image_bytes()


def test_parquet_without_the_image_column_is_one_error_row(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"other": [1, 2]}), path)
    recs = records(path)
    assert list(recs) == [str(path)]
    assert "no column 'image'" in recs[str(path)][1]


def test_corrupt_parquet_is_one_error_row(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 garbage garbage")
    assert records(path)[str(path)][1].startswith("parquet_error: ")


def test_vanished_file_is_a_read_error(tmp_path):
    inp = Input(str(tmp_path / "gone.jpg"), "file", 10, "x")
    (rec,) = iter_records(inp)
    assert rec.data is None and rec.error.startswith("read_error: ")


def test_files_read_ahead_come_back_in_order_between_container_members(tmp_path):
    """Plain files are read several at a time; records still come in listing order, each with
    its input, and a file gone before it is read is a read error in its place."""
    for k in range(40):
        (tmp_path / f"f{k:02d}.jpg").write_bytes(bytes([k]) * (k + 1))
    (tmp_path / "f20.tar").write_bytes(tar_bytes({"a.jpg": b"A", "b.jpg": b"B"}))
    inputs = list(list_inputs(str(tmp_path)))
    (tmp_path / "f30.jpg").unlink()
    got = list(read_inputs(inputs, threads=3))
    assert all(inputs[i].uri == r.uri.split("#")[0] for i, r in got)  # each with its own input
    uris = [r.uri.removeprefix(str(tmp_path) + "/") for _, r in got]
    files = [f"f{k:02d}.jpg" for k in range(40)]
    assert uris == files[:21] + ["f20.tar#a.jpg", "f20.tar#b.jpg"] + files[21:]
    data = {u: (r.data, r.error) for u, (_, r) in zip(uris, got, strict=True)}
    assert data["f07.jpg"] == (bytes([7]) * 8, None)
    assert data["f30.jpg"][0] is None and data["f30.jpg"][1].startswith("read_error")
    assert data["f20.tar#b.jpg"] == (b"B", None)


def test_files_read_ahead_stay_within_the_byte_budget(tmp_path, monkeypatch):
    """Enormous files are not read ahead all at once: with a budget below one file's size, each
    file is read only once the one before it has been handed on."""
    from deepfake_scan import sources

    for k in range(6):
        (tmp_path / f"f{k}.jpg").write_bytes(b"x" * 1000)
    inputs = list(list_inputs(str(tmp_path)))
    events = []
    read = sources._file_record
    monkeypatch.setattr(
        sources,
        "_file_record",
        lambda inp, mb: (events.append(("read", inp.uri)), read(inp, mb))[1],
    )
    for _, rec in read_inputs(inputs, ahead_bytes=500):
        events.append(("got", rec.uri))
    assert events == [(e, inp.uri) for inp in inputs for e in ("read", "got")]
