import numpy as np
import pytest
import torch

from deepfake_scan.train.gan import (
    Discriminator,
    GanConfig,
    GanTrainer,
    Generator,
    d_hinge_loss,
    g_hinge_loss,
    load_generator,
    save_generator,
    to_gan_input,
    to_uint8,
)


@pytest.mark.parametrize("size", [32, 64])
def test_generator_and_discriminator_shapes(size):
    cfg = GanConfig(size=size, z_dim=16, width=8)
    G, D = Generator(cfg), Discriminator(cfg)
    images = G.sample(3)
    assert images.shape == (3, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1
    assert D(images).shape == (3,)
    pixels = to_uint8(images)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, size, size, 3)
    assert to_gan_input(pixels, size).shape == (3, 3, size, size)


def test_hinge_losses():
    d_real, d_fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # Real scores past the margin (2.0) and fake ones below -1 (-2.0) cost nothing.
    assert float(d_hinge_loss(d_real, d_fake)) == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert float(g_hinge_loss(d_fake)) == pytest.approx(1.0)


def test_gan_step_updates_both_networks_with_finite_losses():
    torch.manual_seed(0)
    gan = GanTrainer(GanConfig(size=32, z_dim=16, width=8))
    g0 = [p.clone() for p in gan.G.parameters()]
    d0 = [p.clone() for p in gan.D.parameters()]
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    losses = gan.step(real)
    assert set(losses) == {"gan_d_loss", "gan_g_loss"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, gan.G.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, gan.D.parameters(), strict=True))


def test_generator_round_trip_and_synth(tmp_path):
    from deepfake_scan.train.commands import main

    torch.manual_seed(0)
    G = Generator(GanConfig(size=32, z_dim=16, width=8)).eval()
    save_generator(G, str(tmp_path / "model"))
    loaded = load_generator(str(tmp_path / "model"))  # a model dir holding generator/
    z = torch.randn(2, 16)
    assert torch.allclose(G(z), loaded(z))
    code = main(["synth", "--generator", str(tmp_path / "model"), "--n", "5",
                 "--out", str(tmp_path / "synth")])  # fmt: skip
    assert code == 0
    files = sorted((tmp_path / "synth").glob("*.png"))
    assert len(files) == 5


def test_gan_examples_pair_each_fake_with_a_real_at_the_gans_resolution():
    """A detector must not tell GAN fakes from reals by their low resolution alone: the reals
    that join them went through the same downscale and fit back up."""
    from deepfake_scan.train.config import AugmentConfig, TrainConfig
    from deepfake_scan.train.loop import WorkerState, _gan_examples

    torch.manual_seed(0)
    aug = AugmentConfig(
        jpeg_quality=(100, 100), rescale_prob=0, blur_prob=0, jitter_prob=0, flip=False
    )
    cfg = TrainConfig(input_size=64, batch_size=4, gan_size=32, gan_share=0.5, augment=aug)
    state = WorkerState(cfg, None, None, None, None, torch.device("cpu"))
    state.gan = GanTrainer(GanConfig(size=32, z_dim=16, width=8))
    checkers = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 255
    reals = checkers[None, :, :, None].expand(3, 64, 64, 3).to(torch.uint8)  # 1-px detail
    views, labels, losses = _gan_examples(state, reals, np.random.default_rng(0))
    assert views.dtype == torch.uint8 and views.shape == (4, 64, 64, 3)
    assert labels.tolist() == [1, 1, 0, 0] and set(losses) == {"gan_d_loss", "gan_g_loss"}
    # The 1-pixel checkerboard does not survive the GAN's 32 px: the added reals are smooth.
    detail = views[2:].float().diff(dim=2).abs().mean()
    assert detail < 0.1 * reals.float().diff(dim=2).abs().mean()

    fewer, labels, _ = _gan_examples(state, reals[:1], np.random.default_rng(0))
    assert labels.tolist() == [1, 1, 0] and len(fewer) == 3  # no more reals than the batch has
