"""The training job end to end: data -> Ray Train -> calibration and test -> artifact + report."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import numpy as np

from deepfake_scan.errors import ScanError
from deepfake_scan.train.config import TrainConfig

log = logging.getLogger(__name__)


def ensure_ray(address: str | None) -> None:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local Ray; idempotent."""
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    # Per-operator progress lines every few seconds would bury the training log.
    ray.data.DataContext.get_current().enable_progress_bars = False


def _match_start(cfg: TrainConfig) -> None:
    """Training from --init-weights builds that model's architecture, with its arguments."""
    from deepfake_scan.models.artifact import read_card

    start = read_card(cfg.init_weights)
    if start.architecture != cfg.arch:
        raise ScanError(
            f"--init-weights {cfg.init_weights} is a {start.architecture} model, not {cfg.arch}"
        )
    cfg.arch_kwargs = dict(start.arch_kwargs)


def _check_gpus(cfg: TrainConfig) -> None:
    """--use-gpu on a cluster without enough GPUs: say so now, not after Ray Train's timeout."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if cfg.use_gpu and gpus < cfg.num_workers:
        raise ScanError(
            f"--use-gpu needs one GPU per worker ({cfg.num_workers}); the Ray cluster has {gpus:g}"
        )


def _fetch(ds, limit: int) -> list[dict]:
    return ds.limit(limit).select_columns(["data", "label"]).take_all()


def run_training(cfg: TrainConfig) -> dict:
    """Train, evaluate and save; returns a summary dict (model dir, card fields, timings)."""

    from deepfake_scan.detector import Detector
    from deepfake_scan.models.artifact import ModelCard, save_model
    from deepfake_scan.models.registry import create_model
    from deepfake_scan.train import data, loop
    from deepfake_scan.train.evaluate import apply_evaluation, evaluate
    from deepfake_scan.train.report import write_model_card, write_report

    cfg.validate()
    if cfg.init_weights:
        _match_start(cfg)
    t0 = time.time()
    rows = data.list_labelled(cfg)  # a wrong source fails here, before Ray starts
    ensure_ray(cfg.address)
    _check_gpus(cfg)
    records = data.load_records(cfg, rows)
    summary = data.dataset_summary(records)
    log.info("data: %s", summary)
    splits = data.split_datasets(records)
    if not summary["train"]["real"] or not summary["train"]["fake"]:
        raise ValueError(f"the training split needs both classes; got {summary['train']}")
    result = loop.fit(cfg, splits, summary)
    blob, history, gan_grids = loop.read_checkpoint(result.checkpoint)
    train_s = time.time() - t0

    model = create_model(cfg.arch, **cfg.arch_kwargs)
    model.load_state_dict(blob["model"])
    card = ModelCard(
        name=cfg.name,
        architecture=cfg.arch,
        version=cfg.version,
        arch_kwargs=dict(cfg.arch_kwargs),
        preprocessing=cfg.preprocessing(),
    )
    if cfg.face_geometry() is not None:
        card.faces = cfg.face_geometry().to_dict()
    detector = Detector(model, card, device="cpu")
    val_rows, test_rows = (
        _fetch(splits["val"], cfg.eval_limit),
        _fetch(splits["test"], cfg.eval_limit),
    )
    ev = apply_evaluation(card, evaluate(detector, val_rows, test_rows, cfg))
    card.training = _training_summary(cfg, summary, history, train_s)
    card.command = cfg.command
    card = save_model(detector.model, cfg.out, card)
    if cfg.gan and "gan" in blob:
        _save_gan(cfg, blob["gan"])
    report_dir = write_report(cfg.out, history, ev, gan_grids)
    write_model_card(cfg.out, card)
    return {
        "out": cfg.out,
        "model_id": card.model_id,
        "report": report_dir,
        "threshold": card.threshold,
        "review_band": card.review_band,
        "temperature": card.temperature,
        "metrics": _headline(card.metrics),
        "seconds": round(time.time() - t0, 1),
    }


def _save_gan(cfg: TrainConfig, state: dict) -> None:
    from deepfake_scan.train.gan import GanConfig, Generator, save_generator

    G = Generator(GanConfig(size=cfg.gan_size, z_dim=cfg.gan_z, width=cfg.gan_width))
    G.load_state_dict(state["G"])
    save_generator(G, cfg.out)


def _training_summary(cfg: TrainConfig, summary: dict, history: list[dict], seconds: float):
    return {
        "data": {"real": cfg.real, "fake": cfg.fake, "counts": summary},
        "split": cfg.split_rule,
        "config": asdict(cfg),
        "history": history,
        "seconds": round(seconds, 1),
    }


def _headline(metrics: dict) -> dict:
    """The few numbers a person reads first (full metrics are in model.json)."""
    out = {f"val_{v}_auc": m["auc"] for v, m in metrics.get("val", {}).items()}
    for view, m in metrics.get("test", {}).items():
        if view == "auc_drop":
            out.update({f"test_auc_drop_{k}": d for k, d in m.items()})
        else:
            out[f"test_{view}_auc"] = m["auc"]
            out[f"test_{view}_acc"] = m["acc"]
    return {
        k: (round(v, 4) if isinstance(v, float) and np.isfinite(v) else v) for k, v in out.items()
    }
