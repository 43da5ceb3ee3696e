"""White-box adversarial examples on the detector's input: FGSM and PGD in the L-infinity ball.

``eps`` is in pixel units of [0, 1] (1/255 = one grey level). The functions take and return the
*normalised* NCHW tensor the model eats, but the ball and the valid range [0, 1] are enforced in
pixel space, so the adversarial image is one a file could hold (FGSM at 1/255 moves every pixel
by exactly one level and survives 8-bit quantisation).

``fgsm`` and ``pgd`` are also the hook for adversarial training: called on a batch with its labels,
they return inputs that raise the loss of both classes (fakes move towards "real", reals towards
"fake"), to be trained on alongside the clean batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ATTACKS = ("fgsm", "pgd")
EPSILONS = (1 / 255, 2 / 255, 4 / 255)
PGD_STEPS = 10


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode while crafting: BatchNorm must use its running statistics (and not update them
    from adversarial batches), dropout must not randomise the gradient. The mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # callers may be inside inference_mode/no_grad
            yield
    finally:
        model.train(was_training)


def _stats(x: torch.Tensor, values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=x.dtype, device=x.device)
    return t.view(1, -1, 1, 1)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    steps: int = PGD_STEPS,
    step_size: float | None = None,
    random_start: bool = True,
    seed: int = 0,
) -> torch.Tensor:
    """Projected gradient ascent on the BCE loss of ``y`` (1 = fake) within ``eps`` of ``x``.

    ``x``: normalised NCHW; ``mean``/``std``: the model's normalisation in [0, 1] units (as in
    ``Preprocessing``). Step size 2.5 * eps / steps and a uniform random start (Madry et al.),
    seeded so a rerun crafts the same examples. Returns normalised NCHW, detached.
    """
    mean_t, std_t = _stats(x, mean), _stats(x, std)
    target = y.to(device=x.device, dtype=torch.float32).view(-1)
    step = 2.5 * eps / max(1, steps) if step_size is None else step_size
    p0 = (x.detach().float() * std_t + mean_t).clamp(0.0, 1.0)
    p = p0.clone()
    if random_start:
        g = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.rand(p.shape, generator=g, dtype=p.dtype).to(p.device)
        p = (p + (2 * noise - 1) * eps).clamp(0.0, 1.0)
    with _frozen(model):
        for _ in range(steps):
            p.requires_grad_(True)
            logits = model((p - mean_t) / std_t).float().view(-1)
            loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, p)
            p = p.detach() + step * grad.sign()
            p = torch.minimum(torch.maximum(p, p0 - eps), p0 + eps).clamp(0.0, 1.0)
    return ((p - mean_t) / std_t).to(x.dtype).detach()


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """Fast gradient sign method: one step of size ``eps`` from ``x`` (Goodfellow et al.).
    Same arguments and result as ``pgd``."""
    return pgd(model, x, y, eps, mean, std, steps=1, step_size=eps, random_start=False)


def attack_columns(attacks: Sequence[str], epsilons: Sequence[float]) -> list[str]:
    """Names of the adversarial score columns, e.g. ``fgsm@1/255``."""
    return [f"{a}@{round(e * 255, 3):g}/255" for a in attacks for e in epsilons]


def attack_detector(
    detector,
    pixels: np.ndarray,
    attacks: Sequence[str] = ATTACKS,
    epsilons: Sequence[float] = EPSILONS,
    pgd_steps: int = PGD_STEPS,
    sizes: np.ndarray | None = None,
) -> np.ndarray:
    """Scores of fakes (uint8 NHWC at the model's input) after every attack: (N, attacks x eps),
    in ``attack_columns`` order. Calibrated like ``Detector.predict_pixels`` (``sizes``: each
    image's original (width, height), for the card's upsample calibration)."""
    pre = detector.card.preprocessing
    x = detector.normalise(torch.from_numpy(np.ascontiguousarray(pixels)))
    y = torch.ones(len(pixels), device=x.device)
    out = []
    for name in attacks:
        for eps in epsilons:
            if name == "fgsm":
                adv = fgsm(detector.model, x, y, eps, pre.mean, pre.std)
            elif name == "pgd":
                adv = pgd(detector.model, x, y, eps, pre.mean, pre.std, steps=pgd_steps)
            else:
                raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
            with torch.inference_mode():
                logits = detector.model(adv).float()
            out.append(detector.probabilities(logits.cpu().numpy(), sizes))
    return np.stack(out, axis=1).astype(np.float32) if out else np.zeros((len(pixels), 0))
