#!/bin/bash
# Checks and times the CUDA path on a GPU machine; prints every figure the README quotes for it.
#   bash benchmarks/gpu_check.sh            (N=8000 generated photos; PY=python to choose Python)
# 1. the detector on CUDA (fp16 autocast) against CPU, and its forward rate;
# A. a Ray Train run on one GPU worker (npr_resnet, --gan --sbi --adversarial, tiny data);
# B. `python -m jobs.scan` of N/8 and N generated 1024x768 JPEGs with a GPU actor: start-up and
#    steady rate, and the verdicts;
# C. the N/8 scan with --faces; D. small images scored on CUDA as on CPU (upsample calibration);
# E. where the N/8 scan's start-up goes (benchmarks/scan_timeline.py).
# SKIP="A C" leaves out those sections.
# Where Ray is not installed, a packed site-packages may be given as .dev/site.tar.xz (.dev/ is
# git-ignored: carry it). Built on 2026-11-27 for the machine's Python 3.12: `pip download --no-deps
# --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl ray==2.60.0
# jsonschema jsonschema-specifications referencing rpds-py tensorboardX pydantic pydantic-core
# annotated-types typing-inspection typing_extensions`, each wheel unzipped into one folder,
# ray/{jars,rllib,serve,llm,cpp} and every tests/ folder removed, then `tar cf - . | xz` (33 MB).
set -u
N=${N:-8000}; PY=${PY:-python3}; GPUFLAG=${GPUFLAG:---use-gpu}
OUT=${OUT:-/tmp/gpuout}; mkdir -p $OUT
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
rm -rf /tmp/photos /tmp/v /tmp/vs /tmp/vf /tmp/small /tmp/vsmall
if ! $PY -c "import ray" 2>/dev/null && [ -f .dev/site.tar.xz ]; then mkdir -p /tmp/site && tar xJf .dev/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PYTHONPATH; fi
export RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1
echo "== 1. detector on CUDA (fp16 autocast) vs CPU (fp32)"
timeout 120 $PY - <<'PYEOF'
import time, numpy as np, torch
from deepfake_scan import load_detector
d = load_detector()
print("device", d.device, d.model_id)
px = np.random.default_rng(0).integers(0, 255, (64, 250, 250, 3), dtype=np.uint8)
p_gpu = d.predict_pixels(px)
p_cpu = load_detector(device="cpu", precision="fp32").predict_pixels(px[:16])
print("max |gpu-cpu| prob", float(np.abs(p_gpu[:16] - p_cpu).max()))
for bs in (64, 256):
    x = np.repeat(px, bs // 64, axis=0)
    d.predict_pixels(x)
    if torch.cuda.is_available(): torch.cuda.synchronize()
    t = time.perf_counter(); n = 0
    while time.perf_counter() - t < 5:
        d.predict_pixels(x); n += bs
    print(f"forward batch {bs}: {n / (time.perf_counter() - t):.0f} images/s")
PYEOF
skip() { [[ " ${SKIP:-} " == *" $1 "* ]] && echo "== $1: skipped"; }
skip A || {
echo "== A. training smoke on GPU (npr_resnet, --gan --sbi --adversarial)"
timeout 120 $PY - "$GPUFLAG" <<'PYEOF' 2>&1 | grep -vE "PlacementGroupCleaner|INFO|Deprecat|exclude_resources"
import sys, tempfile, pathlib, json
from tests.train.conftest import _fake_bytes
from tests.fixtures import image_bytes, tar_bytes
from deepfake_scan.cli import main
root = pathlib.Path(tempfile.mkdtemp()); real = root / "real"; real.mkdir()
for i in range(64): (real / f"r{i}.jpg").write_bytes(image_bytes(size=(48, 48), seed=i, quality=90))
(root / "fake.tar").write_bytes(tar_bytes({f"{i:06d}.jpg": _fake_bytes(i) for i in range(64)}))
flag = [sys.argv[1]] if sys.argv[1] != "none" else []
rc = main(["train", "--real", str(real), "--fake", str(root / "fake.tar"), "--out", str(root / "m"),
  "--arch", "npr_resnet", "--input-size", "48", "--batch-size", "16", "--epochs", "2", *flag,
  "--num-workers", "1", "--gan", "--sbi", "--adversarial", "--val-fraction", "0.25", "--test-fraction", "0.25"])
print("TRAIN rc", rc)
card = json.loads((root / "m" / "model.json").read_text())
print("TRAINED", card["model_id"], "device", card["training"].get("config", {}).get("use_gpu"), "test auc", card["metrics"]["test"]["reencoded"]["auc"])
PYEOF
}
echo "== B. GPU scans of $((N / 8)) and $N 1024x768 JPEGs: start-up and the steady (marginal) rate"
$PY -c "
import sys; sys.path.insert(0, 'benchmarks')
from pathlib import Path
from bench_scan import make_photos
make_photos(Path('/tmp/photos/all'), $N)
import os; os.makedirs('/tmp/photos/small', exist_ok=True)
for p in sorted(Path('/tmp/photos/all').rglob('*.jpg'))[: $N // 8]: os.link(p, f'/tmp/photos/small/{p.name}')
print('made', $N)"
scan_timed() {  # scan_timed SOURCE OUT [flags]: 'seconds S', then the scan's summary
  $PY - "$@" <<'PYEOF'
import json, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run([sys.executable, "-m", "jobs.scan", sys.argv[1], "--out", sys.argv[2], *sys.argv[3:], "--json"],
                   capture_output=True, text=True, timeout=300)
print("seconds", round(time.perf_counter() - t, 2))
try:
    s = json.loads(p.stdout[p.stdout.index("{"):])
    print({k: s[k] for k in ("rows", "labels", "errors", "seconds", "images_per_s")})
except ValueError:
    print("rc", p.returncode, p.stdout[-2000:], p.stderr[-3000:])
PYEOF
}
scan_timed /tmp/photos/small /tmp/vs | tee /tmp/b1
scan_timed /tmp/photos/all /tmp/v | tee /tmp/b2
$PY -c "
t1 = float(open('/tmp/b1').read().split()[1]); t2 = float(open('/tmp/b2').read().split()[1])
n1, n2 = $N // 8, $N
print(f'marginal rate {(n2 - n1) / (t2 - t1):.1f} images/s; fixed start-up {t1 - n1 * (t2 - t1) / (n2 - n1):.1f} s')"
skip C || {
echo "== C. the smaller set with --faces (face search in the CPU decode tasks)"
scan_timed /tmp/photos/small /tmp/vf --faces
}
echo "== D. small images on CUDA: the upsample calibration as on CPU"
timeout 120 $PY - <<'PYEOF'
import numpy as np
from PIL import Image
from deepfake_scan import load_detector, scan, read_verdicts
import os
rng = np.random.default_rng(1)
os.makedirs("/tmp/small", exist_ok=True)
for i, side in enumerate((62, 125, 200, 250, 400)):
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(f"/tmp/small/s{side}.png")
imgs = {f: Image.open(f"/tmp/small/{f}").convert("RGB") for f in sorted(os.listdir("/tmp/small"))}
gpu, cpu = load_detector(), load_detector(device="cpu", precision="fp32")
pg, pc = gpu.predict(list(imgs.values())), cpu.predict(list(imgs.values()))
print("predict gpu", np.round(pg, 4), "cpu", np.round(pc, 4), "max diff", float(np.abs(pg - pc).max()))
scan("/tmp/small", "/tmp/vsmall")
t = read_verdicts("/tmp/vsmall").to_pydict()
by = dict(zip([u.rsplit("/", 1)[1] for u in t["uri"]], t["score"]))
print("scan (GPU actor) vs predict (CPU) max diff", max(abs(by[f] - p) for f, p in zip(imgs, pc)))
PYEOF
skip E || {
echo "== E. where the N/8 scan's start-up goes"
timeout 180 $PY benchmarks/scan_timeline.py /tmp/photos/small
}
$PY -c "
from deepfake_scan import read_verdicts
t = read_verdicts('/tmp/v'); print('VERDICTS', t.num_rows, set(t.column('model_id').to_pylist()), dict(zip(*[c.to_pylist() for c in t.column('label').value_counts().flatten()])))"
nvidia-smi --query-gpu=name,memory.used --format=csv
