"""Score held-out images whole and by face crops (as ``scan`` and ``scan --faces`` do); print AUCs.

    python benchmarks/faces_vs_whole.py --real DIR --fake DIR [--model M] [--split test]

The split is the training job's (sha256 of the bytes, same fractions), so with the training data
it scores only images the model never trained on. Each view is applied to both classes alike;
scoring goes through the scan's own decode, face search and crop code. Also prints the face
search's cost per image on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepfake_scan.decode import decode, open_image
from deepfake_scan.detector import load_detector
from deepfake_scan.faces import FaceGeometry
from deepfake_scan.metrics import binary_metrics
from deepfake_scan.train.augment import EVAL_VIEWS, eval_view
from deepfake_scan.train.data import split_of


def held_out(folder: str, split: str, val: float, test: float) -> list[bytes]:
    blobs = [p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()]
    return [b for b in blobs if split_of(hashlib.sha256(b).hexdigest(), val, test) == split]


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True)
    parser.add_argument("--fake", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    detector = load_detector(args.model)
    card = detector.card
    pre, geometry = card.preprocessing, card.face_geometry or FaceGeometry()
    fracs = (args.split, args.val_fraction, args.test_fraction)
    real, fake = held_out(args.real, *fracs), held_out(args.fake, *fracs)
    y = np.array([0] * len(real) + [1] * len(fake))
    print(f"model {card.model_id}; {args.split} split: {len(real)} real, {len(fake)} fake")
    print(f"face geometry {geometry} ({'from the model card' if card.faces else 'default'})")
    print("| view | AUC whole image | AUC faces (max over faces) | images with a face |")
    print("|---|---|---|---|")
    search_s = 0.0
    for view in EVAL_VIEWS:
        whole, faces, found = [], [], 0
        for blob in real + fake:
            img = open_image(blob)[0]
            data = blob if view == "as_is" else png(eval_view(img, view))
            t0 = time.perf_counter()
            d = decode(data, pre, faces=geometry)
            search_s += time.perf_counter() - t0
            w = float(detector.predict_pixels(d.pixels[None])[0])
            whole.append(w)
            if len(d.face_pixels):
                found += 1
                faces.append(float(detector.predict_pixels(d.face_pixels).max()))
            else:
                faces.append(w)  # as the scan does for a whole-image model
        auc_w = binary_metrics(y, np.array(whole))["auc"]
        auc_f = binary_metrics(y, np.array(faces))["auc"]
        print(f"| {view} | {auc_w:.4f} | {auc_f:.4f} | {found / len(y):.3f} |")
    n = len(y) * len(EVAL_VIEWS)
    print(f"decode + face search + crops: {1000 * search_s / n:.1f} ms per image (one core)")


if __name__ == "__main__":
    main()
