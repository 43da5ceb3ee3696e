"""Bulk dataset labelling: scan a source, then write its images as labelled WebDataset shards.

``label(source, dest, ...)`` is the library entry point (``deepfake-scan label`` on the command
line); ``corrections`` merges human review decisions back into the verdict store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["label", "import_corrections", "corrections_as_training_lists"]

if TYPE_CHECKING:
    from deepfake_scan.label.corrections import corrections_as_training_lists, import_corrections
    from deepfake_scan.label.labelling import label


def __getattr__(name: str):
    # Heavy imports (torch, ray) only when the API is used, not when the package is imported.
    if name == "label":
        from deepfake_scan.label.labelling import label

        return label
    if name in ("import_corrections", "corrections_as_training_lists"):
        from deepfake_scan.label import corrections

        return getattr(corrections, name)
    raise AttributeError(name)
