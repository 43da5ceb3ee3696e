"""Which shards to keep, remove and write: a pure function of what is wanted and what exists.

A shard is kept only while every sample in it is still wanted exactly as written (same label,
same sidecar bytes, hence same image and score). Anything else is removed and its still-wanted
samples are packed again, with everything new, into shards numbered from the lowest free
number per label, so shard names stay contiguous (``real-{000000..000041}.tar``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from deepfake_scan.label.items import LABELS


def shard_name(label: str, number: int) -> str:
    return f"{label}/{label}-{number:06d}.tar"


@dataclass
class ShardRecord:
    """The completion record of one written shard (``DEST/_state/shards/<label>-<n>.json``)."""

    shard: str  # relative to DEST, e.g. "real/real-000003.tar"
    label: str
    number: int
    members: dict[str, str]  # uri -> digest of the sample's sidecar
    run_id: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=0, sort_keys=True).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> ShardRecord:
        d = json.loads(blob)
        return cls(
            d["shard"], d["label"], int(d["number"]), dict(d["members"]), d.get("run_id", "")
        )


@dataclass
class Plan:
    keep: list[ShardRecord] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)  # shards whose record and tar go
    new: dict[str, list[str]] = field(default_factory=dict)  # shard -> uris, in order

    @property
    def new_samples(self) -> int:
        return sum(len(v) for v in self.new.values())


def plan_shards(
    wanted: dict[str, tuple[str, str]],
    records: list[ShardRecord],
    tars: set[str],
    shard_size: int,
) -> Plan:
    """``wanted``: uri -> (label, sidecar digest) of every sample that belongs in a shard;
    ``records``: completion records found; ``tars``: shard files found (relative paths)."""
    plan = Plan()
    placed: set[str] = set()
    for rec in sorted(records, key=lambda r: r.shard):
        if rec.shard in tars and _current(rec, wanted, placed):
            plan.keep.append(rec)
            placed.update(rec.members)
        else:
            plan.remove.append(rec.shard)
    recorded = {r.shard for r in records}
    plan.remove += sorted(t for t in tars if t not in recorded)  # a crash's unrecorded output
    for label in LABELS:
        todo = sorted(u for u, (lab, _) in wanted.items() if lab == label and u not in placed)
        numbers = _free_numbers({r.number for r in plan.keep if r.label == label})
        for start in range(0, len(todo), shard_size):
            plan.new[shard_name(label, next(numbers))] = todo[start : start + shard_size]
    return plan


def _current(rec: ShardRecord, wanted: dict[str, tuple[str, str]], placed: set[str]) -> bool:
    if not rec.members:
        return False
    return all(
        wanted.get(uri) == (rec.label, d) and uri not in placed for uri, d in rec.members.items()
    )


def _free_numbers(used: set[int]) -> Iterator[int]:
    n = 0
    while True:
        if n not in used:
            yield n
        n += 1
