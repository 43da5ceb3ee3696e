"""Ray Train: ``train_loop_per_worker`` with ``train_epoch`` / ``eval_epoch``, and ``fit``.

Each worker reads its shard of the augmented data through Ray Data, trains the detector with DDP
(and, with ``--gan``, a generator whose newest samples join every batch as extra fakes, beside as
many reals at the generator's resolution), evaluates on its shard of the validation set, and
reports metrics plus a checkpoint every epoch. A run restarted with ``--resume`` continues from
its latest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from deepfake_scan.train.config import TrainConfig

STATE = "state.pt"
HISTORY = "history.json"
GAN_GRIDS = "gan"
_DTYPES = {"pixels": torch.uint8, "label": torch.float32}


@dataclass
class WorkerState:
    """Everything one worker trains, plus the bookkeeping a checkpoint restores."""

    cfg: TrainConfig
    model: torch.nn.Module  # DDP-wrapped when world size > 1
    normalise: object  # the scan's own uint8 NHWC -> float NCHW step (Detector.normalise)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    dtype: torch.dtype | None = None  # autocast dtype of the detector's steps; None = fp32
    gan: object | None = None
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    gan_grids: list[np.ndarray] = field(default_factory=list)


def lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    """One-cycle: linear warm-up to the peak, cosine decay to 1 %; flat past the estimate."""
    warm = max(1, int(total * warmup_fraction))
    if step < warm:
        return 0.04 + 0.96 * step / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _build(cfg: TrainConfig, steps_per_epoch: int) -> WorkerState:
    import ray.train.torch

    from deepfake_scan.detector import Detector
    from deepfake_scan.models.artifact import ModelCard, load_model
    from deepfake_scan.models.registry import create_model

    torch.manual_seed(cfg.seed)  # every worker builds identical initial weights
    device = ray.train.torch.get_device()
    if cfg.init_weights:
        model, _ = load_model(cfg.init_weights)
    else:
        model = create_model(cfg.arch, **cfg.arch_kwargs)
    card = ModelCard(name=cfg.name, architecture=cfg.arch, preprocessing=cfg.preprocessing())
    # Reuse the scan's normalisation so training and inference cannot drift apart.
    normalise = Detector(model, card, device=str(device)).normalise
    model = ray.train.torch.prepare_model(model.train(), move_to_device=False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(1, steps_per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, cfg.warmup_fraction)
    )
    gan = None
    if cfg.gan:
        from deepfake_scan.train.gan import GanConfig, GanTrainer

        gan_cfg = GanConfig(size=cfg.gan_size, z_dim=cfg.gan_z, width=cfg.gan_width)
        gan = GanTrainer(gan_cfg, lr=cfg.gan_lr, device=device)
    return WorkerState(
        cfg, model, normalise, opt, sched, device, train_dtype(cfg.precision, device), gan
    )


def train_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 for ``bf16``, and for ``auto`` where the device has native bf16; else None (fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    from deepfake_scan.detector import cpu_has_bf16

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None


def _autocast(state: WorkerState):
    return torch.autocast(state.device.type, dtype=state.dtype, enabled=state.dtype is not None)


def _restore(state: WorkerState, checkpoint) -> None:
    """Load the latest checkpoint into ``state`` (weights, optimiser, schedule, GAN, history)."""
    from PIL import Image

    with checkpoint.as_directory() as d:
        # weights_only: a checkpoint is tensors and plain containers, never arbitrary objects.
        blob = torch.load(os.path.join(d, STATE), map_location="cpu", weights_only=True)
        with open(os.path.join(d, HISTORY)) as f:
            state.history = json.load(f)
        gdir = os.path.join(d, GAN_GRIDS)
        grids = sorted(os.listdir(gdir)) if state.gan and os.path.isdir(gdir) else []
        state.gan_grids = [np.asarray(Image.open(os.path.join(gdir, g))) for g in grids]
    _unwrap(state.model).load_state_dict(blob["model"])
    state.optimizer.load_state_dict(blob["optimizer"])
    state.scheduler.load_state_dict(blob["scheduler"])
    if state.gan is not None and "gan" in blob:
        state.gan.load_state_dict(blob["gan"])
    state.start_epoch = int(blob["epoch"]) + 1


def _save(state: WorkerState, epoch: int, d: str) -> None:
    from PIL import Image

    blob = {
        "epoch": epoch,
        "model": _unwrap(state.model).state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
    }
    if state.gan is not None:
        blob["gan"] = state.gan.state_dict()
    torch.save(blob, os.path.join(d, STATE))
    with open(os.path.join(d, HISTORY), "w") as f:
        json.dump(state.history, f, indent=1)
    if state.gan is not None:
        os.makedirs(os.path.join(d, GAN_GRIDS))
        for i, grid in enumerate(state.gan_grids):
            Image.fromarray(grid).save(os.path.join(d, GAN_GRIDS, f"epoch_{i:03d}.png"))


def balanced_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE with each class weighted to half the batch: SBI and GAN fakes change the class mix."""
    n_fake = labels.sum().clamp(min=1.0)
    n_real = (1 - labels).sum().clamp(min=1.0)
    weights = torch.where(labels > 0.5, 0.5 / n_fake, 0.5 / n_real)
    return (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).sum()


