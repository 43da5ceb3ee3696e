import io

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_scan.preprocess import Preprocessing
from deepfake_scan.train.augment import EVAL_VIEWS, eval_view, jpeg, train_view
from deepfake_scan.train.config import AugmentConfig, TrainConfig
from deepfake_scan.train.data import split_of
from deepfake_scan.train.sbi import blend_mask, self_blend
from tests.fixtures import image_bytes


@pytest.fixture
def img():
    return Image.open(io.BytesIO(image_bytes(size=(96, 80), seed=3))).convert("RGB")


def test_train_view_is_the_models_input(img):
    pre = Preprocessing(input_size=48)
    rng = np.random.default_rng(0)
    views = [train_view(img, rng, AugmentConfig(), pre) for _ in range(4)]
    assert all(v.shape == (48, 48, 3) and v.dtype == np.uint8 for v in views)
    assert not np.array_equal(views[0], views[1])  # random per call


def test_train_crop_is_a_window_at_the_scans_scale(img):
    from deepfake_scan.preprocess import fit_image

    pre = Preprocessing(input_size=80)
    aug = AugmentConfig(
        rescale_prob=0, blur_prob=0, jitter_prob=0, flip=False, jpeg_quality=(100, 100)
    )
    crop = train_view(img, np.random.default_rng(0), aug, pre, crop=32)
    assert crop.shape == (32, 32, 3)
    # Every training crop is a window of what the scan would see (up to JPEG q100 noise).
    scan = fit_image(img, pre).astype(int)
    best = min(
        np.abs(scan[t : t + 32, x : x + 32] - crop.astype(int)).mean()
        for t in range(0, 49)
        for x in range(0, 49)
    )
    assert best < 3


def test_eval_views_are_deterministic(img):
    for view in EVAL_VIEWS:
        a, b = eval_view(img, view), eval_view(img, view)
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert eval_view(img, "down0.5").size == (48, 40)
    with pytest.raises(ValueError):
        eval_view(img, "sideways")


def test_jpeg_quality_changes_the_image(img):
    low, high = np.asarray(jpeg(img, 30), float), np.asarray(jpeg(img, 95), float)
    ref = np.asarray(img, float)
    assert np.abs(low - ref).mean() > np.abs(high - ref).mean()


def test_self_blend_changes_the_face_region_not_the_border(img):
    rng = np.random.default_rng(0)
    out = np.asarray(self_blend(img, rng), float)
    ref = np.asarray(img, float)
    assert out.shape == ref.shape
    centre = np.abs(out - ref)[30:50, 38:58].mean()
    border = np.abs(out - ref)[:4].mean()
    assert centre > border
    mask = blend_mask((96, 80), np.random.default_rng(1))
    assert mask.shape == (80, 96) and 0 <= mask.min() and mask.max() <= 1


def test_split_is_deterministic_and_proportional():
    import hashlib

    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    splits = [split_of(s, 0.1, 0.2) for s in shas]
    assert splits == [split_of(s, 0.1, 0.2) for s in shas]
    assert splits.count("test") / 5000 == pytest.approx(0.2, abs=0.02)
    assert splits.count("val") / 5000 == pytest.approx(0.1, abs=0.02)


def test_config_round_trips_and_validates():
    cfg = TrainConfig(real=["r"], fake=["f"], out="o", augment={"jpeg_quality": [40, 90]})
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.augment.jpeg_quality == (40, 90)
    with pytest.raises(ValueError):
        TrainConfig(real=["r"], fake=[], out="o").validate()
    with pytest.raises(ValueError):
        TrainConfig(real=["r"], fake=["f"], out="o", val_fraction=0.6, test_fraction=0.5).validate()


def test_training_precision():
    from deepfake_scan.train.loop import train_dtype

    cpu = torch.device("cpu")
    assert train_dtype("fp32", cpu) is None and train_dtype("bf16", cpu) == torch.bfloat16
    native = torch.cpu._is_avx512_bf16_supported()
    assert train_dtype("auto", cpu) == (torch.bfloat16 if native else None)
    with pytest.raises(ValueError, match="auto, bf16, fp32"):
        TrainConfig(real=["r"], fake=["f"], out="o", precision="fp16").validate()


def test_evaluation_views_start_from_the_full_size_image():
    """For a model whose input is smaller than the files, the clean view is the scan's own
    (reduced) decode, and "halved" is half of the file, not half of that reduced decode."""
    from deepfake_scan.decode import decode
    from deepfake_scan.detector import Detector
    from deepfake_scan.models.artifact import ModelCard
    from deepfake_scan.models.registry import create_model
    from deepfake_scan.train.data import iter_eval_images
    from deepfake_scan.train.evaluate import view_logits

    pre = Preprocessing(input_size=32)
    card = ModelCard(name="t", architecture="small_cnn", preprocessing=pre)
    detector = Detector(create_model("small_cnn").eval(), card, device="cpu")
    rows = [{"data": image_bytes(size=(64, 64), seed=i), "label": i % 2} for i in range(4)]
    views = ("as_is", "down0.5", "down0.25")
    logits, labels, kept, upscale = view_logits(detector, iter_eval_images(rows, 32), views, 90)
    assert list(labels) == [0, 1, 0, 1] and all(len(v) == 4 for v in logits.values())
    assert list(upscale["down0.5"]) == [0, 0, 0, 0]  # 64 -> 32 px: the input size, not below
    assert list(upscale["down0.25"]) == [1, 1, 1, 1]  # 64 -> 16 px, enlarged twice
    assert np.array_equal(kept[0][1], decode(rows[0]["data"], pre).pixels)  # as the scan sees it
