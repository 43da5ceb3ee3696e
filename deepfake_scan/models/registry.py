"""One registry of detector architectures and one constructor.

Every architecture maps a float image batch (N, 3, H, W), already normalised, to one logit per
image (N,): positive means fake. Weights are never downloaded here; initial weights come from a
file the caller names (see ``deepfake_scan.models.artifact``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_architectures() -> list[str]:
    from deepfake_scan.models import archs  # noqa: F401  (registers the built-ins)

    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    names = list_architectures()
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(names)}")
    return _REGISTRY[name](**kwargs)
