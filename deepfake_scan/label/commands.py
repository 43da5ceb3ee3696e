"""``deepfake-scan label`` and ``deepfake-scan corrections import``: parse, call one library
function, print. ``register(app)`` adds both to the main command line."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deepfake_scan.options import (
    Address,
    BatchSize,
    Concurrency,
    ImageColumn,
    JsonOut,
    KeyColumn,
    Manifest,
    MaxPixels,
    Model,
    NumGpus,
    RescanOnModelChange,
    ReviewBand,
    S3Endpoint,
    Source,
    Threshold,
    band,
)

PHASES = {"score": "scoring", "inspect": "hashing, thumbnails", "write": "writing shards"}


class _Bars:
    """The library's progress callback drawn as rich bars, one per phase."""

    def __init__(self, progress: Progress):
        self.progress, self.tasks = progress, {}

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(PHASES.get(phase, phase), total=total)
        self.progress.update(self.tasks[phase], completed=done, total=total)


def label(
    source: Source,
    out: Annotated[str, typer.Option(help="Dataset folder or URI (DEST).")],
    store: Annotated[
        str | None, typer.Option(help="Verdict store (default: DEST/verdicts).")
    ] = None,
    model: Model = None,
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per shard.")] = 1000,
    formats: Annotated[
        list[str] | None, typer.Option("--format", help="Also write labels.jsonl / labels.csv.")
    ] = None,
    dedup: Annotated[str, typer.Option(help="Duplicates to flag: none, exact, near.")] = "near",
    near_distance: Annotated[int, typer.Option(help="pHash bits that may differ.")] = 4,
    keep_one: Annotated[bool, typer.Option(help="One sample per duplicate group.")] = False,
    batch_size: BatchSize = 64,
    concurrency: Concurrency = None,
    num_gpus: NumGpus = None,
    address: Address = None,
    image_column: ImageColumn = "image",
    key_column: KeyColumn = None,
    max_pixels: MaxPixels = 100_000_000,
    threshold: Threshold = None,
    review_band: ReviewBand = None,
    full: Annotated[bool, typer.Option(help="Rescore inputs that already have verdicts.")] = False,
    rescan_on_model_change: RescanOnModelChange = False,
    manifest: Manifest = None,
    s3_endpoint: S3Endpoint = None,
    json_out: JsonOut = False,
) -> None:
    """Score SOURCE and write a labelled WebDataset to DEST.

    Shards split by label (DEST/real, fake, uncertain), a manifest, an errors table and an HTML
    review page of the uncertain band. See docs/labelling.md."""
    from deepfake_scan.label.labelling import label as run_label

    columns = [TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True)) as progress:
        summary = run_label(
            source,
            out,
            progress=_Bars(progress),
            store=store,
            shard_size=shard_size,
            dedup=dedup,
            near_distance=near_distance,
            keep_one=keep_one,
            formats=tuple(formats or ()),
            model=model,
            batch_size=batch_size,
            concurrency=concurrency,
            num_gpus=num_gpus,
            address=address,
            image_column=image_column,
            key_column=key_column,
            max_pixels=max_pixels,
            threshold=threshold,
            review_band=band(review_band),
            full=full,
            rescan_on_model_change=rescan_on_model_change,
            manifest=manifest,
            s3_endpoint=s3_endpoint,
        )
    if json_out:
        print(json.dumps(summary.to_dict(), indent=2))
        return
    Console().print(_summary_table(summary))


def _summary_table(s) -> Table:
    table = Table(title=f"label {s.run_id}", show_header=False)
    table.add_row("dataset", s.dest)
    table.add_row("verdicts", s.store)
    table.add_row("model", f"{s.model_id} (threshold {s.threshold}, band {list(s.review_band)})")
    table.add_row("scored now / skipped", f"{s.scan.get('rows', 0)} / {s.scan.get('skipped', 0)}")
    table.add_row("inputs", str(s.items))
    for lab in (*s.shards, "error"):
        shards = f"  ({s.shards[lab]} shards)" if lab in s.shards else ""
        table.add_row(f"  {lab}", f"{s.labels.get(lab, 0)}{shards}")
    table.add_row("corrected by reviewers", str(s.corrected))
    table.add_row("in shards", str(s.in_shards))
    table.add_row(
        "shards written / kept / removed",
        f"{s.shards_written} / {s.shards_kept} / {s.shards_removed}",
    )
    table.add_row("duplicate groups exact / near", f"{s.exact_groups} / {s.near_groups}")
    table.add_row("duplicates (left out)", f"{s.duplicates} ({s.dropped_duplicates})")
    if s.changed:
        table.add_row("changed since scored (rescan)", str(s.changed))
    table.add_row("to review", f"{s.review}  ({s.dest}/review/index.html)")
    table.add_row("time", f"{s.seconds:.1f} s")
    return table


def corrections_import(
    file: Annotated[str, typer.Argument(help="Decisions: CSV (uri,label,reviewer), JSON(L).")],
    store: Annotated[str, typer.Option(help="Verdict store to merge them into.")],
    reviewer: Annotated[str | None, typer.Option(help="For rows that name no reviewer.")] = None,
    allow_unknown: Annotated[
        bool, typer.Option(help="Import uris the store has no verdict for.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Merge human labels (uri, label, reviewer) into the store as their own committed rows."""
    from deepfake_scan.label.corrections import import_corrections

    s = import_corrections(file, store, reviewer=reviewer, allow_unknown=allow_unknown)
    if json_out:
        print(json.dumps(s.to_dict(), indent=2))
        return
    Console().print(
        f"corrections {s.run_id}: {s.rows} committed to {s.store} "
        f"({', '.join(f'{k} {v}' for k, v in s.labels.items()) or 'none new'}); "
        f"{s.unchanged} already there, {s.unknown} unknown uris",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``label`` and ``corrections import`` to ``app``."""
    app.command("label")(label)
    corrections = typer.Typer(no_args_is_help=True, help="Human review decisions.")
    corrections.command("import")(corrections_import)
    app.add_typer(corrections, name="corrections")
