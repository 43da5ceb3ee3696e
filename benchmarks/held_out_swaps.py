"""A kind of fake no model here trained on: crude cross-identity swaps made from held-out reals.

    python benchmarks/held_out_swaps.py --real DIR --fake DIR [--model M ...] [--split test]

Each real image of the split (the training job's split: sha256 of the bytes, same fractions)
gets the centre face region of another real image of the split pasted in: colours matched to the
target's, through a feathered random polygon (not the self-blending's mask), no landmarks and no
warping. That is a swap by another, cruder tool than the data set's, with a new identity and a
blending boundary. Every image of both classes is re-encoded at JPEG q90 before scoring. Prints,
per model, the AUC of held-out reals against these swaps, and against the data set's own held-out
fakes (in-domain, for reference).
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from faces_vs_whole import held_out  # the same held-out split (this folder's sibling script)
from PIL import Image, ImageDraw, ImageFilter

from deepfake_scan.decode import decode, open_image
from deepfake_scan.detector import load_detector
from deepfake_scan.metrics import binary_metrics
from deepfake_scan.train.augment import jpeg


def polygon_mask(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A feathered polygon through 12 jittered points around the (roughly centred) face."""
    w, h = size
    cx, cy = w * rng.uniform(0.46, 0.54), h * rng.uniform(0.5, 0.58)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
    rx, ry = w * rng.uniform(0.17, 0.24), h * rng.uniform(0.22, 0.3)
    radius = rng.uniform(0.85, 1.1, 12)
    points = [
        (cx + rx * r * np.cos(a), cy + ry * r * np.sin(a))
        for a, r in zip(angles, radius, strict=True)
    ]
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 5.0))))
    return np.asarray(mask, dtype=np.float32)[..., None] / 255.0


def crude_swap(target: Image.Image, donor: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``donor``'s centre region pasted into ``target``, its colours matched inside the mask."""
    donor = donor.resize(target.size, Image.BILINEAR) if donor.size != target.size else donor
    t = np.asarray(target.convert("RGB"), dtype=np.float32)
    d = np.asarray(donor.convert("RGB"), dtype=np.float32)
    mask = polygon_mask(target.size, rng)
    inside = mask[..., 0] > 0.5
    mt, st = t[inside].mean(0), t[inside].std(0) + 1e-3
    md, sd = d[inside].mean(0), d[inside].std(0) + 1e-3
    d = (d - md) / sd * st + mt  # Reinhard-style colour transfer, per channel
    out = d * mask + t * (1.0 - mask)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def q90(blob: bytes) -> bytes:
    buf = io.BytesIO()
    jpeg(open_image(blob)[0], 90).save(buf, "PNG")  # q90 pixels, kept losslessly from here
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True)
    parser.add_argument("--fake", required=True)
    parser.add_argument("--model", action="append", default=None, help="repeat; default: bundled")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    real = held_out(args.real, args.split, 0.1, 0.1)
    fake = held_out(args.fake, args.split, 0.1, 0.1)
    rng = np.random.default_rng(args.seed)
    donors = np.roll(rng.permutation(len(real)), 1)  # every image's donor is another image
    images = [open_image(b)[0] for b in real]
    swaps = []
    for i, img in enumerate(images):
        buf = io.BytesIO()
        crude_swap(img, images[donors[i]], rng).save(buf, "PNG")
        swaps.append(buf.getvalue())
    real_q, swap_q, fake_q = ([q90(b) for b in blobs] for blobs in (real, swaps, fake))
    print(f"{args.split} split: {len(real)} real, {len(swaps)} crude swaps, {len(fake)} fakes")
    print("| model | AUC real vs crude swaps (held-out kind) | AUC real vs data set fakes |")
    print("|---|---|---|")
    for model in args.model or [None]:
        detector = load_detector(model)
        pre = detector.card.preprocessing

        def scores(blobs: list[bytes], detector=detector, pre=pre) -> np.ndarray:
            pixels = np.stack([decode(b, pre).pixels for b in blobs])
            return detector.predict_pixels(pixels, 64)

        r, s, f = scores(real_q), scores(swap_q), scores(fake_q)
        swap_auc = binary_metrics(np.r_[np.zeros(len(r)), np.ones(len(s))], np.r_[r, s])["auc"]
        own_auc = binary_metrics(np.r_[np.zeros(len(r)), np.ones(len(f))], np.r_[r, f])["auc"]
        print(f"| {detector.model_id} | {swap_auc:.4f} | {own_auc:.4f} |")


if __name__ == "__main__":
    main()
