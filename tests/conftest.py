from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray instance (2 CPUs) for the whole session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """An untrained small model artifact, written with the library's own save function."""
    import torch

    from deepfake_scan.models.artifact import ModelCard, save_model
    from deepfake_scan.models.registry import create_model
    from deepfake_scan.preprocess import Preprocessing

    torch.manual_seed(0)
    out = str(tmp_path_factory.mktemp("model") / "tiny")
    card = ModelCard(
        name="tiny",
        architecture="small_cnn",
        arch_kwargs={"width": 8},
        preprocessing=Preprocessing(input_size=64),
        threshold=0.5,
        review_band=(0.45, 0.55),
    )
    save_model(create_model("small_cnn", width=8), out, card)
    return out
