"""Human corrections in a verdict store become training data with the reviewer's label."""

from __future__ import annotations

import numpy as np
import pytest

import deepfake_scan
from deepfake_scan.label.corrections import import_corrections
from deepfake_scan.train.config import TrainConfig
from deepfake_scan.train.data import list_labelled, read_labelled
from tests.fixtures import image_bytes


@pytest.mark.usefixtures("ray_local")
def test_train_takes_corrections_with_the_reviewers_label(tmp_path, tiny_model):
    real, fake, store = tmp_path / "real", tmp_path / "fake", str(tmp_path / "store")
    for folder, seed in ((real, 0), (fake, 10)):
        folder.mkdir()
        for i in range(3):
            (folder / f"{i}.png").write_bytes(image_bytes("PNG", seed=seed + i))
    deepfake_scan.scan(str(real), store, model=tiny_model)
    corrected = str(real / "1.png")  # a reviewer says this "real" picture is a fake
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(f"uri,label,reviewer\n{corrected},fake,ann\n")
    import_corrections(str(decisions), store)

    cfg = TrainConfig(
        real=[str(real)], fake=[str(fake)], corrections=[store], out=str(tmp_path / "m")
    )
    rows = list_labelled(cfg)
    labels = {r["uri"]: r["label"] for r in rows}
    assert len(rows) == 6 and labels[corrected] == 1
    assert sum(labels.values()) == 4  # three fakes plus the corrected one

    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    out = read_labelled(batch, 0.1, 0.1)
    i = list(out["uri"]).index(corrected)
    assert out["label"][i] == 1 and out["data"][i] == (real / "1.png").read_bytes()
