"""Model artifacts: round trip, and a clear error for every wrong checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deepfake_scan.detector import label_for, load_detector
from deepfake_scan.errors import ModelError
from deepfake_scan.models.artifact import ModelCard, load_model, read_card, save_model
from deepfake_scan.models.registry import create_model
from tests.fixtures import needs_cxx


def test_round_trip_keeps_weights_and_card(tmp_path, tiny_model):
    model, card = load_model(tiny_model)
    assert card.architecture == "small_cnn" and card.preprocessing.input_size == 64
    assert card.model_id.startswith("tiny@0.0.0+") and len(card.weights_sha256) == 64
    detector = load_detector(tiny_model)
    images = [Image.new("RGB", (100, 50), "red"), Image.new("L", (20, 30))]
    scores = detector.predict(images)
    assert scores.shape == (2,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores, load_detector(tiny_model).predict(images))  # deterministic


def test_artifact_holds_no_pickle(tiny_model):
    from pathlib import Path

    blob = (Path(tiny_model) / "model.safetensors").read_bytes()
    assert b"torch._utils" not in blob and not blob.startswith(b"\x80")


def test_missing_model_dir(tmp_path):
    with pytest.raises(ModelError, match="no model.json"):
        load_model(str(tmp_path / "nope"))


def test_weights_that_do_not_match_the_card(tmp_path, tiny_model):
    other = tmp_path / "other"
    save_model(
        create_model("small_cnn", width=8),
        str(other),
        ModelCard(name="o", architecture="small_cnn", arch_kwargs={"width": 8}),
    )
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_model, mixed)
    shutil.copy(other / "model.safetensors", mixed / "model.safetensors")
    with pytest.raises(ModelError, match="does not match"):
        load_model(str(mixed))


def test_wrong_architecture_for_the_weights(tmp_path, tiny_model):
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_model, wrong)
    card = json.loads((wrong / "model.json").read_text())
    card["arch_kwargs"] = {"width": 16}
    (wrong / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="cannot load"):
        load_model(str(wrong))


def test_corrupt_weights_and_card(tmp_path, tiny_model):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    card = json.loads((bad / "model.json").read_text())
    card["weights_sha256"] = ""
    (bad / "model.json").write_text(json.dumps(card))
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="cannot load"):
        load_model(str(bad))
    (bad / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_card(str(bad))


def test_unknown_architecture(tmp_path, tiny_model):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    card = json.loads((bad / "model.json").read_text())
    card["architecture"] = "transformer9000"
    (bad / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="unknown architecture"):
        load_model(str(bad))


@pytest.mark.parametrize(
    ("score", "label"), [(0.1, "real"), (0.45, "uncertain"), (0.5, "uncertain"), (0.7, "fake")]
)
def test_labels_from_threshold_and_review_band(score, label):
    assert label_for(score, 0.5, (0.4, 0.6)) == label


def test_precision_bf16_runs_in_bf16_and_agrees_with_fp32():
    """The bundled model on real photos: bf16 (fast on CPUs with AMX) stays close to fp32."""
    import torch
    from skimage import data

    from deepfake_scan.detector import autocast_dtype

    photos = [Image.fromarray(getattr(data, n)()) for n in ("astronaut", "coffee", "chelsea")]
    full, half = load_detector(precision="fp32"), load_detector(precision="bf16")
    assert full.dtype is None and half.dtype is torch.bfloat16
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        x = half.normalise(torch.from_numpy(np.zeros((1, 250, 250, 3), np.uint8)))
        assert half.model(x).dtype == torch.bfloat16  # autocast really reaches the model
    a, b = full.predict(photos), half.predict(photos)
    assert np.abs(a - b).max() < 0.02
    # auto: fp16 on a GPU; on a CPU bf16 only where the hardware has it, otherwise full fp32.
    native = torch.cpu._is_avx512_bf16_supported()
    assert autocast_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)
    assert autocast_dtype("auto", torch.device("cuda")) == torch.float16
    with pytest.raises(ValueError, match="precision must be one of"):
        load_detector(precision="int4")


@pytest.mark.parametrize(
    "arch", ["npr_resnet", "resnet18_cut", "mobilenet_v2", "efficientnet_b0", "small_cnn"]
)
def test_inference_model_folds_batchnorm_and_computes_the_same(arch):
    """Folding BatchNorm into the convolutions (load_detector does it) changes no output, and
    leaves the trained model untouched."""
    import torch

    from deepfake_scan.detector import fold_batchnorm

    torch.manual_seed(0)
    model = create_model(arch).eval()
    for m in model.modules():  # trained-looking statistics, so folding has something to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 3, 96, 96)
    with torch.inference_mode():
        expected = model(x)
        folded = fold_batchnorm(model)
        got = folded(x)
    norms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not norms
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_cpu_forwards_in_small_chunks_give_the_batch_result():
    """On CPU the detector forwards a few images at a time (faster); the scores are those of one
    forward of the whole batch."""
    pixels = np.random.default_rng(0).integers(0, 256, (10, 250, 250, 3), dtype=np.uint8)
    detector = load_detector(precision="fp32", device="cpu")
    assert detector.max_forward and detector.max_forward < len(pixels)
    chunked = detector.predict_pixels(pixels, batch_size=64)
    detector.max_forward = None
    whole = detector.predict_pixels(pixels, batch_size=64)
    assert chunked.shape == (10,)
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-5)


def test_models_calibrate_fits_small_image_calibration_and_keeps_the_weights(tmp_path, tiny_model):
    """``models calibrate`` writes the model with an upsample calibration fitted on the
    validation split of the labelled images given; the weights and the source model are kept."""
    from deepfake_scan.cli import main
    from tests.fixtures import image_bytes

    for label in ("real", "fake"):
        (tmp_path / label).mkdir()
        for i in range(60):  # about 6 of each land in the validation split (10 %)
            seed = i if label == "real" else 1000 + i
            data = image_bytes("JPEG", (96, 96), seed=seed)
            (tmp_path / label / f"{i}.jpg").write_bytes(data)
    out = tmp_path / "calibrated"
    args = ["models", "calibrate", tiny_model, "--out", str(out), "--version", "0.0.2"]
    code = main([*args, "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake")])
    assert code == 0
    before, after = read_card(tiny_model), read_card(str(out))
    assert before.upsample_calibration is None  # the source model is not touched
    assert len(after.upsample_calibration) == 2 and after.version == "0.0.2"
    assert after.weights_sha256 == before.weights_sha256
    assert after.metrics["calibration"]["upsample_calibration"] == list(after.upsample_calibration)
    load_detector(str(out))  # loads and scores like any model

    (tmp_path / "empty").mkdir()
    empty = ["--real", str(tmp_path / "real"), "--fake", str(tmp_path / "empty")]
    assert main([*args, *empty]) == 2  # one class only: a clear error


def test_models_ensemble_sums_members_at_their_own_sizes(tmp_path, tiny_model):
    """``models ensemble`` writes one model whose logit is the sum of each member's logit over
    its temperature, a smaller member seeing the input shrunk to its own size; it is calibrated
    and measured on the labelled images' splits and scans like any model."""
    import torch
    import torch.nn.functional as F

    from deepfake_scan.cli import main
    from deepfake_scan.models.artifact import ModelCard, load_model, save_model
    from deepfake_scan.models.registry import create_model
    from deepfake_scan.preprocess import Preprocessing
    from tests.fixtures import image_bytes

    torch.manual_seed(1)
    small = str(tmp_path / "small")
    card = ModelCard(name="small", architecture="small_cnn", arch_kwargs={"width": 4},
                     preprocessing=Preprocessing(input_size=32), temperature=2.0)  # fmt: skip
    save_model(create_model("small_cnn", width=4), small, card)
    for label in ("real", "fake"):
        (tmp_path / label).mkdir()
        for i in range(60):
            seed = i if label == "real" else 1000 + i
            (tmp_path / label / f"{i}.jpg").write_bytes(image_bytes("JPEG", (96, 96), seed=seed))
    out = str(tmp_path / "ens")
    labelled = ["--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake")]
    assert main(["models", "ensemble", tiny_model, small, "--out", out, *labelled]) == 0

    net, ens = load_model(out)
    assert ens.architecture == "ensemble" and ens.preprocessing.input_size == 64
    assert [m["scale"] for m in ens.arch_kwargs["members"]] == [1.0, 0.5]
    assert {"val", "test"} <= set(ens.metrics) and ens.training["members"][1] == card.model_id
    x = torch.randn(2, 3, 64, 64)
    big_net, small_net = load_model(tiny_model)[0], load_model(small)[0]
    half = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
    with torch.inference_mode():
        expected = big_net(x) / read_card(tiny_model).temperature + small_net(half) / 2.0
        torch.testing.assert_close(net(x), expected)
    assert (tmp_path / "ens" / "MODEL_CARD.md").read_text().count("small@") == 1
    assert load_detector(out).predict_pixels(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1,)
    assert main(["models", "ensemble", tiny_model, "--out", out, *labelled]) == 2  # one model


