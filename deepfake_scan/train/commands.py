"""``deepfake-scan train`` and ``deepfake-scan synth``: parse, call one library function, print."""

from __future__ import annotations

import json
import os
import shlex
import sys
from contextvars import ContextVar
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from deepfake_scan.errors import ScanError
from deepfake_scan.options import Address, Fake, JsonOut, Real, pair
from deepfake_scan.train.config import AugmentConfig

# The argument list ``main`` was given, and by which program: the recorded command must be the
# one that ran, also when the CLI is called from Python (tests, notebooks) rather than a shell.
_INVOCATION: ContextVar[tuple[str, list[str]] | None] = ContextVar("invocation", default=None)


def _command_line() -> str:
    """The command as a user would retype it (recorded in model.json and the model card)."""
    given = _INVOCATION.get()
    if given is not None:
        prog, argv = given
        if argv and prog.endswith(f"jobs.{argv[0]}"):
            argv = argv[1:]  # the job entrypoint implies its command
        return shlex.join([*shlex.split(prog), *argv])
    args = sys.argv[1:]
    if os.path.basename(sys.argv[0]) == "__main__.py" or sys.argv[0].endswith(".py"):
        return shlex.join(["python", sys.argv[0], *args])
    return shlex.join(["deepfake-scan", *args])


