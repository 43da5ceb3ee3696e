"""Scan throughput and memory on this machine, all figures from one run.

    python benchmarks/bench_scan.py --n 3000 [--model M] [--work /tmp/bench] [--faces]

Prints, for N generated 1024x768 JPEGs: model-forward-only images/s, in one process on all
cores' threads and in one process per core of one thread each (as the scan's CPU actors run),
eager and compiled (``torch.compile``, as ``scan --compile`` runs it); reduced-size decode
images/s per core, every core decoding at once; the machine's limit (the fastest of those
forwards + reduced decode, both cores busy); a plain single-process loop (PIL full decode +
resize + eager forward, batch 64; a steady rate, timed on the first 3,000 images); the whole
``deepfake-scan scan`` command (start-up included) with its peak memory (all processes, PSS) at
N/10 and N images, and from the two its marginal (steady-state) rate and fixed start-up. Both
scans run with the ``--compile`` choice that ``auto`` makes for N images, so that they compare
like with like (auto would leave the model of N/10 images eager). With
``--faces``: also decode + face search per core, and ``scan --faces`` on N images.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image

from deepfake_scan.decode import decode, open_image
from deepfake_scan.detector import load_detector
from deepfake_scan.faces import FaceGeometry
from deepfake_scan.preprocess import fit_image
from deepfake_scan.scanning import compile_forward


def make_photos(folder: Path, n: int) -> list[Path]:
    """N distinct 1024x768 JPEGs (q90): a random colour ramp plus sensor-like noise; the ones
    missing are written in parallel, so a rerun reuses them."""
    paths = [folder / f"{i // 1000:03d}" / f"photo{i:05d}.jpg" for i in range(n)]
    missing = [(i, p) for i, p in enumerate(paths) if not p.exists()]
    for p in {p.parent for _, p in missing}:
        p.mkdir(parents=True, exist_ok=True)
    with multiprocessing.Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_write_photo, missing, chunksize=64):
            pass
    return paths


_NOISE: list[np.ndarray] = []


def _write_photo(item: tuple[int, Path]) -> None:
    i, path = item
    if not _NOISE:  # per process: a few noise fields, reused under different ramps
        rng = np.random.default_rng(0)
        _NOISE.extend(rng.normal(0, 6, (768, 1024, 3)).astype(np.float32) for _ in range(8))
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:768, 0:1024].astype(np.float32)
    slope = rng.uniform(-0.2, 0.2, 3).astype(np.float32)
    base = rng.uniform(0, 255, 3).astype(np.float32) + slope * (xx + yy)[..., None]
    arr = np.clip(base + _NOISE[i % len(_NOISE)], 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=90)


def forward_rate(detector, batch: int = 64, seconds: float = 10.0) -> float:
    size = detector.card.preprocessing.input_size
    pixels = np.random.default_rng(0).integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    detector.predict_pixels(pixels)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        detector.predict_pixels(pixels)
        n += batch
    return n / (time.perf_counter() - start)


def on_every_core(target, cores: int, *args) -> float:
    """Sum of ``target(*args)``'s images/s run in ``cores`` processes at once, one torch thread
    each: every core busy, as in a scan (its CPU actors run one per core beside decode tasks)."""
    ctx = multiprocessing.get_context("spawn")
    ready, rates = ctx.Barrier(cores), ctx.Queue()
    procs = [ctx.Process(target=_timed, args=(target, ready, rates, args)) for _ in range(cores)]
    for p in procs:
        p.start()
    total = sum(rates.get() for _ in procs)
    for p in procs:
        p.join()
    return total


def _timed(target, ready, rates, args) -> None:
    torch.set_num_threads(1)
    rates.put(target(ready, *args))


def one_thread_forward(ready, model: str | None, compiled: bool = False) -> float:
    detector = load_detector(model)
    if compiled:
        detector.compile()  # warns, and stays eager, where it cannot
    ready.wait()  # all loaded (and compiled): the forwards overlap
    return forward_rate(detector)


def decode_rate(ready, paths: list[Path], pre, count: int = 300) -> float:
    blobs = [p.read_bytes() for p in paths[:count]]
    ready.wait()
    start = time.perf_counter()
    for blob in blobs:
        img, _, _ = open_image(blob, draft=pre.input_size)
        fit_image(img, pre)
    return len(blobs) / (time.perf_counter() - start)


def plain_loop_rate(paths: list[Path], detector, batch: int = 64) -> float:
    """What a user writes first: full PIL decode, resize, forward; one process."""
    pre = detector.card.preprocessing
    start, pending = time.perf_counter(), []
    for path in paths:
        img = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
        pending.append(fit_image(img, pre))
        if len(pending) == batch:
            detector.predict_pixels(np.stack(pending))
            pending = []
    if pending:
        detector.predict_pixels(np.stack(pending))
    return len(paths) / (time.perf_counter() - start)


def face_search_rate(paths: list[Path], pre, count: int = 100) -> float:
    """Decode + face search + crops of one image, as ``scan --faces`` does it, per core."""
    blobs = [p.read_bytes() for p in paths[:count]]
    start = time.perf_counter()
    for blob in blobs:
        decode(blob, pre, faces=FaceGeometry())
    return len(blobs) / (time.perf_counter() - start)


SAMPLE_S = 5.0


def scan_command(
    source: Path, out: Path, model: str | None, n: int, faces: bool = False, compile: str = "auto"
) -> tuple[float, float]:
    """Run the real CLI; returns (seconds including start-up, peak memory of all its processes).

    Memory is the proportional set size (PSS): a page shared by several processes (Ray's object
    store, libraries) counts once in all, where a sum of RSS would count it in each. Reading it
    walks each process's pages: one round over a scan's 14 processes took 78 ms of CPU here, so it
    is read every ``SAMPLE_S`` seconds (every second, it took 4 % of this 2-core machine from the
    scan it timed); the scan's memory is flat once started, so the peak is not missed."""
    cmd = [sys.executable, "-m", "jobs.scan", str(source), "--out", str(out), "--full"]
    cmd += ["--compile", compile]
    if model:
        cmd += ["--model", model]
    if faces:
        cmd += ["--faces"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    peak, parent = 0, psutil.Process(proc.pid)
    while True:
        try:
            procs = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(pss(p) for p in procs))
        except psutil.Error:
            pass
        try:
            proc.wait(timeout=SAMPLE_S)  # returns when the scan ends, not at the next sample
            break
        except subprocess.TimeoutExpired:
            pass
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"scan failed with exit code {proc.returncode}")
    return elapsed, peak / 2**20


