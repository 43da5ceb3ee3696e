"""The training job's configuration: typed, validated once, saved inside every artifact."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

from deepfake_scan.faces import FaceGeometry
from deepfake_scan.preprocess import Preprocessing

# fp16 training would need loss scaling; bf16 does not, and every device that runs fp16 fast here
# (CUDA since Ampere, CPUs with AMX) runs bf16 as fast.
TRAIN_PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class AugmentConfig:
    """Augmentations applied to BOTH classes, so nothing but the manipulation tells them apart."""

    # Every training image is re-encoded: the shared data's classes differ in JPEG quality.
    jpeg_quality: tuple[int, int] = (30, 100)
    # Share of images re-encoded at a light quality (75-100) instead of anywhere in the range:
    # uniform 30-100 alone wipes the evidence from too many images and learning stalls.
    jpeg_light_share: float = 0.7
    # Random down/up-scaling before the crop (laundering by resizing); probability and range.
    # Resizing (and fitting back to the input size) or blurring masks the evidence completely;
    # measured here, 30 % rescaled + 20 % blurred + half the images below q75 left the model at
    # val AUC 0.82 after two epochs, while mild augmentation reached 0.98 within 3k images.
    rescale_prob: float = 0.2
    rescale: tuple[float, float] = (0.45, 1.3)
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    jitter_prob: float = 0.5
    jitter: float = 0.2  # brightness / contrast / saturation factors in [1 - j, 1 + j]
    flip: bool = True


@dataclass
class TrainConfig:
    real: list[str] = field(default_factory=list)
    fake: list[str] = field(default_factory=list)
    # Verdict stores whose human corrections (``deepfake-scan corrections import``) join the
    # training data with the reviewer's label, overriding the folder a file came from.
    corrections: list[str] = field(default_factory=list)
    out: str = ""
    name: str = "deepfake-detector"
    version: str = "0.1.0"
    arch: str = "npr_resnet"
    arch_kwargs: dict = field(default_factory=dict)
    init_weights: str | None = None  # a model directory/URI whose weights start the training
    # Preprocessing travels into model.json; the scan fits images exactly the same way.
    input_size: int = 160
    # Train on random crops of this side taken AFTER fit_image, i.e. at the scale the scan
    # feeds the model: no resampling beyond the scan's own, and cheaper steps. The network is
    # fully convolutional with global pooling, so it scores the whole input at scan time (as
    # CNNDetection's no-crop evaluation). None: train on the whole input.
    train_crop: int | None = None
    resize: str = "center_crop"
    interpolation: str = "bilinear"
    epochs: int = 6
    batch_size: int = 32  # per worker
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1  # one-cycle: linear warm-up, then cosine decay
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    threads_per_worker: int | None = None  # torch threads; default: cpus_per_worker, at least 1
    address: str | None = None  # Ray cluster; None = RAY_ADDRESS or a local instance
    seed: int = 0
    # Arithmetic of the training steps: "auto" = bf16 autocast where the device has native bf16
    # (CUDA with bf16, CPUs with AMX / AVX512-BF16; ~2x a CPU step here), else fp32.
    precision: str = "auto"
    # Deterministic split by a hash of the image bytes: no name or path decides it.
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    limit_per_class: int | None = None  # use only the first N images of each class (quick runs)
    max_steps_per_epoch: int | None = None  # cap for smoke tests
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sbi: bool = False
    # Train on face crops (deepfake_scan.faces: the scan's own search and crop geometry).
    # Images without a face are used whole, or left out with face_only (the model then labels
    # faceless images "no_face" when scanning).
    faces: bool = False
    face_only: bool = False
    adversarial: bool = False  # add FGSM examples of each batch (see deepfake_scan.evaluate)
    sbi_share: float = 0.5  # chance that a real training image also yields a self-blended fake
    gan: bool = False
    # Extra GAN fakes per detector batch, as a share of its size (and as many low-res reals).
    gan_share: float = 0.125
    gan_size: int = 64
    gan_z: int = 128
    gan_width: int = 32  # 2.6 MB of generator weights at 64 px; 64 gives 10 MB
    gan_lr: float = 2e-4
    # Identical re-encoding of every evaluation image, so JPEG tables cannot tell the classes apart.
    eval_quality: int = 90
    review_max_error: float = 0.02
    review_max_share: float = 0.2  # the review band never holds more of the validation images
    eval_limit: int = 20000  # most images per split scored on the driver at the end
    checkpoint_dir: str | None = None  # default: OUT/checkpoints
    resume: bool = False
    command: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            aug = {k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}
            self.augment = AugmentConfig(**aug)
        self.real, self.fake = list(self.real), list(self.fake)

    def validate(self) -> TrainConfig:
        if not self.real or not self.fake:
            raise ValueError("training needs at least one --real and one --fake source")
        if not self.out:
            raise ValueError("--out is required")
        if self.epochs < 1 or self.batch_size < 2 or self.num_workers < 1:
            raise ValueError("epochs >= 1, batch_size >= 2 and num_workers >= 1 are required")
        if not (self.val_fraction > 0 and self.test_fraction >= 0) or (
            self.val_fraction + self.test_fraction >= 1
        ):
            raise ValueError("val_fraction must be > 0 and val + test fractions < 1")
        lo, hi = self.augment.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"jpeg_quality range {self.augment.jpeg_quality} outside 1..100")
        lo, hi = self.augment.rescale
        if not 0 < lo <= hi:
            raise ValueError(f"rescale range {self.augment.rescale} needs 0 < LOW <= HIGH")
        shares = (self.gan_share, self.sbi_share, self.review_max_share)
        if not all(0 <= v <= 1 for v in shares):
            raise ValueError("gan_share, sbi_share and review_max_share are shares in [0, 1]")
        if self.gan_size not in (32, 64, 128):
            raise ValueError("gan_size must be 32, 64 or 128")
        if self.train_crop is not None and not 8 <= self.train_crop <= self.input_size:
            raise ValueError(f"train_crop must be in 8..input_size ({self.input_size})")
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(
                f"training precision must be one of {', '.join(TRAIN_PRECISIONS)}, "
                f"not {self.precision!r}"
            )
        self.preprocessing()  # validates input size and modes
        # Ray workers run in another working directory: local paths must be absolute.
        self.init_weights, self.out, self.checkpoint_dir = (
            _absolute(p) for p in (self.init_weights, self.out, self.checkpoint_dir)
        )
        return self

    def face_geometry(self) -> FaceGeometry | None:
        return FaceGeometry(face_only=self.face_only) if self.faces or self.face_only else None

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(
            input_size=self.input_size, resize=self.resize, interpolation=self.interpolation
        )

    @property
    def checkpoint_root(self) -> str:
        from deepfake_scan.storage import join

        return self.checkpoint_dir or join(self.out, "checkpoints")

    @property
    def split_rule(self) -> str:
        """How ``data.split_of`` splits, in words (model.json and the model card)."""
        return (
            "sha256 of image bytes: first 64 bits as a fraction; "
            f"test < {self.test_fraction}, val < {self.test_fraction + self.val_fraction}"
        )

    @property
    def torch_threads(self) -> int:
        return self.threads_per_worker or max(1, int(self.cpus_per_worker))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _absolute(path: str | None) -> str | None:
    return os.path.abspath(path) if path and "://" not in path else path
