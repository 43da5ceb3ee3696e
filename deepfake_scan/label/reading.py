"""Reading images back from their source, one listed input at a time.

Labelling needs the original bytes of records the scan already scored. A tar shard can only be
read front to back, so the work is grouped by listed input: one task streams one container once
(through ``deepfake_scan.sources``, the scan's own reader) and picks out the records it wants.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterator

from deepfake_scan.label.items import Item
from deepfake_scan.sources import DEFAULT_MAX_BYTES, Input, Record, iter_records

DECODE_CPUS = 0.5  # reading and hashing are light; as in the scan, two tasks share a CPU


def work_units(
    items: list[Item], inputs: dict[str, Input], meta: Callable[[Item], dict]
) -> list[dict]:
    """One unit per listed input holding ``items``: what to read and, per uri, ``meta(item)``
    (as JSON, so Arrow never has to infer a schema for it)."""
    by_input: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_input[it.input_uri].append(it)
    units = []
    for uri in sorted(by_input):
        inp = inputs[uri]
        wanted = by_input[uri]
        units.append(
            {
                "uri": inp.uri,
                "kind": inp.kind,
                "size": inp.size,
                "etag": inp.etag,
                "meta": json.dumps({it.uri: meta(it) for it in wanted}),
            }
        )
    return units


def unit_records(
    unit: dict, image_column: str = "image", max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[tuple[Record, dict]]:
    """The wanted records of one unit with their meta, in source order; stops reading as soon
    as all were found (the tail of a tar is never fetched)."""
    meta = json.loads(unit["meta"])
    inp = Input(unit["uri"], unit["kind"], int(unit["size"]), unit["etag"])
    left = len(meta)
    for rec in iter_records(inp, image_column, None, max_bytes):
        if rec.uri in meta:
            yield rec, meta[rec.uri]
            left -= 1
            if left == 0:
                return


def unit_dataset(units: list[dict], fn: Callable, fn_kwargs: dict):
    """A Ray Dataset mapping ``fn`` over the units (a few per block, containers alone)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the command draws its own progress
    containers = sum(1 for u in units if u["kind"] != "file")
    blocks = min(len(units), max(containers, math.ceil(len(units) / 32), 4))
    ds = ray.data.from_items(units, override_num_blocks=max(1, blocks))
    return ds.map_batches(
        fn, batch_size=None, num_cpus=DECODE_CPUS, fn_kwargs=fn_kwargs, **remote_env()
    )


def remote_env() -> dict:
    """Workers on other nodes need the driver's S3 endpoint and checksum settings (as in the
    scan; never credentials)."""
    from deepfake_scan.storage import worker_env

    env = worker_env()
    return {"runtime_env": {"env_vars": env}} if env else {}


def rows_of(batch: dict) -> Iterator[dict]:
    """The rows of a column batch (numpy or lists) as dicts."""
    names = list(batch)
    for i in range(len(batch[names[0]]) if names else 0):
        yield {k: batch[k][i] for k in names}
