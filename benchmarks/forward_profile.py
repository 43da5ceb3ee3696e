"""Where the detector's CPU forward goes, in one process of one torch thread (as a scan's CPU
actor runs it): each convolution's time and arithmetic rate, then the other operators' share.

    python benchmarks/forward_profile.py [--model M] [--forward 4] [--threads 1] [--compile]

Convolutions that already run near the core's arithmetic peak leave only the rest (pooling, ReLU,
resampling, the casts autocast adds) to gain from fusing operators. ``--compile`` also times
``torch.compile`` (inductor, weights frozen), which fuses them, with its compile time.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from deepfake_scan.detector import load_detector


def timed(fn, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls, after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the bundled one)")
    ap.add_argument("--forward", type=int, default=4, help="images per forward (the scan: 4)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    detector = load_detector(args.model, device="cpu", precision=args.precision)
    size, n = detector.card.preprocessing.input_size, args.forward
    pixels = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    x = detector.normalise(torch.from_numpy(pixels))
    model, dtype = detector.model, detector.dtype

    def forward(net: nn.Module = model) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=bool(dtype)):
            return net(x)

    per_image = 1000 / n  # seconds per forward -> ms per image
    total = timed(forward, args.reps) * per_image
    print(
        f"{detector.model_id}, {size} px, {n} images per forward, {args.threads} thread(s), "
        f"{dtype or torch.float32}: {total:.2f} ms per image ({1000 / total:.1f} images/s)"
    )

    # Each convolution, timed by hooks around it (one image's multiply-adds from its output).
    spans: dict[str, list[float]] = defaultdict(list)
    macs: dict[str, float] = {}
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    hooks = []
    for name, conv in convs:
        start = lambda m, i, k=name: spans[k].append(-time.perf_counter())  # noqa: E731
        hooks.append(conv.register_forward_pre_hook(start))

        def done(m, i, out, k=name):
            spans[k][-1] += time.perf_counter()
            kh, kw = m.kernel_size
            macs[k] = out[0].numel() * kh * kw * m.in_channels // m.groups

        hooks.append(conv.register_forward_hook(done))
    timed(forward, args.reps)
    print(f"\n{'convolution':40s} {'weight':>18s} {'ms/image':>9s} {'GMAC/s':>7s}")
    conv_ms = 0.0
    for name, conv in convs:
        ms = float(np.median(spans[name])) * per_image
        conv_ms += ms
        shape = "x".join(map(str, conv.weight.shape))
        print(f"{name:40s} {shape:>18s} {ms:9.3f} {macs[name] / ms / 1e6:7.1f}")
    print(f"{'all convolutions':40s} {'':>18s} {conv_ms:9.3f}  ({100 * conv_ms / total:.0f} %)")
    for hook in hooks:
        hook.remove()

    # The other operators, by their own CPU time.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.reps):
            forward()
    ops = [e for e in prof.key_averages() if "conv" not in e.key and e.self_cpu_time_total > 0]
    all_us = sum(e.self_cpu_time_total for e in prof.key_averages())
    print(f"\n{'other operators (own CPU time)':40s} {'share':>8s}")
    for e in sorted(ops, key=lambda e: -e.self_cpu_time_total)[:10]:
        print(f"{e.key:40s} {100 * e.self_cpu_time_total / all_us:7.1f} %")

    if args.compile:
        import torch._inductor.config as inductor

        inductor.freezing = True  # weights as constants: convolutions fused with what follows
        compiled = torch.compile(model, dynamic=False)
        start = time.perf_counter()
        forward(compiled)
        seconds = time.perf_counter() - start
        ms = timed(lambda: forward(compiled), args.reps) * per_image
        diff = (forward(compiled).float() - forward().float()).abs().max().item()
        print(
            f"\ntorch.compile (inductor, frozen): compiled in {seconds:.1f} s, {ms:.2f} ms per "
            f"image ({total / ms:.2f}x eager), largest logit difference {diff:.4f}"
        )


if __name__ == "__main__":
    main()
