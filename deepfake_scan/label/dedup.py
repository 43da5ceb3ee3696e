"""Duplicates: exact (same sha256) and near (perceptual hashes within a Hamming distance).

Groups are flagged on every item; with ``keep_one`` only one member per group *and label* goes
into the shards. Per label, because a face-swapped fake is often a near-duplicate of the real
photo it was made from, and dropping either would lose exactly the pair a detector learns from.
"""

from __future__ import annotations

from collections import defaultdict

from deepfake_scan.decode import DEFAULT_MAX_PIXELS
from deepfake_scan.label.items import Item

MODES = ("none", "exact", "near")
HASH_BITS = 64  # imagehash.phash with hash_size=8


def perceptual_hash(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """The 64-bit pHash of an image as 16 hex digits; None when it cannot be decoded."""
    import imagehash

    from deepfake_scan.decode import DecodeError, open_image

    try:
        # pHash works on a 32x32 greyscale copy: a reduced JPEG decode loses nothing it uses.
        img, _, _ = open_image(data, max_pixels=max_pixels, draft=64)
        return str(imagehash.phash(img))
    except DecodeError:
        return None
    except Exception:  # a codec bug on one image must not stop the run: it is just not grouped
        return None


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_pairs(hashes: list[int], max_distance: int) -> set[tuple[int, int]]:
    """Index pairs (i < j) of ``hashes`` within ``max_distance`` bits of each other.

    Not all pairs are compared: the hash is cut into ``max_distance + 1`` bands, and two hashes
    that close must agree exactly on at least one band (pigeonhole), so only hashes sharing a
    band value are compared, bucket by bucket with numpy. Millions of images stay tractable."""
    import numpy as np

    h = np.array(hashes, dtype=np.uint64)
    bands = max_distance + 1
    width = -(-HASH_BITS // bands)
    pairs: set[tuple[int, int]] = set()
    for b in range(bands):
        keys = (h >> np.uint64(b * width)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        cuts = np.flatnonzero(np.diff(keys[order])) + 1
        for bucket in np.split(order, cuts):
            if len(bucket) > 1:
                pairs.update(_close_in(h, np.sort(bucket), max_distance))
    return pairs


def _close_in(h, bucket, max_distance: int, rows: int = 1024) -> set[tuple[int, int]]:
    """Close pairs within one bucket, in row blocks so a huge bucket never makes an n x n
    matrix at once."""
    import numpy as np

    found = set()
    sub = h[bucket]
    for start in range(0, len(bucket), rows):
        block = sub[start : start + rows]
        dist = np.bitwise_count(block[:, None] ^ sub[None, :])
        i, j = np.nonzero(dist <= max_distance)
        i = i + start
        keep = i < j
        found.update(zip(bucket[i[keep]].tolist(), bucket[j[keep]].tolist(), strict=True))
    return found


def assign_groups(items: list[Item], mode: str = "near", max_distance: int = 4) -> None:
    """Set ``exact_group`` and (mode ``near``) ``near_group`` on the items that have company.
    A near group includes exact copies; ids follow the items' (uri) order, so they are stable
    for the same data."""
    ok = [it for it in items if not it.error and it.sha256]
    if mode == "none":
        return
    by_sha: dict[str, list[Item]] = defaultdict(list)
    for it in ok:
        by_sha[it.sha256].append(it)
    for it in ok:
        it.exact_group = it.sha256 if len(by_sha[it.sha256]) > 1 else None
        it.near_group = None
    if mode != "near":
        return
    uf = _UnionFind(len(ok))
    index = {id(it): i for i, it in enumerate(ok)}
    for same in by_sha.values():
        for it in same[1:]:
            uf.union(index[id(same[0])], index[id(it)])
    by_hash: dict[int, list[int]] = defaultdict(list)
    for i, it in enumerate(ok):
        if it.phash:
            by_hash[int(it.phash, 16)].append(i)
    values = list(by_hash)
    for members in by_hash.values():
        for i in members[1:]:
            uf.union(members[0], i)
    for a, b in near_pairs(values, max_distance):
        uf.union(by_hash[values[a]][0], by_hash[values[b]][0])
    _number_components(ok, uf)


def _number_components(ok: list[Item], uf: _UnionFind) -> None:
    sizes: dict[int, int] = defaultdict(int)
    for i in range(len(ok)):
        sizes[uf.find(i)] += 1
    ids: dict[int, int] = {}
    for i, it in enumerate(ok):
        root = uf.find(i)
        if sizes[root] > 1:
            it.near_group = ids.setdefault(root, len(ids))


def choose_kept(items: list[Item], mode: str, previously_sharded: set[str] = frozenset()) -> int:
    """Mark all but one member of each (group, label) with ``duplicate_of``; returns how many.

    The one kept is the member already in a shard if any (so reruns do not rewrite shards),
    else the largest picture, else the first uri."""
    groups: dict[tuple[object, str], list[Item]] = defaultdict(list)
    for it in items:
        it.duplicate_of = None
        group = it.near_group if mode == "near" else it.exact_group if mode == "exact" else None
        if group is not None:
            groups[(group, it.label)].append(it)
    marked = 0
    for members in groups.values():
        kept = min(
            members,
            key=lambda it: (
                it.uri not in previously_sharded,
                -((it.width or 0) * (it.height or 0)),
                it.uri,
            ),
        )
        for it in members:
            if it is not kept:
                it.duplicate_of = kept.uri
                marked += 1
    return marked
