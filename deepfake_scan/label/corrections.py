"""Human corrections: review decisions merged into the verdict store as their own committed rows.

A correction is a verdict row with ``model_id = "human@<reviewer>"``, the reviewer's ``label``
(``real`` or ``fake``), no score, and the sha256/etag/size of the verdict it corrects, so a
later change to the image shows the decision is stale. It is written with the store's own
``write_part`` + ``commit``, so readers see it exactly like a scan's rows: the latest verdict per
uri is the human one until the image is rescanned. No new column is needed, so existing stores,
compaction and multi-file DuckDB reads are unaffected.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import pyarrow as pa

from deepfake_scan.errors import ScanError
from deepfake_scan.label.items import HUMAN, is_human
from deepfake_scan.storage import get_fs
from deepfake_scan.store import VERDICT_SCHEMA, VerdictStore, new_run_id

DECISIONS = ("real", "fake")


@dataclass(frozen=True)
class Decision:
    uri: str
    label: str
    reviewer: str


@dataclass
class ImportSummary:
    run_id: str
    store: str
    file: str
    decisions: int = 0
    rows: int = 0  # committed
    unchanged: int = 0  # the same reviewer already said the same about the same bytes
    unknown: int = 0  # uris without a verdict in the store
    labels: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def read_decisions(path: str, reviewer: str | None = None) -> list[Decision]:
    """Decisions from CSV (header ``uri,label[,reviewer]``), JSON lines, or a JSON list of
    objects. ``reviewer`` fills rows that name none. The last decision per uri wins."""
    fs, p = get_fs(path)
    try:
        text = fs.cat_file(p).decode("utf-8-sig")
    except FileNotFoundError:
        raise ScanError(f"corrections file not found: {path}") from None
    rows = _parse(text, path)
    decided: dict[str, Decision] = {}
    for n, row in enumerate(rows, start=1):
        decided[str(row.get("uri") or "")] = _decision(row, reviewer, f"{path}: row {n}")
    return list(decided.values())


def _parse(text: str, path: str) -> list[dict]:
    lower = path.lower()
    try:
        if lower.endswith(".json"):
            data = json.loads(text)
            return data if isinstance(data, list) else data["decisions"]
        if lower.endswith((".jsonl", ".ndjson")):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (ValueError, KeyError, TypeError) as e:
        raise ScanError(f"{path}: not valid JSON decisions: {e}") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"uri", "label"} <= set(reader.fieldnames):
        raise ScanError(f"{path}: expected a CSV header with uri,label[,reviewer]")
    return list(reader)


def _decision(row: dict, reviewer: str | None, where: str) -> Decision:
    if not isinstance(row, dict):
        raise ScanError(f"{where}: expected an object with uri and label")
    uri = str(row.get("uri") or "").strip()
    label = str(row.get("label") or "").strip().lower()
    who = str(row.get("reviewer") or reviewer or "").strip()
    if not uri:
        raise ScanError(f"{where}: no uri")
    if label not in DECISIONS:
        raise ScanError(f"{where}: label {label!r} is not one of {', '.join(DECISIONS)}")
    if not who or any(c in who for c in "\n\r"):
        raise ScanError(f"{where}: no reviewer (add a reviewer column or pass --reviewer)")
    return Decision(uri, label, who)


def _latest(store: VerdictStore) -> tuple[dict[str, dict], dict[str, dict]]:
    """Latest model verdict and latest human correction per uri."""
    model: dict[str, dict] = {}
    human: dict[str, dict] = {}
    rows = store.read(all_runs=True).to_pylist()
    for row in sorted(rows, key=lambda r: r["scanned_at"]):  # stable: later commits win ties
        (human if is_human(row["model_id"]) else model)[row["uri"]] = row
    return model, human


def import_corrections(
    file: str, store: str, reviewer: str | None = None, allow_unknown: bool = False
) -> ImportSummary:
    """Commit the decisions in ``file`` to the verdict store ``store`` as one run. All or
    nothing: a bad row, or (unless ``allow_unknown``) a uri the store has never seen, imports
    nothing. Importing the same file twice adds nothing the second time."""
    decisions = read_decisions(file, reviewer)
    vs = VerdictStore(store)
    vs.check_writable()
    summary = ImportSummary(new_run_id(), store, file, decisions=len(decisions))
    model, human = _latest(vs)
    unknown = [d.uri for d in decisions if d.uri not in model]
    summary.unknown = len(unknown)
    if unknown and not allow_unknown:
        raise ScanError(
            f"{len(unknown)} uris in {file} have no verdict in {store} (first: {unknown[0]}); "
            "check --store, or pass --allow-unknown to import them anyway"
        )
    now = datetime.now(timezone.utc)
    rows = []
    for d in decisions:
        base, prev = model.get(d.uri, {}), human.get(d.uri)
        row = _row(d, base, summary.run_id, now)
        if prev and all(prev[k] == row[k] for k in ("label", "model_id", "sha256")):
            summary.unchanged += 1
            continue
        rows.append(row)
    if rows:
        part = vs.write_part(summary.run_id, 0, pa.Table.from_pylist(rows, schema=VERDICT_SCHEMA))
        summary.rows = len(rows)
        summary.labels = {k: sum(r["label"] == k for r in rows) for k in DECISIONS}
        vs.commit(summary.run_id, [part], len(rows), True, kind="corrections", file=file)
    return summary


def _row(d: Decision, base: dict, run_id: str, now: datetime) -> dict:
    return {
        "uri": d.uri,
        "source_etag": base.get("source_etag"),
        "sha256": base.get("sha256"),
        "width": base.get("width"),
        "height": base.get("height"),
        "format": base.get("format"),
        "score": None,
        "label": d.label,
        "error": None,
        "model_id": f"{HUMAN}@{d.reviewer}",
        "run_id": run_id,
        "scanned_at": now,
        "key": base.get("key"),
    }


def corrections_as_training_lists(store: str) -> tuple[list[str], list[str]]:
    """The uris reviewers labelled (real, fake), for ``train --corrections``: the latest
    decision per uri, leaving out decisions about bytes that a later scan found changed."""
    model, human = _latest(VerdictStore(store))
    real, fake = [], []
    for uri, fix in sorted(human.items()):
        now = model.get(uri)
        if now and now["scanned_at"] > fix["scanned_at"] and now["sha256"] != fix["sha256"]:
            continue  # the image changed after the review: the decision is about other bytes
        (real if fix["label"] == "real" else fake).append(uri)
    return real, fake
