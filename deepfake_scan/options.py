"""Command-line options shared by several commands (scan, nightly, label, evaluate, train), and
their parsers: one definition each, so their names, limits and help cannot drift apart.

A module of its own so that every subsystem's commands can import it without importing ``cli``.
"""

from __future__ import annotations

from typing import Annotated

import typer

Source = Annotated[str, typer.Argument(help="Folder, file or URI (s3://, gs://, ...).")]
Out = Annotated[str, typer.Option(help="Verdict store: a folder or URI.")]
Real = Annotated[list[str], typer.Option(help="Real images: folder, shard or URI; repeat.")]
Fake = Annotated[list[str], typer.Option(help="Fake images: folder, shard or URI; repeat.")]
Model = Annotated[str | None, typer.Option(help="Model dir or URI (default: bundled)")]
BatchSize = Annotated[int, typer.Option(min=1, help="Images per model batch.")]
Concurrency = Annotated[int | None, typer.Option(min=1, help="Detector actors.")]
NumGpus = Annotated[float | None, typer.Option(min=0, help="GPUs per actor.")]
Address = Annotated[str | None, typer.Option(help="Ray address (default: local)")]
ImageColumn = Annotated[str, typer.Option(help="Image-bytes column of Parquet.")]
KeyColumn = Annotated[str | None, typer.Option(help="Key column of Parquet.")]
MaxPixels = Annotated[int, typer.Option(help="Decompression-bomb limit.")]
Threshold = Annotated[float | None, typer.Option(min=0, max=1)]
ReviewBand = Annotated[str | None, typer.Option(help="LOW,HIGH: 'uncertain'.")]
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
    typer.Option(help="S3-compatible endpoint (MinIO, Ceph, R2); env: AWS_ENDPOINT_URL_S3"),
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
Compile = Annotated[
    str,
    typer.Option(
        help="torch.compile the model on CPU: auto (2,500+ images an actor), on, off. Each "
        "actor compiles first: a few seconds, ~20 s more the first time on a machine."
    ),
]
FailAbove = Annotated[
    float | None, typer.Option(min=0, max=1, help="Exit 1 if the last run's fake rate is above.")
]


def pair(text: str, example: str = "0.4,0.6") -> tuple[float, float]:
    """``LOW,HIGH`` as two floats, or a usage error."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected LOW,HIGH, e.g. {example}, not {text!r}") from None
    return lo, hi


def band(text: str | None) -> tuple[float, float] | None:
    """A review band ``LOW,HIGH`` within [0, 1]; None stays None (the model's own band)."""
    if text is None:
        return None
    lo, hi = pair(text)
    if not 0 <= lo <= hi <= 1:
        raise typer.BadParameter("need 0 <= LOW <= HIGH <= 1")
    return lo, hi
