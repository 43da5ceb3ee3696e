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