@pytest.mark.parametrize("arch", ["npr_resnet", "resnet18_cut"])
def test_cut_resnets_are_torchvisions_resnet18_cut(arch):
    """The cut ResNets, built without torchvision, are its ResNet-18's first stages: the same
    parameter names and shapes (checkpoints of either load) and the same outputs."""
    import torch
    import torchvision

    torch.manual_seed(0)
    ours = create_model(arch).eval()
    ref = torchvision.models.resnet18(weights=None).eval()
    for m in ref.modules():  # trained-looking statistics, so BatchNorm does something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    stages = [ref.layer1, ref.layer2, ref.layer3][: len(ours.body)]
    theirs = torch.nn.Sequential(ref.conv1, ref.bn1, ref.relu, ref.maxpool, *stages)
    mapped = {f"stem.{k}": v for k, v in torch.nn.Sequential(*theirs[:4]).state_dict().items()}
    mapped |= {f"body.{k}": v for k, v in torch.nn.Sequential(*stages).state_dict().items()}
    mapped |= {k: v for k, v in ours.state_dict().items() if k.startswith("head.")}
    ours.load_state_dict(mapped, strict=True)  # every name and shape matches
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        assert torch.equal(torch.nn.Sequential(ours.stem, ours.body)(x), theirs(x))
        assert ours(x).shape == (2,)


