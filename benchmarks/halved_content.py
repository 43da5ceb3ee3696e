"""How much evidence survives halving? Networks trained on nothing but halved images (a GPU check).

    python benchmarks/halved_content.py pack --real DIR --fake DIR --out halved.tar
    python benchmarks/halved_content.py train halved.tar [--epochs-scale 1] [--budget 330]

``pack`` (here, on CPU) writes every image shrunk by 0.5 (antialiased) and encoded once at JPEG
q90, exactly ``evaluate``'s ``down0.5`` view, as ``<label>/<sha256 of the original>.jpg`` in one
tar (6,400 images: 38 MB, small enough to carry to a GPU machine). ``train`` (on a GPU; it runs
on CPU too, slowly) keeps the images in device memory and trains each network of ``PLAN`` from
its own initial weights on the training split (the training job's split: the hash's first 64
bits, val 0.1, test 0.1): integer 112 px windows, flips, brightness and contrast, AdamW with a
one-cycle schedule, bf16 autocast; every few epochs it prints the AUC of whole 125 px images of
each split. A network that reaches a test AUC near the full-size figure shows that the 0.5x
target needs a model that can look at the content, not more training of a residual model.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

from deepfake_scan.models.registry import create_model
from deepfake_scan.train.augment import rescale
from deepfake_scan.train.data import split_of

CROP = 112
# name, architecture, initial weights (None: random), epochs, peak learning rate. The H100 run of
# 2026-11-26 ran the first five; resnet18_cut was added after it and has not run on a GPU.
PLAN = [
    ("npr_resnet from the bundled 1.0.1", "npr_resnet", "deepfake_scan/models/default", 30, 3e-4),
    ("npr_resnet from random init", "npr_resnet", None, 80, 2e-3),
    ("resnet18 from random init", "resnet18", None, 80, 2e-3),
    ("resnet18 from random init, 200 epochs", "resnet18", None, 200, 2e-3),
    ("efficientnet_b0 from random init", "efficientnet_b0", None, 80, 3e-3),
    ("resnet18_cut from random init", "resnet18_cut", None, 80, 2e-3),
]


def pack(real: str, fake: str, out: str) -> None:
    with tarfile.open(out, "w") as tf:
        for label, folder in (("real", real), ("fake", fake)):
            for f in sorted(Path(folder).iterdir()):
                raw = f.read_bytes()
                small = rescale(Image.open(io.BytesIO(raw)).convert("RGB"), 0.5)
                buf = io.BytesIO()
                small.save(buf, "JPEG", quality=90)
                info = tarfile.TarInfo(f"{label}/{hashlib.sha256(raw).hexdigest()}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tf.addfile(info, buf)
    print("wrote", out, Path(out).stat().st_size // 2**20, "MiB")


class Data:
    def __init__(self, tar: str, device: str):
        parts: dict[str, tuple[list, list]] = {s: ([], []) for s in ("train", "val", "test")}
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                label, name = m.name.split("/")
                img = Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")
                xs, ys = parts[split_of(name.removesuffix(".jpg"), 0.1, 0.1)]
                xs.append(np.asarray(img))
                ys.append(float(label == "fake"))
        self.device = device
        self.x = {
            s: torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).to(device)
            for s, (x, _) in parts.items()
        }
        self.y = {s: torch.tensor(y, device=device) for s, (_, y) in parts.items()}
        self.mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Integer CROP windows (no resampling), flips, brightness and contrast."""
        n, _, h, w = x.shape
        dev = x.device
        ar = torch.arange(CROP, device=dev)
        rows = (torch.randint(0, h - CROP + 1, (n,), device=dev)[:, None] + ar)[:, None, :, None]
        cols = (torch.randint(0, w - CROP + 1, (n,), device=dev)[:, None] + ar)[:, None, None, :]
        x = x[
            torch.arange(n, device=dev)[:, None, None, None],
            torch.arange(3, device=dev)[None, :, None, None],
            rows,
            cols,
        ]
        x = x.float()
        x = torch.where((torch.rand(n, device=dev) < 0.5)[:, None, None, None], x.flip(-1), x)
        b, c = (torch.empty(n, 1, 1, 1, device=dev).uniform_(0.8, 1.2) for _ in range(2))
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return self.normalise(((x - mean) * c + mean * b).clamp(0, 255))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def auc(self, model: torch.nn.Module, split: str) -> float:
        model.eval()
        x = self.x[split]
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = [model(self.normalise(x[i : i + 512])).float() for i in range(0, len(x), 512)]
        model.train()
        return roc_auc_score(self.y[split].cpu().numpy(), torch.cat(out).cpu().numpy())


def train(data: Data, name: str, model: torch.nn.Module, epochs: int, lr: float, bs: int = 128):
    model = model.to(data.device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    n = len(data.x["train"])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, lr, total_steps=epochs * (n // bs), pct_start=0.1
    )
    best, t0 = None, time.time()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, device=data.device)
        for i in range(n // bs):
            idx = perm[i * bs : (i + 1) * bs]
            with torch.autocast(data.device, dtype=torch.bfloat16):
                logits = model(data.augment(data.x["train"][idx])).float().view(-1)
            loss = F.binary_cross_entropy_with_logits(logits, data.y["train"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if epoch % max(1, epochs // 8) == 0 or epoch == epochs:
            tr, va, te = (data.auc(model, s) for s in ("train", "val", "test"))
            best = max(best or (va, te, tr, epoch), (va, te, tr, epoch))
            print(
                f"{name}: epoch {epoch}/{epochs} train {tr:.4f} val {va:.4f} test {te:.4f} "
                f"({time.time() - t0:.0f} s)",
                flush=True,
            )
    va, te, tr, epoch = best
    print(
        f"RESULT {name}: best val AUC {va:.4f} (epoch {epoch}): test {te:.4f}, train {tr:.4f}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--real", required=True)
    p.add_argument("--fake", required=True)
    p.add_argument("--out", required=True)
    t = sub.add_parser("train")
    t.add_argument("tar")
    t.add_argument("--epochs-scale", type=float, default=1.0)
    t.add_argument("--budget", type=float, default=330, help="start no network after this many s")
    args = ap.parse_args()
    if args.cmd == "pack":
        return pack(args.real, args.fake, args.out)
    t0 = time.time()
    data = Data(args.tar, "cuda" if torch.cuda.is_available() else "cpu")
    print({s: tuple(x.shape) for s, x in data.x.items()}, flush=True)
    for name, arch, init, epochs, lr in PLAN:
        if time.time() - t0 > args.budget:
            print("SKIPPED (time budget)", name)
            continue
        torch.manual_seed(0)
        if init:
            from deepfake_scan.models.artifact import load_model

            model = load_model(init)[0]
        else:
            model = create_model(arch)
        train(data, name, model, max(1, round(epochs * args.epochs_scale)), lr)


if __name__ == "__main__":
    main()
