"""deepfake-scan: scan media archives for deepfakes and AI-generated images with Ray."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["scan", "read_verdicts", "load_detector", "__version__"]

if TYPE_CHECKING:
    from deepfake_scan.detector import load_detector
    from deepfake_scan.scanning import scan
    from deepfake_scan.store import read_verdicts


def __getattr__(name: str):
    # Heavy imports (torch, ray) only when the API is used, not when the package is imported.
    if name == "scan":
        from deepfake_scan.scanning import scan

        return scan
    if name == "read_verdicts":
        from deepfake_scan.store import read_verdicts

        return read_verdicts
    if name == "load_detector":
        from deepfake_scan.detector import load_detector

        return load_detector
    raise AttributeError(name)
