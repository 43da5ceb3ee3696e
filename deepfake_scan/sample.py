"""A small generated archive in every form the scan reads, with the broken inputs archives hold.

Used by ``deepfake-scan demo`` (the quickstart) and by the tests. The pictures are synthetic: the
archive shows the pipeline, not the detector's accuracy.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def image_bytes(
    fmt: str = "JPEG",
    size: tuple[int, int] = (64, 48),
    mode: str = "RGB",
    seed: int = 0,
    **save_kwargs,
) -> bytes:
    """A random picture: smooth colour gradients plus noise, encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3) + rng.uniform(-1, 1, 3) * (xx[..., None] + yy[..., None])
    arr = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save_kwargs)
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            add_member(tar, name, data)
    return buf.getvalue()


def make_sample_archive(root: str | Path, n_photos: int = 12) -> dict[str, str | None]:
    """Write the archive under ``root``; returns each expected verdict uri -> its error code
    (None = scored). Scan it with ``max_pixels`` below 9 Mpx to see the decompression bomb."""
    root = Path(root)
    expected: dict[str, str | None] = {}

    def put(rel: str, data: bytes, code: str | None) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[str(path)] = code

    for i in range(n_photos):
        put(f"photos/{i // 4}/img{i}.jpg", image_bytes("JPEG", (90 + i, 70), seed=i), None)
    put("photos/scan.png", image_bytes("PNG", (50, 50), mode="L"), None)
    put("photos/no_extension", image_bytes("WEBP"), None)
    put("photos/big.jpg", image_bytes("JPEG", (640, 480), seed=99), None)
    put("bad/empty.jpg", b"", "empty_file")
    put("bad/readme.txt", b"not an image", "not_an_image")
    put("bad/truncated.jpg", image_bytes("JPEG", (200, 200))[:400], "decode_error")
    bomb = io.BytesIO()
    Image.new("L", (3000, 3000)).save(bomb, "PNG")  # 9 Mpx in a few KB
    put("bad/bomb.png", bomb.getvalue(), "too_large")
    expected.update(_write_shards(root / "shards"))
    table = root / "tables" / "part-0.parquet"
    table.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": [image_bytes(seed=20), None, b"\x00\x00"]}), table)
    expected.update({f"{table}#0": None, f"{table}#1": "null_image", f"{table}#2": "not_an_image"})
    return expected


def _write_shards(folder: Path) -> dict[str, str | None]:
    """A WebDataset shard with sidecars, a hostile name, a corrupt member and a symlink."""
    folder.mkdir(parents=True, exist_ok=True)
    shard = folder / "shard-000.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [
            ("s0.jpg", image_bytes(seed=5)),
            ("s0.json", b"{}"),
            ("s0.cls", b"1"),
            ("../evil.jpg", image_bytes(seed=6)),
            ("s1.png", b"garbage"),
        ]:
            add_member(tar, name, data)
        link = tarfile.TarInfo("link.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    shard.write_bytes(buf.getvalue())
    (folder / "shard-001.tar").write_bytes(tar_bytes({"t.jpg": image_bytes(seed=8)}))
    return {
        f"{shard}#s0.jpg": None,
        f"{shard}#../evil.jpg": None,
        f"{shard}#s1.png": "not_an_image",
        f"{shard}#link.jpg": "unsupported_member",
        f"{folder}/shard-001.tar#t.jpg": None,
    }
