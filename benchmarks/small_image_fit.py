"""Small images: test images shrunk, then fed to a model upsampled (the scan's fit) or padded.

    python benchmarks/small_image_fit.py --real DIR --fake DIR [--model M]

Prints, on the test split (the training job's split), per shrink factor (then JPEG q90 and fitted
as the scan fits: a shrunk image is upsampled back to the input size): AUC, and the shares of
real and of fake images the model labels real, uncertain (its review band) and fake. Then, for
halved images, the AUC with padding (reflection, black, tiling) to the input size instead of
upsampling. Evidence for the model card's notes on small images.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from faces_vs_whole import held_out  # the same held-out split (this folder's sibling script)
from PIL import Image

from deepfake_scan.detector import load_detector
from deepfake_scan.metrics import binary_metrics
from deepfake_scan.preprocess import fit_image
from deepfake_scan.train.augment import eval_view, jpeg, rescale

LABELS = ("real", "uncertain", "fake")


def pad(img: Image.Image, size: int, mode: str) -> np.ndarray:
    a = np.asarray(img)
    if mode == "tile":
        return np.tile(a, (size // a.shape[0] + 1, size // a.shape[1] + 1, 1))[:size, :size]
    ph, pw = size - a.shape[0], size - a.shape[1]
    return np.pad(a, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode=mode)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True)
    parser.add_argument("--fake", required=True)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    detector = load_detector(args.model)
    pre = detector.card.preprocessing
    real, fake = held_out(args.real, "test", 0.1, 0.1), held_out(args.fake, "test", 0.1, 0.1)
    y = np.array([0] * len(real) + [1] * len(fake))
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in real + fake]
    reenc = [eval_view(i, "reencoded") for i in images]
    halved = [eval_view(i, "down0.5") for i in images]
    ways = {
        "re-encoded q90, fitted": [fit_image(i, pre) for i in reenc],
        "halved, fitted (upsampled)": [fit_image(i, pre) for i in halved],
        "halved, reflect padding": [pad(i, pre.input_size, "reflect") for i in halved],
        "halved, black padding": [pad(i, pre.input_size, "constant") for i in halved],
        "halved, tiled": [pad(i, pre.input_size, "tile") for i in halved],
    }
    print(f"model {detector.model_id}; test split: {len(real)} real, {len(fake)} fake")
    print("| shrunk by | shorter side | AUC | reals labelled real / uncertain / fake | fakes |")
    print("|---|---|---|---|---|")
    for factor in (1.0, 0.8, 0.65, 0.5, 0.25):
        shrunk = [jpeg(rescale(i, factor), 90) for i in images]
        px = np.stack([fit_image(i, pre) for i in shrunk])
        # The sizes let the model's upsample calibration (if its card has one) see the shrinking.
        scores = detector.predict_pixels(px, 64, sizes=np.array([i.size for i in shrunk]))
        labels = np.array([detector.label(float(v)) for v in scores])
        shares = [
            " / ".join(f"{np.mean(labels[y == c] == lab):.3f}" for lab in LABELS) for c in (0, 1)
        ]
        auc = binary_metrics(y, scores)["auc"]
        print(f"| {factor} | {min(shrunk[0].size)} px | {auc:.4f} | {shares[0]} | {shares[1]} |")
    for name, px in ways.items():
        scores = detector.predict_pixels(np.stack(px), batch_size=64)
        print(f"{name:28s} AUC {binary_metrics(y, scores)['auc']:.4f}")


if __name__ == "__main__":
    main()
