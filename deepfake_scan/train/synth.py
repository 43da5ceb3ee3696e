"""Write images from a trained GAN generator (PNG, lossless: no compression traces added)."""

from __future__ import annotations

import io


def synthesize(generator: str, n: int, out: str, seed: int = 0, batch: int = 64) -> list[str]:
    """Sample ``n`` images from the generator at ``generator`` into ``out``; returns their URIs."""
    import torch
    from PIL import Image

    from deepfake_scan.storage import get_fs, join
    from deepfake_scan.train.gan import load_generator, to_uint8

    G = load_generator(generator)
    fs, path = get_fs(out)
    fs.makedirs(path, exist_ok=True)
    rng = torch.Generator().manual_seed(seed)
    written = []
    with torch.inference_mode():
        for start in range(0, n, batch):
            images = to_uint8(G.sample(min(batch, n - start), generator=rng)).numpy()
            for i, img in enumerate(images):
                name = f"synth_{seed:04d}_{start + i:06d}.png"
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG")
                with fs.open(join(path, name), "wb") as f:
                    f.write(buf.getvalue())
                written.append(join(out, name))
    return written