def _gan_examples(state: WorkerState, real_pixels: torch.Tensor, rng: np.random.Generator):
    """Train the GAN one step on the batch's real images; return its newest samples as extra
    fakes, and as many of the batch's reals brought to the GAN's resolution as extra reals.

    Both go through the same augmentations and are fitted up from the GAN's resolution to the
    input size, so blur from upsampling is on both sides and never tells a GAN fake from a real
    by itself. Returns (uint8 NHWC views, labels 1 fake / 0 real, GAN losses)."""
    from PIL import Image

    from deepfake_scan.train.augment import train_view
    from deepfake_scan.train.gan import to_gan_input, to_uint8

    cfg, gan = state.cfg, state.gan
    losses = {}
    # Every worker must take the step or none: the GAN's gradients are all-reduced.
    if _everywhere(len(real_pixels) >= 2, state.device):
        losses = gan.step(to_gan_input(real_pixels.to(state.device), cfg.gan_size))
    n = max(1, round(cfg.gan_share * cfg.batch_size))
    with torch.no_grad():
        gan.G.eval()
        samples = to_uint8(gan.G.sample(n))
        gan.G.train()
        low_reals = to_uint8(to_gan_input(real_pixels[:n].cpu(), cfg.gan_size))
    pre = cfg.preprocessing()
    views = [
        train_view(Image.fromarray(s.numpy()), rng, cfg.augment, pre, cfg.train_crop)
        for s in (*samples, *low_reals)
    ]
    labels = torch.cat([torch.ones(len(samples)), torch.zeros(len(low_reals))])
    return torch.from_numpy(np.stack(views)), labels, losses


def _everywhere(flag: bool, device: torch.device) -> bool:
    """True only if ``flag`` is true on every worker. (On GPU workers the NCCL backend only
    reduces CUDA tensors.)"""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _progress(step: int, batch: int, losses: list[float], t0: float, every: int = 50) -> None:
    """A line every ``every`` steps from rank 0, so a long CPU run shows it is alive."""
    import ray.train

    if (step + 1) % every == 0 and ray.train.get_context().get_world_rank() == 0:
        rate = (step + 1) * batch / (time.time() - t0)
        recent = float(np.mean(losses[-every:]))
        print(f"step {step + 1}: loss {recent:.4f}, {rate:.1f} images/s", flush=True)


def _with_adversarial(state: WorkerState, x: torch.Tensor, y: torch.Tensor, rng):
    """Add FGSM copies of the batch (eps 1-4/255, the range the evaluation attacks): the
    detector learns not to flip on perturbations that small."""
    from deepfake_scan.evaluate.attacks import fgsm

    pre = state.cfg.preprocessing()
    eps = float(rng.uniform(1, 4)) / 255
    # The unwrapped module: DDP must not see a forward without its backward.
    x_adv = fgsm(_unwrap(state.model), x, y, eps, pre.mean, pre.std)
    return torch.cat([x, x_adv]), torch.cat([y, y])


