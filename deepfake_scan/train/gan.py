"""The GAN data generator: a DCGAN-style generator and a spectrally normalised discriminator.

Trained in the same job on the real images with the hinge loss (the stabilisers that work for
small GANs: spectral norm in D, Adam(2e-4, betas 0.5/0.999)); its samples join the detector's
batches as extra fakes, so the detector keeps seeing the generator's newest fakes; as many of
the batch's reals join them brought to the generator's resolution, so that the blur of a small
image fitted up to the input size never marks a fake by itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

GENERATOR_DIR = "generator"


@dataclass
class GanConfig:
    size: int = 64  # output side, a power of two >= 32
    z_dim: int = 128
    width: int = 64  # channels of the last generator block; earlier ones double

    @property
    def n_up(self) -> int:
        return int(math.log2(self.size)) - 2  # from 4x4


class Generator(nn.Module):
    """z -> dense -> 4x4 -> (upsample, conv, BN, ReLU)* -> conv -> tanh, images in [-1, 1]."""

    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.width * 2 ** (cfg.n_up - 1)
        self.fc = nn.Linear(cfg.z_dim, 4 * 4 * ch)
        blocks: list[nn.Module] = []
        for _ in range(cfg.n_up):
            out = max(cfg.width, ch // 2)
            blocks += [
                nn.BatchNorm2d(ch),
                nn.ReLU(inplace=True),
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(ch, out, 3, padding=1),
            ]
            ch = out
        self.body = nn.Sequential(*blocks, nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
        self.to_rgb = nn.Conv2d(ch, 3, 3, padding=1)
        self._ch0 = cfg.width * 2 ** (cfg.n_up - 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, self._ch0, 4, 4)
        return torch.tanh(self.to_rgb(self.body(x)))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = self.fc.weight.device
        z = torch.randn(n, self.cfg.z_dim, generator=generator, device="cpu").to(device)
        return self(z)


class Discriminator(nn.Module):
    """(SN-conv stride 2, LeakyReLU 0.2)* -> SN-linear: one hinge score per image."""

    def __init__(self, cfg: GanConfig):
        super().__init__()
        layers: list[nn.Module] = []
        cin, ch = 3, cfg.width
        for _ in range(cfg.n_up):
            layers += [spectral_norm(nn.Conv2d(cin, ch, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            cin, ch = ch, ch * 2
        self.body = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(cin * 4 * 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1)).squeeze(-1)


def d_hinge_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()


def g_hinge_loss(d_fake: torch.Tensor) -> torch.Tensor:
    return -d_fake.mean()


def to_gan_input(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NHWC images -> float NCHW in [-1, 1] at the GAN's resolution (antialiased)."""
    x = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1], NCHW -> uint8 NHWC on the CPU."""
    x = ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu()


class GanTrainer:
    """One generator/discriminator pair and their optimisers; ``step`` is one hinge-GAN update."""

    def __init__(self, cfg: GanConfig, lr: float = 2e-4, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.G = Generator(cfg).to(device)
        self.D = Discriminator(cfg).to(device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.999))

    def step(self, real: torch.Tensor) -> dict[str, float]:
        """One D then one G update on a batch of real images (float NCHW in [-1, 1])."""
        n = real.shape[0]
        z = torch.randn(n, self.cfg.z_dim, device=real.device)
        fake = self.G(z)
        # One D forward over real and fake together: its spectral-norm state updates once.
        scores = self.D(torch.cat([real, fake.detach()]))
        loss_d = d_hinge_loss(scores[:n], scores[n:])
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        _average_gradients(self.D)
        self.opt_d.step()

        loss_g = g_hinge_loss(self.D(fake))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        _average_gradients(self.G)
        self.opt_g.step()
        return {"gan_d_loss": loss_d.item(), "gan_g_loss": loss_g.item()}

    def state_dict(self) -> dict:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])


def _average_gradients(module: nn.Module) -> None:
    """Data-parallel GAN without DDP wrappers: G and D run several forwards per step, which DDP's
    reducer does not allow; their parameters start equal (same seed) and stay equal this way."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


def save_generator(G: Generator, out: str) -> str:
    """Write ``out/generator/{model.safetensors, generator.json}``; returns that directory."""
    from safetensors.torch import save

    from deepfake_scan.storage import get_fs, join

    fs, path = get_fs(out)
    gdir = join(path, GENERATOR_DIR)
    fs.makedirs(gdir, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    with fs.open(join(gdir, "model.safetensors"), "wb") as f:
        f.write(save(state))
    with fs.open(join(gdir, "generator.json"), "w") as f:
        json.dump({"kind": "dcgan_generator", "config": asdict(G.cfg)}, f, indent=2)
    return join(out, GENERATOR_DIR)


def load_generator(uri: str) -> Generator:
    """Load a generator from its directory, or from a model directory that holds one."""
    from safetensors.torch import load

    from deepfake_scan.errors import ModelError
    from deepfake_scan.storage import get_fs, join

    fs, path = get_fs(uri)
    if not fs.exists(join(path, "generator.json")) and fs.exists(join(path, GENERATOR_DIR)):
        path = join(path, GENERATOR_DIR)
    try:
        with fs.open(join(path, "generator.json"), "r") as f:
            meta = json.load(f)
        with fs.open(join(path, "model.safetensors"), "rb") as f:
            state = load(f.read())
    except FileNotFoundError:
        raise ModelError(f"model_error: no generator in {uri}") from None
    G = Generator(GanConfig(**meta["config"]))
    G.load_state_dict(state)
    return G.eval()
