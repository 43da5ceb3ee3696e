"""Where a cold process's start goes, as a detector actor's and the scan driver's go.

    python benchmarks/cold_start.py [ray]

Prints each step's seconds: numpy's and torch's imports, the CUDA context (on a GPU machine),
``load_detector`` (the default model, onto the GPU where there is one) and its first forwards
(CUDA loads its kernels on the first); with ``ray``, then Ray's import, ``scanning.init_ray``
(a local Ray of its own), a first task and 15 more.
"""

import sys
import time

T = time.perf_counter()


def stamp(what: str) -> None:
    global T
    now = time.perf_counter()
    print(f"{now - T:6.2f} s  {what}", flush=True)
    T = now


import numpy as np  # noqa: E402

stamp("import numpy")
import torch  # noqa: E402

stamp("import torch")
if torch.cuda.is_available():
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    stamp("CUDA context")
from deepfake_scan.detector import load_detector  # noqa: E402

stamp("import detector")
detector = load_detector()
stamp(f"load_detector (onto {detector.device})")
pixels = np.random.default_rng(0).integers(0, 255, (64, 250, 250, 3), dtype=np.uint8)
for n in (64, 64, 40, 40, 64):
    detector.predict_pixels(pixels[:n])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    stamp(f"forward of {n}")
if sys.argv[1:] == ["ray"]:
    import ray

    stamp("import ray")
    from deepfake_scan import scanning

    scanning.init_ray(None)
    stamp("init_ray")

    @ray.remote(num_cpus=1)
    def one() -> int:
        return 1

    ray.get(one.remote())
    stamp("first task")
    ray.get([one.remote() for _ in range(15)])
    stamp("15 tasks")
