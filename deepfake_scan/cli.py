"""The ``deepfake-scan`` command line. Each command parses, calls one library function, prints."""

from __future__ import annotations

import atexit
import gc as collector  # this module's ``gc`` is the verdict store's command
import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from deepfake_scan.errors import ScanError
from deepfake_scan.options import (
    Address,
    BatchSize,
    Compile,
    Concurrency,
    Faces,
    FailAbove,
    Fake,
    ImageColumn,
    JsonOut,
    KeyColumn,
    Manifest,
    MaxPixels,
    Model,
    NumGpus,
    Out,
    Precision,
    Real,
    RescanOnModelChange,
    ReviewBand,
    S3Endpoint,
    Source,
    Threshold,
    band,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Scan media archives for deepfakes and AI-generated images with Ray.",
)
models_app = typer.Typer(no_args_is_help=True, help="Inspect model artifacts.")
app.add_typer(models_app, name="models")
console = Console(stderr=True, soft_wrap=True)  # one error stays one line in job logs


@app.command()
def scan(
    source: Source,
    out: Out,
    model: Model = None,
    batch_size: BatchSize = 64,
    concurrency: Concurrency = None,
    num_gpus: NumGpus = None,
    address: Address = None,
    image_column: ImageColumn = "image",
    key_column: KeyColumn = None,
    max_pixels: MaxPixels = 100_000_000,
    threshold: Threshold = None,
    review_band: ReviewBand = None,
    full: Annotated[bool, typer.Option(help="Rescan inputs that already have verdicts.")] = False,
    rescan_on_model_change: RescanOnModelChange = False,
    manifest: Manifest = None,
    s3_endpoint: S3Endpoint = None,
    faces: Faces = False,
    precision: Precision = "auto",
    compile: Compile = "auto",
    json_out: JsonOut = False,
) -> None:
    """Scan SOURCE and write Parquet verdicts to OUT."""
    from deepfake_scan.scanning import scan as run_scan

    summary = run_scan(
        source,
        out,
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
        faces=faces,
        precision=precision,
        compile=compile,
    )
    _print_summary(summary, json_out)


@app.command()
def demo(
    out: Annotated[str, typer.Option(help="Verdict store to write.")] = "demo-verdicts",
    archive: Annotated[str | None, typer.Option(help="Where to write the sample.")] = None,
    model: Model = None,
    json_out: JsonOut = False,
) -> None:
    """Write a small sample archive (folders, tar shards, Parquet, broken files) and scan it."""
    from deepfake_scan.sample import make_sample_archive
    from deepfake_scan.scanning import scan as run_scan

    archive = archive or f"{out.rstrip('/')}-archive"
    expected = make_sample_archive(archive)
    console.print(f"sample archive: {archive} ({len(expected)} inputs, some broken on purpose)")
    _print_summary(run_scan(archive, out, model=model, max_pixels=5_000_000), json_out)


def _print_summary(summary, json_out: bool) -> None:
    if json_out:
        print(json.dumps(summary.to_dict(), indent=2))
        return
    table = Table(title=f"scan {summary.run_id}", show_header=False)
    table.add_row("source", summary.source)
    table.add_row("verdicts", summary.out)
    table.add_row("model", summary.model_id)
    table.add_row("inputs listed", str(summary.inputs))
    table.add_row("skipped (already scanned)", str(summary.skipped))
    table.add_row("verdicts written", str(summary.rows))
    for label, n in sorted(summary.labels.items()):
        table.add_row(f"  {label}", str(n))
    for code, n in sorted(summary.errors.items()):
        table.add_row(f"  error {code}", str(n))
    if summary.compiled:
        table.add_row("  scored by a compiled model", str(summary.compiled))
    table.add_row("images/s", f"{summary.images_per_s:.1f} ({summary.seconds:.1f} s)")
    Console().print(table)


@app.command()
def nightly(
    source: Source,
    out: Out,
    model: Model = None,
    batch_size: BatchSize = 64,
    concurrency: Concurrency = None,
    num_gpus: NumGpus = None,
    address: Address = None,
    image_column: ImageColumn = "image",
    rescan_on_model_change: RescanOnModelChange = False,
    manifest: Manifest = None,
    s3_endpoint: S3Endpoint = None,
    html: Annotated[str | None, typer.Option(help="(default: OUT/report.html if local)")] = None,
    json_path: Annotated[
        str | None, typer.Option("--json", help="(default: OUT/summary.json)")
    ] = None,
    fail_above: FailAbove = None,
    faces: Faces = False,
    precision: Precision = "auto",
) -> None:
    """Incremental scan of SOURCE, then the report; exit 1 when --fail-above trips."""
    from deepfake_scan.nightly import run_nightly

    result = run_nightly(
        source,
        out,
        html=html,
        json_path=json_path,
        fail_above=fail_above,
        model=model,
        batch_size=batch_size,
        concurrency=concurrency,
        num_gpus=num_gpus,
        address=address,
        image_column=image_column,
        rescan_on_model_change=rescan_on_model_change,
        manifest=manifest,
        s3_endpoint=s3_endpoint,
        faces=faces,
        precision=precision,
    )
    _print_summary(result.scan, json_out=False)
    if result.alert:
        console.print(f"[red]alert:[/red] {result.alert}")
        raise typer.Exit(1)


