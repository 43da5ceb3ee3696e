"""The model's arithmetic, named on the command line; a module without torch, so that the scan's
driver can check the name before torch is imported (see ``scanning.scan``)."""

from __future__ import annotations

# "auto": fp16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16 / AMX), else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