def train_epoch(state: WorkerState, shard, rng: np.random.Generator) -> dict:
    """One pass over this worker's training shard; returns loss, accuracy and AUC inputs."""
    state.model.train()
    losses, scores, labels, gan_losses = [], [], [], []
    t0 = time.time()
    batches = shard.iter_torch_batches(
        batch_size=state.cfg.batch_size, dtypes=_DTYPES, drop_last=True
    )
    for step, batch in enumerate(batches):
        if state.cfg.max_steps_per_epoch and step >= state.cfg.max_steps_per_epoch:
            break
        pixels, y = batch["pixels"], batch["label"]
        if state.gan is not None:
            extra, extra_y, gl = _gan_examples(state, pixels[y < 0.5], rng)
            # Ray puts batches on the worker's device; the GAN's examples come back on the CPU.
            pixels = torch.cat([pixels, extra.to(pixels.device)])
            y = torch.cat([y, extra_y.to(y.device, y.dtype)])
            gan_losses.append(gl)
        y = y.to(state.device)
        x = state.normalise(pixels)
        if state.cfg.adversarial:
            x, y = _with_adversarial(state, x, y, rng)
        with _autocast(state):
            logits = state.model(x).float()
        loss = balanced_bce(logits, y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
        losses.append(loss.item())
        scores.append(torch.sigmoid(logits.detach()).cpu().numpy())
        labels.append(y.cpu().numpy())
        _progress(step, len(y), losses, t0)
    out = {"loss": float(np.mean(losses)) if losses else float("nan"), "steps": len(losses)}
    out["scores"] = np.concatenate(scores) if scores else np.zeros(0)
    out["labels"] = np.concatenate(labels) if labels else np.zeros(0)
    for key in ("gan_d_loss", "gan_g_loss"):
        vals = [g[key] for g in gan_losses if key in g]
        if vals:
            out[key] = float(np.mean(vals))
    return out


@torch.no_grad()
def eval_epoch(state: WorkerState, shard) -> dict:
    """Scores on this worker's validation shard, as-is and identically re-encoded."""
    state.model.eval()
    out: dict[str, list] = {"logits": [], "logits_reencoded": [], "labels": []}
    dtypes = {**_DTYPES, "pixels_reencoded": torch.uint8}
    for batch in shard.iter_torch_batches(batch_size=64, dtypes=dtypes):
        with _autocast(state):
            logits = state.model(state.normalise(batch["pixels"])).float()
            reenc = state.model(state.normalise(batch["pixels_reencoded"])).float()
        out["logits"].append(logits.cpu().numpy())
        out["logits_reencoded"].append(reenc.cpu().numpy())
        out["labels"].append(batch["label"].cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _gather(arr: np.ndarray) -> np.ndarray:
    """Concatenate an array from every worker (validation AUC needs all scores together)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return arr
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, arr)
    return np.concatenate(parts)


def epoch_metrics(tr: dict, ev: dict) -> dict:
    """The per-epoch numbers reported to Ray Train and drawn in the report."""
    from deepfake_scan.metrics import binary_metrics, sigmoid

    y_tr, y_val = _gather(tr["labels"]), _gather(ev["labels"])
    logits, logits_re = _gather(ev["logits"]), _gather(ev["logits_reencoded"])
    train = binary_metrics(y_tr, _gather(tr["scores"]))
    val = binary_metrics(y_val, sigmoid(logits))
    val_re = binary_metrics(y_val, sigmoid(logits_re))
    val_loss = float(np.mean(np.logaddexp(0.0, logits) - y_val * logits)) if len(y_val) else 0.0
    m = {"train_loss": tr["loss"], "train_acc": train["acc"], "train_auc": train["auc"]}
    m["val_loss"] = val_loss
    m.update({f"val_{k}": val[k] for k in ("auc", "ap", "acc", "real_acc", "fake_acc", "eer")})
    m.update({"val_reencoded_auc": val_re["auc"], "val_reencoded_acc": val_re["acc"]})
    m.update({k: tr[k] for k in ("gan_d_loss", "gan_g_loss") if k in tr})
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}


def _gan_grid(state: WorkerState, n: int = 16) -> np.ndarray:
    """Samples from a fixed noise seed, so epochs can be compared image for image."""
    from deepfake_scan.train.gan import to_uint8

    g = torch.Generator().manual_seed(1234)
    state.gan.G.eval()
    with torch.no_grad():
        imgs = to_uint8(state.gan.G.sample(n, generator=g)).numpy()
    state.gan.G.train()
    side = int(math.sqrt(n))
    h, w = imgs.shape[1:3]
    return imgs.reshape(side, side, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(side * h, side * w, 3)


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    cfg = TrainConfig.from_dict(config["cfg"])
    torch.set_num_threads(cfg.torch_threads)
    state = _build(cfg, int(config["steps_per_epoch"]))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        _restore(state, checkpoint)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    rng = np.random.default_rng([cfg.seed, rank, state.start_epoch])
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(state.start_epoch, cfg.epochs):
        t0 = time.time()
        metrics = epoch_metrics(train_epoch(state, train_shard, rng), eval_epoch(state, val_shard))
        metrics.update(epoch=epoch, seconds=round(time.time() - t0, 1))
        metrics["lr"] = state.scheduler.get_last_lr()[0]
        state.history.append(metrics)
        if state.gan is not None:
            state.gan_grids.append(_gan_grid(state))
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                _save(state, epoch, d)
                ckpt = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"epoch_{epoch:03d}")


def steps_per_epoch(cfg: TrainConfig, summary: dict) -> int:
    """Expected optimiser steps per epoch (the schedule's length): SBI adds fakes from reals."""
    real, fake = summary["train"]["real"], summary["train"]["fake"]
    rows = real + fake + (int(real * cfg.sbi_share) if cfg.sbi else 0)
    steps = max(1, rows // (cfg.batch_size * cfg.num_workers))
    return min(steps, cfg.max_steps_per_epoch or steps)


def prepare_checkpoints(cfg: TrainConfig) -> tuple[str, str]:
    """(storage_path, run name) for Ray Train; a fresh run clears an earlier run's checkpoints.

    Ray Train restores a run from its storage automatically, so without ``--resume`` the old
    checkpoints must go, or a "new" run would silently continue an old one.
    """
    from deepfake_scan.storage import get_fs, join

    root = cfg.checkpoint_root
    if "://" not in root:
        root = os.path.abspath(root)
    fs, path = get_fs(root)
    run_path = join(path, "train")
    if not cfg.resume and fs.exists(run_path):
        fs.rm(run_path, recursive=True)
    return root, "train"


def fit(cfg: TrainConfig, datasets: dict, summary: dict):
    """Run the Ray Train job; returns its ``Result`` (whose checkpoint is the last epoch)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from deepfake_scan.train.data import eval_batch, train_batch

    cfg_dict = cfg.to_dict()
    storage, name = prepare_checkpoints(cfg)
    data = {
        "train": datasets["train"]
        .random_shuffle(seed=None)
        .map_batches(train_batch, fn_kwargs={"cfg": cfg_dict}, batch_size=32),
        "val": datasets["val"].map_batches(eval_batch, fn_kwargs={"cfg": cfg_dict}, batch_size=32),
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg_dict, "steps_per_epoch": steps_per_epoch(cfg, summary)},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0),
        ),
        datasets=data,
    )
    return trainer.fit()


def read_checkpoint(checkpoint) -> tuple[dict, list[dict], list[np.ndarray]]:
    """(tensors, history, GAN grids) from a checkpoint written by ``train_loop_per_worker``."""
    from PIL import Image

    with checkpoint.as_directory() as d:
        blob = torch.load(os.path.join(d, STATE), map_location="cpu", weights_only=True)
        with open(os.path.join(d, HISTORY)) as f:
            history = json.load(f)
        gdir = os.path.join(d, GAN_GRIDS)
        names = sorted(os.listdir(gdir)) if os.path.isdir(gdir) else []
        grids = [np.asarray(Image.open(os.path.join(gdir, n)).convert("RGB")) for n in names]
    return blob, history, grids
