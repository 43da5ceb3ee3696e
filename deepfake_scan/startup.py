"""A process's start-up (imports of torch, torchvision and Ray, building the model) with Python's
cyclic garbage collector paused.

Start-up makes hundreds of thousands of objects that live as long as the process, and while they
are made each full collection walks all of them again: the scan's driver ran seven before its
first verdict (0.7 s of one core), a detector actor's start took 0.6 s less CPU without them
(3.3 -> 2.7 s), and the final collection at exit took the CLI ~1 s. Measured on 2 cores with
``benchmarks/scan_timeline.py`` and a ``gc.callbacks`` timer.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused(freeze: bool = False) -> Iterator[None]:
    """No cyclic collection inside. ``freeze``: then move every object alive out of all later
    collections (``gc.freeze``), so those, and the one at exit, walk only newer objects. Freeze
    only in a process that is ours (the CLI's, an actor's): in a user's process it would also
    keep for good whatever of theirs becomes cyclic garbage later."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()
