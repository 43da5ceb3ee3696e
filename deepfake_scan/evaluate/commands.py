"""``deepfake-scan evaluate``: parse, call ``deepfake_scan.evaluate.run.evaluate``, print.
``register(app)`` adds it to the main command line."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from deepfake_scan.evaluate.launder import DEFAULT_VIEWS
from deepfake_scan.options import (
    Address,
    BatchSize,
    Concurrency,
    Fake,
    ImageColumn,
    JsonOut,
    MaxPixels,
    Model,
    NumGpus,
    Real,
    ReviewBand,
    S3Endpoint,
    Threshold,
    band,
)


def _names(text: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A comma list of names; ``none`` (or empty) for none of them."""
    names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise typer.BadParameter(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return names


def _epsilons(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) / 255 for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter("expected levels out of 255, e.g. 1,2,4") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise typer.BadParameter("epsilons are grey levels in (0, 255], e.g. 1,2,4")
    return values


def evaluate(
    real: Real,
    fake: Fake,
    out: Annotated[str, typer.Option(help="Report folder or URI.")],
    model: Model = None,
    views: Annotated[str, typer.Option(help="Launderings, comma-separated, or 'none'.")] = ",".join(
        v for v in DEFAULT_VIEWS if v != "none"
    ),
    # Defaults as literals (like --epsilons): attacks.py imports torch, the CLI should not.
    attacks: Annotated[str, typer.Option(help="fgsm,pgd or 'none'.")] = "fgsm,pgd",
    epsilons: Annotated[str, typer.Option(help="Attack budgets in grey levels /255.")] = "1,2,4",
    pgd_steps: Annotated[int, typer.Option(min=1, help="PGD iterations.")] = 10,
    attack_share: Annotated[
        float, typer.Option(min=0, max=1, help="Share of fakes attacked (by content hash).")
    ] = 1.0,
    compare: Annotated[
        str | None, typer.Option(help="Another evaluation's summary.json: adds differences.")
    ] = None,
    worst: Annotated[int, typer.Option(min=0, help="Images per worst-mistakes sheet.")] = 16,
    batch_size: BatchSize = 64,
    concurrency: Concurrency = None,
    num_gpus: NumGpus = None,
    address: Address = None,
    image_column: ImageColumn = "image",
    max_pixels: MaxPixels = 100_000_000,
    threshold: Threshold = None,
    review_band: ReviewBand = None,
    s3_endpoint: S3Endpoint = None,
    json_out: JsonOut = False,
) -> None:
    """Evaluate a model on labelled REAL and FAKE sources: metrics per source, laundering and
    adversarial robustness, as OUT/report.html, summary.json and PNGs. See docs/evaluate.md."""
    from deepfake_scan.evaluate.attacks import ATTACKS
    from deepfake_scan.evaluate.launder import LAUNDERINGS
    from deepfake_scan.evaluate.run import evaluate as run_evaluate

    summary = run_evaluate(
        real,
        fake,
        out,
        model=model,
        views=_names(views, tuple(LAUNDERINGS), "laundering"),
        attacks=_names(attacks, ATTACKS, "attack"),
        epsilons=_epsilons(epsilons),
        pgd_steps=pgd_steps,
        attack_share=attack_share,
        compare=compare,
        worst=worst,
        batch_size=batch_size,
        concurrency=concurrency,
        num_gpus=num_gpus,
        address=address,
        image_column=image_column,
        max_pixels=max_pixels,
        threshold=threshold,
        review_band=band(review_band),
        s3_endpoint=s3_endpoint,
    )
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    Console().print(_summary_table(summary, out))


def _cell(v) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _summary_table(s: dict, out: str) -> Table:
    m, c, overall = s["model"], s["counts"], s["metrics"]["overall"]
    table = Table(title=f"evaluation of {m['model_id']}", show_header=False)
    table.add_row("images real / fake", f"{c['scored']['real']} / {c['scored']['fake']}")
    table.add_row("unreadable", str(c["unreadable"]))
    for key in ("auc", "ap", "acc", "real_acc", "fake_acc", "eer", "ece", "review_rate"):
        table.add_row(key, _cell(overall[key]))
    for r in s["robustness"][1:]:
        table.add_row(f"  AUC {r['view']}", f"{_cell(r['auc'])} ({_cell(r['auc_change'])})")
    for r in s["adversarial"]:
        table.add_row(
            f"  {r['attack']} {r['epsilon']}",
            f"turned real {r['turned_real']}/{r['n']}, fake acc {_cell(r['fake_acc_after'])}",
        )
    table.add_row("report", f"{out.rstrip('/')}/report.html")
    return table


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to ``app``."""
    app.command("evaluate")(evaluate)
