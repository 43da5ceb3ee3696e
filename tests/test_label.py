"""Labelling end to end on a real local Ray: a mixed archive in, WebDataset shards, manifest,
errors, duplicates and a review page out; reruns resume; corrections relabel."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

import deepfake_scan
from deepfake_scan.cli import main
from deepfake_scan.decode import decode
from deepfake_scan.label import label
from deepfake_scan.label.corrections import import_corrections
from deepfake_scan.sources import iter_records, list_inputs
from tests.fixtures import image_bytes, make_sample_archive

pytestmark = pytest.mark.usefixtures("ray_local")
MAX_PIXELS = 5_000_000  # the sample archive's 9-megapixel PNG is a bomb under this limit


def originals(src: Path) -> dict[str, bytes]:
    """uri -> bytes of every readable record, read the scan's way."""
    return {
        rec.uri: rec.data
        for inp in list_inputs(str(src))
        for rec in iter_records(inp)
        if rec.data is not None
    }


def bands_for(model: str, data: list[bytes]) -> tuple[float, tuple[float, float]]:
    """A threshold and review band that put about a third of the images under each label, cut
    at the widest gaps between the model's own scores (computed the pipeline's way)."""
    detector = deepfake_scan.load_detector(model)
    decoded = [decode(d, detector.card.preprocessing, MAX_PIXELS) for d in data]
    pixels = np.stack([d.pixels for d in decoded if d.pixels is not None])
    scores = np.unique(detector.predict_pixels(pixels))
    n = len(scores)

    def cut(a: int, b: int) -> float:
        k = max(range(a, b), key=lambda i: scores[i] - scores[i - 1])
        return float(scores[k] + scores[k - 1]) / 2

    lo, hi = cut(n // 4, n // 2), cut(n // 2 + 1, 3 * n // 4 + 1)
    return (lo + hi) / 2, (lo, hi)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("label")
    src, dest = root / "src", root / "dest"
    expected = make_sample_archive(src, n_photos=6)
    (src / "dups").mkdir()
    img0 = (src / "photos/0/img0.jpg").read_bytes()
    (src / "dups/copy.jpg").write_bytes(img0)  # an exact copy
    buf = io.BytesIO()
    Image.open(src / "photos/0/img1.jpg").save(buf, "PNG")  # same picture, other bytes
    (src / "dups/near.png").write_bytes(buf.getvalue())
    expected.update({str(src / "dups/copy.jpg"): None, str(src / "dups/near.png"): None})
    data = originals(src)
    threshold, band = bands_for(tiny_model, list(data.values()))
    summary = label(
        str(src),
        str(dest),
        model=tiny_model,
        max_pixels=MAX_PIXELS,
        shard_size=3,
        threshold=threshold,
        review_band=band,
        keep_one=True,
        formats=("jsonl",),
    )
    manifest = {r["uri"]: r for r in pq.read_table(dest / "labels.parquet").to_pylist()}
    return {"src": src, "dest": dest, "expected": expected, "data": data, "summary": summary,
            "manifest": manifest, "threshold": threshold}  # fmt: skip


def shard_samples(dest: Path) -> list[dict]:
    urls = sorted(str(p) for p in dest.glob("*/*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def test_shards_hold_original_bytes_and_sidecars_readable_by_webdataset(labelled):
    dest, manifest, s = labelled["dest"], labelled["manifest"], labelled["summary"]
    samples = shard_samples(dest)
    assert len(samples) == s.in_shards > 0
    assert all(s.shards[lab] > 0 for lab in ("real", "fake", "uncertain"))
    for sample in samples:
        side = json.loads(sample["json"])
        row = manifest[side["uri"]]
        image = next(v for k, v in sample.items() if k not in ("json",) and not k.startswith("__"))
        assert image == labelled["data"][side["uri"]]  # the original bytes, untouched
        assert side["sha256"] == hashlib.sha256(image).hexdigest() == row["sha256"]
        assert Path(sample["__url__"]).parent.name == side["label"] == row["label"]
        assert f"{side['label']}/{Path(sample['__url__']).name}" == row["shard"]
        assert sample["__key__"] == row["key"] and side["model_id"] == s.model_id
        assert side["threshold"] == labelled["threshold"]
        assert side["score"] == pytest.approx(row["score"], abs=1e-6)
    for lab in ("real", "fake", "uncertain"):
        names = sorted(p.name for p in (dest / lab).glob("*.tar"))
        assert names == [f"{lab}-{i:06d}.tar" for i in range(len(names))]  # contiguous


def test_errors_stay_in_the_store_go_to_errors_parquet_and_never_into_a_shard(labelled):
    dest, expected = labelled["dest"], labelled["expected"]
    bad = {uri for uri, code in expected.items() if code}
    errors = {r["uri"]: r["code"] for r in pq.read_table(dest / "errors.parquet").to_pylist()}
    assert errors == {uri: code for uri, code in expected.items() if code}
    in_shards = {json.loads(x["json"])["uri"] for x in shard_samples(dest)}
    assert not bad & in_shards
    store = {r["uri"]: r for r in deepfake_scan.read_verdicts(str(dest / "verdicts")).to_pylist()}
    assert all(store[uri]["label"] == "error" for uri in bad)


def test_manifest_has_one_row_per_input_and_flags_duplicates(labelled):
    src, dest, manifest = labelled["src"], labelled["dest"], labelled["manifest"]
    assert set(manifest) == set(labelled["expected"])
    assert len((dest / "labels.jsonl").read_text().splitlines()) == len(manifest)
    img0, copy = manifest[str(src / "photos/0/img0.jpg")], manifest[str(src / "dups/copy.jpg")]
    img1, near = manifest[str(src / "photos/0/img1.jpg")], manifest[str(src / "dups/near.png")]
    assert img0["exact_group"] == copy["exact_group"] == img0["sha256"]
    assert img1["exact_group"] is None and near["exact_group"] is None
    assert img1["near_group"] is not None and img1["near_group"] == near["near_group"]
    assert img0["near_group"] == copy["near_group"] != img1["near_group"]
    groups: dict[tuple, list[dict]] = {}
    for row in manifest.values():
        if row["near_group"] is not None:
            groups.setdefault((row["near_group"], row["label"]), []).append(row)
    for rows in groups.values():  # keep_one: one per group and label in the shards
        assert sum(r["shard"] is not None for r in rows) == 1
        assert all((r["shard"] is None) == (r["duplicate_of"] is not None) for r in rows)
    assert labelled["summary"].dropped_duplicates == sum(len(r) - 1 for r in groups.values())


def test_review_page_lists_the_uncertain_band_with_thumbnails(labelled):
    dest, manifest = labelled["dest"], labelled["manifest"]
    page = (dest / "review/index.html").read_text()
    uncertain = [r for r in manifest.values() if r["label"] == "uncertain"]
    assert uncertain and page.count('<li class="item"') == len(uncertain)
    for row in uncertain:
        assert f'data-uri="{row["uri"]}"' in page
        assert (dest / "review/thumbs" / f"{row['sha256']}.jpg").stat().st_size > 0
    others = [r for r in manifest.values() if r["label"] in ("real", "fake")]
    assert not any(f'data-uri="{r["uri"]}"' in page for r in others)


@pytest.mark.slow
def test_rerun_resumes_and_corrections_relabel_only_their_shards(tmp_path, tiny_model, capsys):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    for i in range(6):
        (src / f"{i}.png").write_bytes(image_bytes("PNG", seed=i))
    args = [str(src), "--out", str(dest), "--model", tiny_model, "--shard-size", "2"]
    args += ["--threshold", "0.5", "--review-band", "0,1", "--json"]  # every image uncertain
    assert main(["label", *args]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["shards"] == {"real": 0, "fake": 0, "uncertain": 3}
    mtimes = {p: p.stat().st_mtime_ns for p in dest.glob("*/*.tar")}

    assert main(["label", *args]) == 0  # nothing new: nothing scored, read or written
    again = json.loads(capsys.readouterr().out)
    assert again["scan"]["rows"] == 0 and again["images_read"] == 0
    assert (again["shards_written"], again["shards_kept"]) == (0, 3)
    assert {p: p.stat().st_mtime_ns for p in dest.glob("*/*.tar")} == mtimes

    corrected = str(src / "0.png")
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(f"uri,label,reviewer\n{corrected},fake,ann\n")
    import_corrections(str(decisions), str(dest / "verdicts"))
    third = label(str(src), str(dest), model=tiny_model, shard_size=2, threshold=0.5,
                  review_band=(0.0, 1.0))  # fmt: skip
    assert third.scan["rows"] == 0 and third.corrected == 1  # relabelled, not rescored
    assert third.shards == {"real": 0, "fake": 1, "uncertain": 3}
    assert (third.shards_written, third.shards_kept, third.shards_removed) == (2, 2, 1)
    fake = shard_samples(dest)
    side = next(json.loads(x["json"]) for x in fake if "fake-" in x["__url__"])
    assert (side["uri"], side["label"], side["reviewer"]) == (corrected, "fake", "ann")
    assert side["model_label"] == "uncertain" and side["label_source"] == "human"
    kept = [p for p in mtimes if p.stat().st_mtime_ns == mtimes[p]]
    assert len(kept) == 2  # the shards without the corrected image were not rewritten
    assert f'data-uri="{corrected}"' not in (dest / "review/index.html").read_text()
