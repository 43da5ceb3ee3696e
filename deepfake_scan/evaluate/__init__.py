"""Evaluation of a detector on labelled data: metrics, laundering, adversarial attacks, report.

``evaluate(real, fake, out, ...)`` is the library entry point (``deepfake-scan evaluate`` on the
command line, ``python -m jobs.evaluate`` as a Ray job). ``attacks.fgsm`` / ``attacks.pgd`` are
also the hook for adversarial training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["evaluate"]

if TYPE_CHECKING:
    from deepfake_scan.evaluate.run import evaluate


def __getattr__(name: str):
    # Heavy imports (torch, ray) only when the API is used, not when the package is imported.
    if name == "evaluate":
        from deepfake_scan.evaluate.run import evaluate

        return evaluate
    raise AttributeError(name)
