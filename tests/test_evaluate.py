"""Evaluation: metrics agree with scikit-learn, laundering treats both classes alike, attacks
lower a fake's score, and the command writes its report end to end on a real local Ray."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from deepfake_scan.evaluate import results
from deepfake_scan.evaluate.attacks import attack_columns, attack_detector, fgsm, pgd
from deepfake_scan.evaluate.launder import DEFAULT_VIEWS, launder
from deepfake_scan.evaluate.results import Scored, detection_metrics, metric_table
from deepfake_scan.evaluate.steps import read_views
from deepfake_scan.preprocess import Preprocessing
from deepfake_scan.train.augment import jpeg
from tests.fixtures import image_bytes

# --- metrics -------------------------------------------------------------------------------------


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s ECE written out longhand, as an independent check."""
    pred = (p >= 0.5).astype(int)
    conf = np.where(pred == 1, p, 1 - p)
    total = 0.0
    for b in range(bins):
        lo, hi = 0.5 + b * 0.5 / bins, 0.5 + (b + 1) * 0.5 / bins
        m = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
        if m.any():
            total += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return total


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.clip(0.35 * y + rng.uniform(0, 0.65, 400), 0, 1)
    m = detection_metrics(y, s, threshold=0.55, band=(0.45, 0.65))
    pred = (s >= 0.55).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["acc"] == pytest.approx(accuracy_score(y, pred))
    assert m["real_acc"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert m["fake_acc"] == pytest.approx(recall_score(y, pred, pos_label=1))
    fpr, tpr, _ = roc_curve(y, s)
    i = np.argmin(np.abs(fpr - (1 - tpr)))
    assert m["eer"] == pytest.approx((fpr[i] + 1 - tpr[i]) / 2)
    assert m["ece"] == pytest.approx(_ece(y, s))
    inside = (s >= 0.45) & (s < 0.65)
    assert m["review_rate"] == pytest.approx(inside.mean())
    assert m["acc_decided"] == pytest.approx(accuracy_score(y[~inside], pred[~inside]))


def _scored(scores: np.ndarray, label: np.ndarray, uri: list[str], source: list[str], adv=None):
    n = len(label)
    adv = np.zeros((n, 0), np.float32) if adv is None else adv
    cols = tuple(attack_columns(["fgsm"], [1 / 255, 4 / 255])[: adv.shape[1]])
    return Scored(
        np.array(uri, dtype=object),
        np.array(source, dtype=object),
        label,
        np.array([""] * n, dtype=object),
        scores.reshape(n, -1).astype(np.float32),
        adv.astype(np.float32),
        ("none",),
        cols,
    )


def test_each_source_is_measured_against_the_other_class():
    rng = np.random.default_rng(1)
    label = np.array([0] * 40 + [1] * 30)
    source = ["/r"] * 40 + ["/f"] * 30
    uri = [f"/r/x{i}.jpg" for i in range(40)]
    uri += [f"/f/{'gan' if i < 12 else 'swap'}/y{i}.jpg" for i in range(30)]
    s = rng.uniform(0, 1, 70) * 0.7 + 0.3 * label
    table = metric_table(_scored(s, label, uri, source), 0.5, (0.5, 0.5))["none"]
    assert set(table) == {"overall", "/r", "/f", "/f/gan", "/f/swap"}
    gan = (label == 0) | np.array(["/gan/" in u for u in uri])
    assert table["/f/gan"]["auc"] == pytest.approx(roc_auc_score(label[gan], s[gan]))
    assert table["/f/gan"]["n_fake"] == 12 and table["/f/gan"]["n_real"] == 40
    assert table["overall"]["auc"] == pytest.approx(roc_auc_score(label, s))


def test_adversarial_table_counts_fakes_turned_real():
    label = np.array([0, 1, 1, 1, 1])
    clean = np.array([0.1, 0.9, 0.8, 0.55, 0.2])  # the last fake was missed before any attack
    adv = np.array(
        [[np.nan, np.nan], [0.7, 0.3], [0.2, 0.1], [0.5, 0.52], [0.1, 0.1]], dtype=np.float32
    )
    uri = [f"/d/{i}" for i in range(5)]
    data = _scored(clean, label, uri, ["/r"] + ["/f"] * 4, adv)
    rows = results.adversarial(data, threshold=0.5, band=(0.45, 0.6))
    assert [r["epsilon"] for r in rows] == ["1/255", "4/255"]
    assert all(r["n"] == 4 for r in rows)
    # eps 1: only 0.8 -> 0.2 leaves the band downwards; 0.55 -> 0.5 stays uncertain.
    assert rows[0]["turned_real"] == 1 and rows[0]["turned_real_rate"] == pytest.approx(1 / 3)
    assert rows[1]["turned_real"] == 2 and rows[1]["fake_acc_after"] == pytest.approx(0.25)
    assert rows[0]["fake_acc_before"] == pytest.approx(0.75)


# --- laundering ----------------------------------------------------------------------------------


def test_laundering_is_identical_for_both_classes(tmp_path):
    data = image_bytes("JPEG", (96, 80), seed=3, quality=95)
    paths = []
    for cls in ("real", "fake"):
        (tmp_path / cls).mkdir()
        paths.append(tmp_path / cls / "x.jpg")
        paths[-1].write_bytes(data)
    batch = {
        "uri": np.array([str(p) for p in paths], dtype=object),
        "kind": np.array(["file", "file"], dtype=object),
        "size": np.array([len(data)] * 2),
        "etag": np.array(["", ""], dtype=object),
        "label": np.array([0, 1]),
        "source": np.array([str(tmp_path / "real"), str(tmp_path / "fake")], dtype=object),
    }
    pre = Preprocessing(input_size=48)
    [rows] = list(read_views(batch, pre.to_dict(), DEFAULT_VIEWS, attack_share=1.0))
    again = next(read_views(batch, pre.to_dict(), DEFAULT_VIEWS, attack_share=1.0))
    px = rows["pixels"]
    assert px.shape == (2, len(DEFAULT_VIEWS), 48, 48, 3)
    assert np.array_equal(px[0], px[1])  # same bytes, same pixels, whatever the label
    assert np.array_equal(px, again["pixels"])  # noise is seeded by content: reruns agree
    for i in range(1, len(DEFAULT_VIEWS)):
        assert not np.array_equal(px[0, 0], px[0, i]), DEFAULT_VIEWS[i]
    assert rows["attack"].tolist() == [False, True]  # only fakes are attacked
    img = Image.open(io.BytesIO(data)).convert("RGB")
    assert np.array_equal(np.asarray(launder(img, "jpeg50", 0)), np.asarray(jpeg(img, 50)))


# --- attacks -------------------------------------------------------------------------------------

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _toy(n: int, rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Smooth colour gradients; the fakes carry a faint checkerboard (a generator's trace)."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = (
        rng.uniform(60, 190, (n, 1, 1, 3))
        + rng.uniform(-2, 2, (n, 1, 1, 3)) * (xx + yy)[None, ..., None]
    )
    label = np.arange(n) % 2
    checker = ((xx + yy) % 2 * 2 - 1)[None, ..., None] * 12.0
    pixels = np.clip(base + label[:, None, None, None] * checker, 0, 255).astype(np.uint8)
    return pixels, label


def _normalise(pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def one_thread():
    # A model this small gains nothing from threads, and on a busy machine two torch threads
    # spin against each other (40x slower measured here under load).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_model(one_thread):
    """small_cnn trained for a few plain-torch steps to find the checkerboard."""
    from deepfake_scan.models.registry import create_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model("small_cnn", width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        pixels, y = _toy(16, rng)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(_normalise(pixels)), torch.from_numpy(y).float()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_attacks_lower_the_score_of_fakes(toy_model):
    pixels, y = _toy(32, np.random.default_rng(7))
    fakes = pixels[y == 1]
    x = _normalise(fakes)
    ones = torch.ones(len(fakes))
    with torch.no_grad():
        clean = toy_model(x)  # logits: a confident model's probabilities all round to 1
        reals = toy_model(_normalise(pixels[y == 0]))
    assert clean.min() > reals.max()  # it did learn something to attack
    toy_model.train()  # as in a training loop: the attack must not change the mode or BN stats
    stats = [b.clone() for b in toy_model.buffers()]
    for eps in (1 / 255, 4 / 255):
        for adv in (
            fgsm(toy_model, x, ones, eps, MEAN, STD),
            pgd(toy_model, x, ones, eps, MEAN, STD, steps=5),
        ):
            p_adv = adv * STD[0] + MEAN[0]
            p = x * STD[0] + MEAN[0]
            assert (p_adv - p).abs().max() <= eps + 1e-5
            assert p_adv.min() >= -1e-6 and p_adv.max() <= 1 + 1e-6
            with torch.no_grad():
                toy_model.eval()
                after = toy_model(adv)
                toy_model.train()
            assert (after < clean).all()
    assert toy_model.training
    assert all(torch.equal(a, b) for a, b in zip(stats, toy_model.buffers(), strict=True))
    toy_model.eval()


def test_attack_detector_scores_every_attack_and_budget(toy_model):
    from deepfake_scan.detector import Detector
    from deepfake_scan.models.artifact import ModelCard

    card = ModelCard(
        name="toy",
        architecture="small_cnn",
        preprocessing=Preprocessing(input_size=32, mean=MEAN, std=STD),
    )
    detector = Detector(toy_model, card, device="cpu")
    pixels, y = _toy(16, np.random.default_rng(3))
    fakes = pixels[y == 1]
    out = attack_detector(detector, fakes, ("fgsm", "pgd"), (1 / 255, 4 / 255), pgd_steps=3)
    assert out.shape == (len(fakes), 4)
    clean = detector.predict_pixels(fakes)
    assert (out.mean(axis=0) < clean.mean()).all()
    assert out[:, 3].mean() <= out[:, 1].mean() + 1e-6  # PGD at 4/255 at least as strong as FGSM
    # Scores are calibrated as the scan's: with the card's calibration for enlarged images too.
    card.upsample_calibration = (-0.5, -2.0)
    exact = Detector(toy_model, card, device="cpu", precision="fp32")  # as the attacks compute
    sizes = np.full((len(fakes), 2), 16)  # enlarged 2x to the 32 px input
    unmoved = attack_detector(exact, fakes, ("fgsm",), (1e-9,), sizes=sizes)[:, 0]
    np.testing.assert_allclose(unmoved, exact.predict_pixels(fakes, sizes=sizes), atol=1e-4)
    assert np.abs(unmoved - exact.predict_pixels(fakes)).max() > 0.01


# --- end to end ----------------------------------------------------------------------------------


def _labelled_folder(root: Path) -> tuple[Path, Path]:
    real, fake = root / "real", root / "fake"
    for i in range(3):
        for sub, fmt in (("a", "JPEG"), ("b", "PNG")):
            path = real / sub / f"r{i}.{fmt.lower()}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image_bytes(fmt, (72 + i, 64), seed=i + (10 if sub == "b" else 0)))
    fake.mkdir()
    for i in range(4):
        (fake / f"f{i}.jpg").write_bytes(image_bytes("JPEG", (80, 60 + i), seed=50 + i))
    (fake / "broken.jpg").write_bytes(b"not an image at all")
    return real, fake


@pytest.mark.usefixtures("ray_local")
def test_evaluate_command_writes_the_report(tmp_path, tiny_model):
    from deepfake_scan.cli import main
    from deepfake_scan.decode import decode
    from deepfake_scan.detector import load_detector

    real, fake = _labelled_folder(tmp_path / "data")
    out = tmp_path / "report"
    argv = ["evaluate", "--model", tiny_model, "--real", str(real), "--fake", str(fake)]
    rc = main([*argv, "--out", str(out), "--pgd-steps", "2", "--epsilons", "1,4", "--json"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in ("report.html", "roc.png", "pr.png", "scores.png", "robustness.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "adversarial.png").exists()
    counts = summary["counts"]
    assert counts["scored"] == {"real": 6, "fake": 4}
    assert counts["unreadable"] == 1 and counts["errors"] == {"not_an_image": 1}
    assert counts["attacked_fakes"] == 4
    assert set(summary["metrics"]) == {"overall", str(real), str(fake), f"{real}/a", f"{real}/b"}
    assert [r["view"] for r in summary["robustness"]] == list(DEFAULT_VIEWS)
    assert [(r["attack"], r["epsilon"]) for r in summary["adversarial"]] == [
        ("fgsm", "1/255"),
        ("fgsm", "4/255"),
        ("pgd", "1/255"),
        ("pgd", "4/255"),
    ]
    for key, name in (
        ("missed_fakes", "worst_missed_fakes.png"),
        ("false_alarms", "worst_false_alarms.png"),
    ):
        assert (out / name).exists() == bool(summary["worst_mistakes"][key])
    page = (out / "report.html").read_text()
    assert 'id="robustness"' in page and 'id="adversarial"' in page and 'src="roc.png"' in page
    # The clean view is exactly what a scan scores for the same file.
    scores = pq.read_table(out / "scores.parquet").to_pandas().set_index("uri")
    detector = load_detector(tiny_model)
    path = real / "a" / "r0.jpeg"
    d = decode(path.read_bytes(), detector.card.preprocessing)
    scan_score = float(detector.predict_pixels(np.array(d.pixels[None]))[0])
    assert scores.loc[str(path), "score_none"] == pytest.approx(scan_score, abs=1e-5)
    diff = results.compare(summary, summary)
    assert all(r["auc"] in (0.0, None) or np.isnan(r["auc"]) for r in diff["robustness"])


def test_command_line_defaults_are_the_librarys():
    """The evaluate command spells its defaults out (so the CLI need not import torch)."""
    import inspect

    from deepfake_scan.evaluate.attacks import ATTACKS, EPSILONS, PGD_STEPS
    from deepfake_scan.evaluate.commands import evaluate

    params = inspect.signature(evaluate).parameters
    assert params["attacks"].default == ",".join(ATTACKS)
    assert params["pgd_steps"].default == PGD_STEPS
    budgets = [float(e) / 255 for e in params["epsilons"].default.split(",")]
    assert budgets == pytest.approx(EPSILONS)
