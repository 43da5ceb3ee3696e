#!/bin/bash
# Checks and times the CUDA path on a GPU machine; prints every figure the README quotes for it.
#   bash benchmarks/gpu_check.sh            (N=1500 generated photos; PY=python to choose Python)
# 1. the detector on CUDA (fp16 autocast) against CPU, and its forward rate;
# A. a Ray Train run on one GPU worker (npr_resnet, --gan --sbi --adversarial, tiny data);
# B. `python -m jobs.scan` of N generated 1024x768 JPEGs with a GPU actor, and its verdicts;
# C. the same scan with --faces.
# Where Ray is not installed, a packed site-packages may be given as .dev/site.tar.xz.
set -u
N=${N:-1500}; PY=${PY:-python3}; GPUFLAG=${GPUFLAG:---use-gpu}
OUT=${OUT:-/tmp/gpuout}; mkdir -p $OUT
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
rm -rf /tmp/photos /tmp/v /tmp/vf
if ! $PY -c "import ray" 2>/dev/null && [ -f .dev/site.tar.xz ]; then mkdir -p /tmp/site && tar xJf .dev/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PYTHONPATH; fi
export RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1
echo "== 1. detector on CUDA (fp16 autocast) vs CPU"
timeout 120 $PY - <<'PYEOF'
import time, numpy as np, torch
from deepfake_scan import load_detector
d = load_detector()
print("device", d.device, d.model_id)
px = np.random.default_rng(0).integers(0, 255, (64, 250, 250, 3), dtype=np.uint8)
p_gpu = d.predict_pixels(px)
p_cpu = load_detector(device="cpu").predict_pixels(px[:16])
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
echo "== B. GPU scan of $N 1024x768 JPEGs"
$PY - $N <<'PYEOF'
import sys, numpy as np, os
from multiprocessing import Pool
from PIL import Image
def make(i):
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:768, 0:1024]
    base = rng.uniform(0, 255, 3) + rng.uniform(-0.2, 0.2, 3) * (xx + yy)[..., None]
    arr = np.clip(base + rng.normal(0, 6, (768, 1024, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(f"/tmp/photos/{i:05d}.jpg", "JPEG", quality=90)
os.makedirs("/tmp/photos", exist_ok=True)
with Pool(16) as p: p.map(make, range(int(sys.argv[1])))
print("made", len(os.listdir("/tmp/photos")))
PYEOF
( time timeout 150 $PY -m jobs.scan /tmp/photos --out /tmp/v --json ) 2>&1 | tail -30
echo "== C. the same photos with --faces (face search in the CPU decode tasks)"
( time timeout 150 $PY -m jobs.scan /tmp/photos --out /tmp/vf --faces --json ) 2>&1 | grep -E "images_per_s|rows|real"
$PY -c "
from deepfake_scan import read_verdicts
t = read_verdicts('/tmp/v'); print('VERDICTS', t.num_rows, set(t.column('model_id').to_pylist()), dict(zip(*[c.to_pylist() for c in t.column('label').value_counts().flatten()])))"
nvidia-smi --query-gpu=name,memory.used --format=csv
