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
console = Console(stderr=True)


def _band(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter("expected LOW,HIGH, e.g. 0.4,0.6") from None
    if not 0 <= lo <= hi <= 1:
        raise typer.BadParameter("need 0 <= LOW <= HIGH <= 1")
    return lo, hi


@app.command()
def scan(
    source: Annotated[str, typer.Argument(help="Folder, file or URI (s3://, gs://, ...).")],
    out: Annotated[str, typer.Option(help="Verdict store: a folder or URI.")],
    model: Annotated[str | None, typer.Option(help="Model dir or URI [default: bundled]")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model forward.")] = 64,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Detector actors.")] = None,
    num_gpus: Annotated[float | None, typer.Option(min=0, help="GPUs per actor.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray address [default: local]")] = None,
    image_column: Annotated[str, typer.Option(help="Image-bytes column of Parquet.")] = "image",
    key_column: Annotated[str | None, typer.Option(help="Key column of Parquet.")] = None,
    max_pixels: Annotated[int, typer.Option(help="Decompression-bomb limit.")] = 100_000_000,
    threshold: Annotated[float | None, typer.Option(min=0, max=1)] = None,
    review_band: Annotated[str | None, typer.Option(help="LOW,HIGH: 'uncertain'.")] = None,
    full: Annotated[bool, typer.Option(help="Rescan inputs that already have verdicts.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
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
    )
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
        app(args=argv, standalone_mode=False)
    except ScanError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    except typer.Abort:
        return 130
    except Exception as e:  # click's usage errors carry their own exit code
        from click import ClickException

        if isinstance(e, ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


def entrypoint() -> None:
    sys.exit(main())
