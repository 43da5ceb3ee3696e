"""The ``deepfake-scan`` command line. Each command parses, calls one library function, prints."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from deepfake_scan.errors import ScanError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Scan media archives for deepfakes and AI-generated images with Ray.",
)
models_app = typer.Typer(no_args_is_help=True, help="Inspect model artifacts.")
app.add_typer(models_app, name="models")
console = Console(stderr=True, soft_wrap=True)  # one error stays one line in job logs


# Options shared by the commands that scan.
Source = Annotated[str, typer.Argument(help="Folder, file or URI (s3://, gs://, ...).")]
Out = Annotated[str, typer.Option(help="Verdict store: a folder or URI.")]
Model = Annotated[str | None, typer.Option(help="Model dir or URI [default: bundled]")]
BatchSize = Annotated[int, typer.Option(min=1, help="Images per model batch.")]
Concurrency = Annotated[int | None, typer.Option(min=1, help="Detector actors.")]
NumGpus = Annotated[float | None, typer.Option(min=0, help="GPUs per actor.")]
Address = Annotated[str | None, typer.Option(help="Ray address [default: local]")]
ImageColumn = Annotated[str, typer.Option(help="Image-bytes column of Parquet.")]
RescanOnModelChange = Annotated[
    bool, typer.Option(help="Rescan inputs scored by another version of the model.")
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
Manifest = Annotated[
    str | None,
    typer.Option(help="Parquet/CSV of URIs, or an S3 Inventory manifest.json: skips listing."),
]
S3Endpoint = Annotated[
    str | None,
    typer.Option(help="S3-compatible endpoint URL (MinIO, Ceph, R2) [env: AWS_ENDPOINT_URL_S3]"),
]
Faces = Annotated[
    bool, typer.Option(help="Score each face found (per-face results in column faces).")
]
Precision = Annotated[
    str,
    typer.Option(
        help="Model arithmetic: auto (fp16 on GPU, bf16 on CPUs with native bf16), fp32, bf16, "
        "fp16."
    ),
]
FailAbove = Annotated[
    float | None, typer.Option(min=0, max=1, help="Exit 1 if the last run's fake rate is above.")
]


def _pair(text: str, example: str = "0.4,0.6") -> tuple[float, float]:
    """``LOW,HIGH`` as two floats, or a usage error."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected LOW,HIGH, e.g. {example}, not {text!r}") from None
    return lo, hi


def _band(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    lo, hi = _pair(text)
    if not 0 <= lo <= hi <= 1:
        raise typer.BadParameter("need 0 <= LOW <= HIGH <= 1")
    return lo, hi


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
    key_column: Annotated[str | None, typer.Option(help="Key column of Parquet.")] = None,
    max_pixels: Annotated[int, typer.Option(help="Decompression-bomb limit.")] = 100_000_000,
    threshold: Annotated[float | None, typer.Option(min=0, max=1)] = None,
    review_band: Annotated[str | None, typer.Option(help="LOW,HIGH: 'uncertain'.")] = None,
    full: Annotated[bool, typer.Option(help="Rescan inputs that already have verdicts.")] = False,
    rescan_on_model_change: RescanOnModelChange = False,
    manifest: Manifest = None,
    s3_endpoint: S3Endpoint = None,
    faces: Faces = False,
    precision: Precision = "auto",
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
        review_band=_band(review_band),
        full=full,
        rescan_on_model_change=rescan_on_model_change,
        manifest=manifest,
        s3_endpoint=s3_endpoint,
        faces=faces,
        precision=precision,
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
    html: Annotated[str | None, typer.Option(help="[default: OUT/report.html if local]")] = None,
    json_path: Annotated[
        str | None, typer.Option("--json", help="[default: OUT/summary.json]")
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
    fail_above: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="Exit 1 if the last run's fake rate is above."),
    ] = None,
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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a ScanError becomes one line on stderr and exit code 2."""
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


# Commands that live with their own subsystem (imported last: they reuse the options above).
from deepfake_scan.evaluate.commands import register as _register_evaluate  # noqa: E402
from deepfake_scan.label.commands import register as _register_label  # noqa: E402
from deepfake_scan.train.commands import register as _register_train  # noqa: E402

for _register in (_register_train, _register_label, _register_evaluate):
    _register(app)
