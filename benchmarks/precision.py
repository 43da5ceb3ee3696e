"""fp32 against bf16 (or fp16) for a model on this machine: speed and what changes in the scores.

    python benchmarks/precision.py --real R --fake F [--model M] [--other bf16] [--compile]

Prints the model's forward images/s in each precision, then per view of the held-out split (the
files as they are; all re-encoded at JPEG q90 and q50; halved, then q90): AUC in each precision,
the largest and mean difference between their probabilities, and how many labels change. With
``--compile`` the second model is also compiled (``torch.compile``, as ``scan --compile`` runs it).
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import torch
from bench_scan import forward_rate
from faces_vs_whole import held_out
from PIL import Image
from sklearn.metrics import roc_auc_score

from deepfake_scan.decode import decode
from deepfake_scan.detector import load_detector


def jpeg(data: bytes, quality: int, scale: float = 1.0) -> bytes:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


VIEWS = {
    "files as they are": lambda b: b,
    "re-encoded q90": lambda b: jpeg(b, 90),
    "re-encoded q50": lambda b: jpeg(b, 50),
    "halved, then q90": lambda b: jpeg(b, 90, 0.5),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True)
    parser.add_argument("--fake", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--other", default="bf16", choices=("bf16", "fp16"))
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--compile", action="store_true", help="compile the second model")
    args = parser.parse_args(argv)
    full = load_detector(args.model, precision="fp32")
    other = load_detector(args.model, precision=args.other)
    if args.compile and not other.compile():
        raise SystemExit("torch.compile failed")
    name = f"{args.other} compiled" if args.compile else args.other
    pre = full.card.preprocessing
    print(f"model {full.model_id}, {torch.get_num_threads()} threads, batch 64")
    print(f"forward fp32 {forward_rate(full):.1f} images/s, {name} {forward_rate(other):.1f}")
    real = held_out(args.real, args.split, 0.1, 0.1)
    fake = held_out(args.fake, args.split, 0.1, 0.1)
    y = np.array([0] * len(real) + [1] * len(fake))
    print(f"{args.split} split: {len(real)} real, {len(fake)} fake")
    print(f"| view | AUC fp32 | AUC {name} | max diff | mean diff | labels changed |")
    print("|---|---|---|---|---|---|")
    for view, change in VIEWS.items():
        decoded = [decode(change(b), pre) for b in real + fake]
        pixels = np.stack([d.pixels for d in decoded])
        sizes = np.array([(d.width, d.height) for d in decoded])  # as the scan scores them
        a, b = full.predict_pixels(pixels, 64, sizes), other.predict_pixels(pixels, 64, sizes)
        labels = [(full.label(float(p)), full.label(float(q))) for p, q in zip(a, b, strict=True)]
        changed = sum(p != q for p, q in labels)
        diff = np.abs(a - b)
        print(
            f"| {view} | {roc_auc_score(y, a):.4f} | {roc_auc_score(y, b):.4f} "
            f"| {diff.max():.4f} | {diff.mean():.5f} | {changed} of {len(y)} |"
        )


if __name__ == "__main__":
    main()