def pss(process: psutil.Process) -> int:
    try:
        return process.memory_full_info().pss
    except psutil.Error:  # ended between listing and reading
        return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--work", default="/tmp/deepfake-scan-bench")
    parser.add_argument("--faces", action="store_true", help="also time scan --faces")
    args = parser.parse_args(argv)
    work = Path(args.work)
    paths = make_photos(work / "photos", args.n)
    small = work / "photos-small"
    if not small.exists():
        small.mkdir()
        for p in paths[: args.n // 10]:
            (small / p.name).symlink_to(p)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    detector = load_detector(args.model)
    pre = detector.card.preprocessing
    fwd = forward_rate(detector)
    fwd_per_core = on_every_core(one_thread_forward, cores, args.model)
    fwd_compiled = on_every_core(one_thread_forward, cores, args.model, True)
    dec = on_every_core(decode_rate, cores, paths, pre) / cores
    limit = 1.0 / (1.0 / max(fwd, fwd_per_core, fwd_compiled) + 1.0 / (dec * cores))
    plain = plain_loop_rate(paths[:3000], detector)  # a steady rate: 3,000 images show it
    n_small = args.n // 10
    as_auto = "on" if compile_forward("auto", [{"kind": "file"}] * args.n, cores, False) else "off"
    small_s, small_peak = scan_command(
        small, work / "out-small", args.model, n_small, False, as_auto
    )
    large_s, peak = scan_command(work / "photos", work / "out", args.model, args.n, False, as_auto)
    rate = args.n / large_s
    marginal = (args.n - n_small) / (large_s - small_s)  # steady state: start-up cancels out
    print(
        f"model {detector.model_id}, input {pre.input_size}px, {cores} cores, "
        f"{args.n} JPEGs 1024x768"
    )
    print(f"model forward only          {fwd:8.1f} images/s ({cores} threads, batch 64)")
    print(
        f"model forward, 1 per core   {fwd_per_core:8.1f} images/s "
        f"({cores} processes, 1 thread each)"
    )
    print(f"model forward, compiled     {fwd_compiled:8.1f} images/s (1 per core, torch.compile)")
    print(f"reduced-size decode         {dec:8.1f} images/s per core (every core decoding)")
    print(f"machine limit               {limit:8.1f} images/s (forward + decode, all cores)")
    print(f"plain loop (full decode)    {plain:8.1f} images/s (eager forward)")
    print(f"scans below: --compile {as_auto} (what auto does for N)")
    print(
        f"deepfake-scan scan, N/10    {n_small / small_s:8.1f} images/s, "
        f"peak memory {small_peak:7.0f} MiB ({small_s:.1f} s)"
    )
    print(
        f"deepfake-scan scan, N       {rate:8.1f} images/s, peak memory {peak:7.0f} MiB "
        f"({large_s:.1f} s)"
    )
    print(f"scan, marginal rate         {marginal:8.1f} images/s (the extra images, extra time)")
    print(f"scan, fixed start-up        {small_s - n_small / marginal:8.1f} s (estimated)")
    print(f"scan / plain loop           {rate / plain:8.2f}x (marginal {marginal / plain:.2f}x)")
    print(f"scan / machine limit        {rate / limit:8.2f} (marginal {marginal / limit:.2f})")
    print(f"peak memory, N / (N/10)     {peak / small_peak:8.2f}")
    if args.faces:
        search = face_search_rate(paths, pre)
        # In the actor pool the search would run in series with the model on the actor's CPUs;
        # in decode tasks it spreads over every core beside the model.
        face_s, face_peak = scan_command(
            work / "photos", work / "out-faces", args.model, args.n, faces=True
        )
        face_rate = args.n / face_s
        print(f"decode + face search        {search:8.1f} images/s per core")
        print(
            f"deepfake-scan scan --faces  {face_rate:8.1f} images/s, "
            f"peak memory {face_peak:7.0f} MiB"
        )


if __name__ == "__main__":
    main()