def train(
    real: Real,
    fake: Fake,
    out: Annotated[str, typer.Option(help="Model directory or URI to write.")],
    arch: Annotated[
        str, typer.Option(help="Architecture name in the model registry.")
    ] = "npr_resnet",
    epochs: Annotated[int, typer.Option(min=1)] = 6,
    input_size: Annotated[int, typer.Option(min=8, help="Model input side in pixels.")] = 160,
    train_crop: Annotated[
        int | None,
        typer.Option(
            min=8,
            help="Train on random crops of this side, taken at the "
            "scan's scale (after fitting to --input-size).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=2, help="Images per worker step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, one-cycle).")] = 2e-3,
    corrections: Annotated[
        list[str] | None, typer.Option(help="Verdict store with human corrections; repeat.")
    ] = None,
    weight_decay: Annotated[float, typer.Option()] = 0.05,
    adversarial: Annotated[
        bool, typer.Option(help="Add FGSM adversarial copies of each batch.")
    ] = False,
    rescale_prob: Annotated[
        float, typer.Option(min=0, max=1, help="Share of images resized first (--rescale).")
    ] = AugmentConfig.rescale_prob,
    rescale: Annotated[str, typer.Option(help="LOW,HIGH: range of the resize factor.")] = (
        "{},{}".format(*AugmentConfig.rescale)
    ),
    blur_prob: Annotated[float, typer.Option(min=0, max=1)] = AugmentConfig.blur_prob,
    jpeg_light_share: Annotated[
        float, typer.Option(min=0, max=1, help="Share re-encoded at q75-100, not q30-100.")
    ] = AugmentConfig.jpeg_light_share,
    gan: Annotated[
        bool, typer.Option(help="Train a GAN; its samples join batches as fakes.")
    ] = False,
    gan_share: Annotated[
        float, typer.Option(min=0, max=1, help="GAN fakes (and low-res reals) per batch.")
    ] = 0.125,
    sbi: Annotated[
        bool, typer.Option(help="Add self-blended pseudo-fakes from real images.")
    ] = False,
    sbi_share: Annotated[float, typer.Option(min=0, max=1, help="Chance per real image.")] = 0.5,
    faces: Annotated[
        bool, typer.Option(help="Train on face crops, cropped as scan --faces crops them.")
    ] = False,
    face_only: Annotated[
        bool, typer.Option(help="With --faces: leave out images without a face.")
    ] = False,
    num_workers: Annotated[int, typer.Option(min=1, help="Ray Train workers.")] = 1,
    cpus_per_worker: Annotated[float, typer.Option(min=0.1)] = 1.0,
    threads_per_worker: Annotated[int | None, typer.Option(min=1)] = None,
    use_gpu: Annotated[bool, typer.Option(help="One GPU per worker.")] = False,
    precision: Annotated[
        str,
        typer.Option(
            help="Training arithmetic: auto (bf16 autocast where the device has native bf16, "
            "else fp32), bf16, fp32."
        ),
    ] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint.")] = False,
    checkpoint_dir: Annotated[str | None, typer.Option(help="(default: OUT/checkpoints)")] = None,
    init_weights: Annotated[str | None, typer.Option(help="Model dir to start from.")] = None,
    limit_per_class: Annotated[int | None, typer.Option(min=1)] = None,
    max_steps_per_epoch: Annotated[int | None, typer.Option(min=1)] = None,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.5)] = 0.1,
    test_fraction: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.1,
    name: Annotated[str, typer.Option(help="Model name in model.json.")] = "deepfake-detector",
    version: Annotated[str, typer.Option()] = "0.1.0",
    seed: Annotated[int, typer.Option()] = 0,
    address: Address = None,
    json_out: JsonOut = False,
) -> None:
    """Train a detector on Ray Train and write the model artifact and its report to OUT."""
    from deepfake_scan.train.config import TrainConfig
    from deepfake_scan.train.job import run_training

    cfg = TrainConfig(
        real=real, fake=fake, corrections=corrections or [],
        out=out, arch=arch, epochs=epochs, input_size=input_size,
        train_crop=train_crop,
        augment=AugmentConfig(
            rescale_prob=rescale_prob, rescale=pair(rescale, "0.45,1.3"), blur_prob=blur_prob,
            jpeg_light_share=jpeg_light_share,
        ),
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, gan=gan, gan_share=gan_share,
        sbi=sbi, sbi_share=sbi_share, faces=faces, face_only=face_only,
        adversarial=adversarial, num_workers=num_workers,
        cpus_per_worker=cpus_per_worker,
        threads_per_worker=threads_per_worker, use_gpu=use_gpu, precision=precision,
        resume=resume,
        checkpoint_dir=checkpoint_dir, init_weights=init_weights, limit_per_class=limit_per_class,
        max_steps_per_epoch=max_steps_per_epoch, val_fraction=val_fraction,
        test_fraction=test_fraction, name=name, version=version, seed=seed, address=address,
        command=_command_line(),
    )  # fmt: skip
    try:
        cfg.validate()
    except ValueError as e:
        raise ScanError(str(e)) from None
    summary = run_training(cfg)
    if json_out:
        print(json.dumps(summary, indent=2, default=str))
        return
    table = Table(title=f"trained {summary['model_id']}", show_header=False)
    for key in ("out", "report", "threshold", "review_band", "temperature", "seconds"):
        table.add_row(key, str(summary[key]))
    for key, value in summary["metrics"].items():
        table.add_row(key, str(value))
    Console().print(table)


def synth(
    generator: Annotated[str, typer.Option(help="Generator dir, or a model dir holding one.")],
    n: Annotated[int, typer.Option(min=1, help="Number of images.")],
    out: Annotated[str, typer.Option(help="Folder or URI for the PNG files.")],
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write N images from a trained GAN generator as PNG files (for labelling or training)."""
    from deepfake_scan.train.synth import synthesize

    paths = synthesize(generator, n, out, seed=seed)
    Console(stderr=True).print(f"wrote {len(paths)} images to {out}")


def register(app: typer.Typer) -> None:
    """Add the ``train`` and ``synth`` commands to the CLI."""
    app.command("train")(train)
    app.command("synth")(synth)


def main(argv: list[str] | None = None, prog: str = "deepfake-scan") -> int:
    """Entry point of ``jobs/train.py`` and ``jobs/synth.py``: the CLI, remembering the exact
    command so the model card can record it."""
    from deepfake_scan.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    token = _INVOCATION.set((prog, argv))
    try:
        return cli_main(argv)
    finally:
        _INVOCATION.reset(token)