@app.command()
def report(
    out: Annotated[str, typer.Argument(help="Verdict store.")],
    html: Annotated[str | None, typer.Option(help="Write the HTML report here.")] = None,
    json_path: Annotated[str | None, typer.Option("--json", help="Write a JSON summary.")] = None,
    fail_above: FailAbove = None,
) -> None:
    """Report on a verdict store: runs over time, scores, errors, most suspicious images."""
    from deepfake_scan.report import build_report, last_run_rate

    summary = build_report(out, html)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, default=str)
    rate = last_run_rate(summary)
    console.print(
        f"{summary['images']} images, fake rate {summary['fake_rate']:.2%}; "
        f"last run {rate:.2%}" + (f"; report: {html}" if html else "")
    )
    if fail_above is not None and rate > fail_above:
        console.print(f"[red]alert:[/red] last run's fake rate {rate:.2%} > {fail_above:.2%}")
        raise typer.Exit(1)


@app.command()
def gc(
    out: Annotated[str, typer.Argument(help="Verdict store.")],
    grace: Annotated[
        float, typer.Option(help="Keep unreferenced files younger than this (s).")
    ] = 3600.0,
) -> None:
    """Delete parts no commit references (crash leftovers, compacted parts)."""
    from deepfake_scan.upkeep import gc as run_gc

    result = run_gc(out, grace)
    console.print(f"removed {len(result.removed)} files; {result.kept} committed parts kept")


@app.command()
def compact(
    out: Annotated[str, typer.Argument(help="Verdict store.")],
    target_rows: Annotated[int, typer.Option(min=1, help="Rows per merged part.")] = 1_000_000,
) -> None:
    """Merge small committed parts into larger ones, atomically; readers see the same rows."""
    from deepfake_scan.upkeep import compact as run_compact

    r = run_compact(out, target_rows)
    console.print(f"merged {r.merged} parts into {r.written} ({r.rows} rows)")


@models_app.command("show")
def models_show(
    model: Annotated[str | None, typer.Argument(help="Model dir or URI")] = None,
) -> None:
    """Print a model's card (model.json) and check its weights load."""
    from deepfake_scan.models.artifact import load_model

    _, card = load_model(model)
    print(json.dumps(card.to_dict(), indent=2))


@models_app.command("calibrate")
def models_calibrate(
    model: Annotated[str, typer.Argument(help="Model dir or URI")],
    real: Real,
    fake: Fake,
    out: Annotated[str, typer.Option(help="Model directory or URI to write (may be MODEL).")],
    version: Annotated[str | None, typer.Option(help="New version (default: unchanged)")] = None,
) -> None:
    """Fit how a model's scores of small images (enlarged to its input) are calibrated, on the
    validation split of labelled images; write the model with it to OUT."""
    from deepfake_scan.train.evaluate import recalibrate_upsampling

    try:
        card = recalibrate_upsampling(model, real, fake, out, version)
    except ValueError as e:
        raise ScanError(str(e)) from None
    a, b = card.upsample_calibration
    console.print(f"{card.model_id}: upsample calibration a={a:.3f} b={b:.3f}, written to {out}")


@models_app.command("ensemble")
def models_ensemble(
    models: Annotated[list[str], typer.Argument(help="Two or more model dirs or URIs")],
    real: Real,
    fake: Fake,
    out: Annotated[str, typer.Option(help="Model directory or URI to write.")],
    name: Annotated[str, typer.Option(help="Model name in model.json.")] = "ensemble",
    version: Annotated[str, typer.Option()] = "0.1.0",
) -> None:
    """Combine trained models into one (each at its own input size; logit: the sum of each
    member's logit over its temperature), calibrated and measured on the members' validation
    and test splits of labelled images as the training job does; write it to OUT."""
    from deepfake_scan.train.commands import _command_line
    from deepfake_scan.train.evaluate import build_ensemble

    try:
        card = build_ensemble(models, real, fake, out, name, version, _command_line())
    except ValueError as e:
        raise ScanError(str(e)) from None
    test = card.metrics.get("test", {})
    auc = {v: round(m["auc"], 4) for v, m in test.items() if isinstance(m, dict) and "auc" in m}
    console.print(f"{card.model_id} written to {out}; test AUC {auc}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a ScanError becomes one line on stderr and exit code 2."""
    # The collection at exit walks every object torch, torchvision and Ray made (~1 s of a
    # scan's exit here); frozen, they are skipped. Registered before Ray's shutdown, it runs after.
    atexit.unregister(collector.freeze)
    atexit.register(collector.freeze)
    try:
        rc = app(args=argv, standalone_mode=False)  # typer.Exit(n) comes back as n
    except ScanError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    except typer.Abort:
        return 130
    except typer.TyperException as e:  # usage errors (bad option values) print themselves
        show = getattr(e, "show", None)
        if show is None:
            raise
        show()
        return int(getattr(e, "exit_code", 2))
    return rc if isinstance(rc, int) else 0


def entrypoint() -> None:
    sys.exit(main())


# Commands that live with their own subsystem (imported last: they register on ``app``).
from deepfake_scan.evaluate.commands import register as _register_evaluate  # noqa: E402
from deepfake_scan.label.commands import register as _register_label  # noqa: E402
from deepfake_scan.train.commands import register as _register_train  # noqa: E402

for _register in (_register_train, _register_label, _register_evaluate):
    _register(app)