def test_loading_the_default_detector_does_not_import_torchvision():
    """Scans start faster: the driver's model check and every detector actor load the default
    model without torchvision's import (~0.9 s of a core each, for ``torch._dynamo``)."""
    import subprocess
    import sys

    code = (
        "import sys; from deepfake_scan.detector import load_detector; load_detector(); "
        "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@needs_cxx
def test_compiled_detector_scores_as_eager_and_compiles_once(tiny_model):
    """``Detector.compile`` (torch.compile, inductor): the same probabilities as the eager model,
    for batches of any size: a forward of fewer images than the compiled shape is padded to it,
    never compiled again (a recompile would stall a scan's actor for seconds)."""
    import torch

    pixels = np.random.default_rng(0).integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    detector = load_detector(tiny_model, device="cpu", precision="fp32")
    eager = detector.predict_pixels(pixels)
    assert detector.compile()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for n in (10, 3, 1):  # forwards of 4, 4, 2; 3; 1
            compiled = detector.predict_pixels(pixels[:n])
            np.testing.assert_allclose(compiled, eager[:n], rtol=1e-4, atol=1e-5)


def test_without_a_compiler_the_detector_stays_eager(tiny_model, tmp_path):
    """Where inductor cannot build (no C++ compiler here; an empty cache, so nothing built
    before can stand in), ``compile`` says so in one warning and the model scores eagerly."""
    code = (
        "import numpy as np; from deepfake_scan.detector import load_detector; "
        f"d = load_detector({tiny_model!r}, device='cpu'); ok = d.compile(); "
        "p = d.predict_pixels(np.zeros((5, 64, 64, 3), np.uint8)); print(ok, p.shape)"
    )
    env = os.environ | {"CXX": str(tmp_path / "no-c++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False (5,)"
    assert "torch.compile failed, the model runs eagerly" in out.stderr
