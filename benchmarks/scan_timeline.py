"""Where one scan's time and CPU go: a timeline of a scan run in this process.

    python benchmarks/scan_timeline.py SOURCE [--out DIR] [--model M]

Prints when each start-up step ended (imports, the driver's model check, ``ray.init``, the first
verdicts), then once a second the verdicts so far and the CPU, in cores, of each kind of process:
this driver, the detector actors, the decode tasks, Ray's other workers, Ray's daemons. At the end,
each kind's CPU per image over the steady part (first verdicts to last), next to the images/s.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

T0 = time.perf_counter()

import psutil  # noqa: E402

import deepfake_scan  # noqa: E402
from deepfake_scan import scanning  # noqa: E402

KINDS = ("driver", "detector actors", "decode tasks", "other Ray workers", "Ray daemons")


def stamp(what: str) -> None:
    print(f"{time.perf_counter() - T0:7.2f} s  {what}", flush=True)


class Sampler(threading.Thread):
    """Once a second: CPU seconds of this process and its descendants, by kind."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.kind: dict[int, str] = {}  # sticky: a decode worker shows as IDLE between tasks
        self.last: dict[int, float] = {}
        self.samples: list[tuple[float, int, dict[str, float]]] = []  # (time, verdicts, cores)
        self.verdicts = 0
        self.stop = threading.Event()

    def classify(self, p: psutil.Process) -> str:
        if p.pid == self.me.pid:
            return "driver"
        cmd = " ".join(p.cmdline())
        if "Scorer" in cmd:
            self.kind[p.pid] = "detector actors"
        elif "read_decode" in cmd:
            self.kind[p.pid] = "decode tasks"
        elif p.pid not in self.kind:
            self.kind[p.pid] = "other Ray workers" if cmd.startswith("ray::") else "Ray daemons"
        return self.kind[p.pid]

    def run(self) -> None:
        before = time.perf_counter()
        while not self.stop.wait(1.0):
            now = time.perf_counter()
            cores = dict.fromkeys(KINDS, 0.0)
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    busy, kind = t.user + t.system, self.classify(p)
                except psutil.Error:  # ended between listing and reading
                    continue
                cores[kind] += (busy - self.last.get(p.pid, busy)) / (now - before)
                self.last[p.pid] = busy
            self.samples.append((now - T0, self.verdicts, cores))
            line = "  ".join(f"{k} {v:4.2f}" for k, v in cores.items())
            print(f"{now - T0:7.2f} s  {self.verdicts:6d} verdicts  {line}", flush=True)
            before = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--out", default=None, help="verdict store (default: a temporary folder)")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    stamp("imports")
    sampler = Sampler()

    def build_model(*a, **k):  # runs beside ray.init (scanning.scan)
        result = build(*a, **k)
        stamp("driver's model check (torch imported, model built)")
        return result

    def init_ray(*a, **k):
        result = init(*a, **k)
        stamp("ray.init")
        sampler.start()
        return result

    def verdict_table(batch):
        if not sampler.verdicts:
            stamp("first verdicts")
        sampler.verdicts += len(batch["uri"])
        return table(batch)

    build, init, table = scanning.build_model, scanning.init_ray, scanning.verdict_table
    scanning.build_model, scanning.init_ray = build_model, init_ray
    scanning.verdict_table = verdict_table
    out = args.out or tempfile.mkdtemp(prefix="scan-timeline-")
    summary = deepfake_scan.scan(args.source, out, model=args.model, full=True)
    stamp(f"scan done: {summary.rows} verdicts")
    sampler.stop.set()
    sampler.join()
    steady = [s for s in sampler.samples if 0 < s[1] < summary.rows]
    if len(steady) < 2:
        print("too short a scan for a steady part")
        return
    (t0, n0, _), (t1, n1, _) = steady[0], steady[-1]
    rate = (n1 - n0) / (t1 - t0)
    print(f"steady part: {rate:.1f} images/s; CPU per image, core-ms:")
    for kind in KINDS:
        cores = sum(s[2][kind] for s in steady[1:]) / (len(steady) - 1)
        print(f"  {kind:18s} {1000 * cores / rate:6.2f}")


if __name__ == "__main__":
    main()
