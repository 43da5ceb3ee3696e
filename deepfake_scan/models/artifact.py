"""The model artifact: ``model.safetensors`` (weights only, never pickle) + ``model.json``.

The directory is the contract between training and scanning: architecture, preprocessing,
threshold and review band travel with the weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_scan.errors import ModelError, first_line
from deepfake_scan.faces import FaceGeometry
from deepfake_scan.preprocess import Preprocessing
from deepfake_scan.storage import get_fs, join

WEIGHTS = "model.safetensors"
CARD = "model.json"
FORMAT_VERSION = 1

if TYPE_CHECKING:  # torch is imported where a model is built, not with this module
    from torch import nn


@dataclass
class ModelCard:
    name: str
    architecture: str
    version: str = "0.0.0"
    arch_kwargs: dict = field(default_factory=dict)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    classes: tuple[str, str] = ("real", "fake")
    threshold: float = 0.5
    # Scores inside [low, high) are labelled "uncertain" for human review.
    review_band: tuple[float, float] = (0.5, 0.5)
    temperature: float = 1.0
    # (a, b) for images the scan enlarges to the input size (metrics.calibrated); None: none.
    upsample_calibration: tuple[float, float] | None = None
    # Set when trained on face crops: the FaceGeometry (deepfake_scan.faces) its crops came from.
    faces: dict | None = None
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    command: str = ""
    created_at: str = ""
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}+{self.weights_sha256[:8]}"

    @property
    def face_geometry(self) -> FaceGeometry | None:
        return FaceGeometry.from_dict(self.faces) if self.faces else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        d["model_id"] = self.model_id
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["preprocessing"] = Preprocessing.from_dict(d.get("preprocessing", {}))
        d["review_band"] = tuple(d.get("review_band", (0.5, 0.5)))
        d["classes"] = tuple(d.get("classes", ("real", "fake")))
        if d.get("upsample_calibration") is not None:
            d["upsample_calibration"] = tuple(float(v) for v in d["upsample_calibration"])
        if d.get("faces"):
            FaceGeometry.from_dict(d["faces"])  # a bad crop geometry fails here, not in a scan
        card = cls(**d)
        lo, hi = card.review_band
        if not (0.0 <= lo <= card.threshold <= hi <= 1.0) and lo != hi:
            raise ModelError(f"model_error: review band {card.review_band} must contain threshold")
        return card


def default_model_uri() -> str:
    return str(resources.files("deepfake_scan.models") / "default")


def save_model(model: nn.Module, out: str, card: ModelCard) -> ModelCard:
    """Write weights and card to ``out`` (local or URI); returns the card with its weights hash."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save(state)
    card.weights_sha256 = hashlib.sha256(blob).hexdigest()
    card.created_at = card.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    fs, path = get_fs(out)
    fs.makedirs(path, exist_ok=True)
    with fs.open(join(path, WEIGHTS), "wb") as f:
        f.write(blob)
    with fs.open(join(path, CARD), "w") as f:
        json.dump(card.to_dict(), f, indent=2)
    return card


def read_card(uri: str | None = None) -> ModelCard:
    uri = uri or default_model_uri()
    fs, path = get_fs(uri)
    try:
        with fs.open(join(path, CARD), "r") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ModelError(f"model_error: no {CARD} in {uri} (is it a model directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"model_error: {uri}/{CARD} is not valid JSON: {e}") from None
    try:
        return ModelCard.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ModelError(f"model_error: {uri}/{CARD} is malformed: {e}") from None


def load_model(uri: str | None = None) -> tuple[nn.Module, ModelCard]:
    """Build the architecture named in the card and load its weights; checks the weights hash."""
    card, weights = read_model(uri)
    return build_model(card, weights, uri or default_model_uri()), card


def read_model(uri: str | None = None) -> tuple[ModelCard, bytes]:
    """The card and the weights' bytes, checked to belong together (the card's weights hash):
    enough for the model id, without torch. ``build_model`` checks the weights fit."""
    uri = uri or default_model_uri()
    card = read_card(uri)
    fs, path = get_fs(uri)
    try:
        with fs.open(join(path, WEIGHTS), "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise ModelError(f"model_error: no {WEIGHTS} in {uri}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if card.weights_sha256 and digest != card.weights_sha256:
        raise ModelError(
            f"model_error: {uri}/{WEIGHTS} sha256 {digest[:12]} does not match "
            f"model.json ({card.weights_sha256[:12]}); the files do not belong together"
        )
    card.weights_sha256 = digest
    return card, blob


def build_model(card: ModelCard, weights: bytes, uri: str) -> nn.Module:
    """The card's architecture with ``weights`` (safetensors bytes) loaded, in eval mode; ``uri``
    names the model in errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from deepfake_scan.models.registry import create_model

    try:
        model = create_model(card.architecture, **card.arch_kwargs)
        model.load_state_dict(load(weights), strict=True)
    except (SafetensorError, RuntimeError, ValueError, TypeError) as e:
        raise ModelError(
            f"model_error: cannot load {uri} as {card.architecture}: {first_line(e)}"
        ) from None
    return model.eval()


def is_local_dir(uri: str) -> bool:
    return "://" not in uri and Path(uri).is_dir()
