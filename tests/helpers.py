"""Small synthetic data shared by the training tests."""

import numpy as np
import torch
from PIL import Image, ImageDraw


def shapes_image(seed: int, size: int = 32) -> Image.Image:
    """A flat background with one coloured square."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    x, y = (int(v) for v in rng.integers(2, size // 2, 2))
    ImageDraw.Draw(image).rectangle((x, y, x + size // 3, y + size // 3), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def noisy_pairs(count: int, start: int = 0, sigma: float = 50.0) -> list[dict]:
    """(corrupted, clean) rows: Gaussian noise on shapes images."""
    rows = []
    for i in range(start, start + count):
        clean = shapes_image(i)
        noise = np.random.default_rng(100 + i).normal(0, sigma, (32, 32, 3))
        rows.append({"image": Image.fromarray(np.clip(np.asarray(clean) + noise, 0, 255).astype(np.uint8)), "target_image": clean})
    return rows


def fit_vae(model, processor, images, steps: int = 120) -> None:
    """Makes the random tiny VAE reconstruct these images, so that PSNR/SSIM to the clean image mean something."""
    vae = model.vae
    vae.requires_grad_(True)
    x = torch.stack([processor.image_processor.normalize_image(image) for image in images])
    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-3)
    for _ in range(steps):
        reconstruction = vae.decode(vae.encode(x).latent_dist.sample()).sample
        loss = ((reconstruction - x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.requires_grad_(False)


def psnr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(10 * np.log10(255.0**2 / ((a - b) ** 2).mean()))


def recover_latent(model, golden) -> torch.Tensor:
    """`recover()` of the golden edit case with its recorded noise (4 points), as latents: loading tests compare it bit for bit."""
    from robust_u1.generation_robust_u1 import EditInputs

    inputs = EditInputs([golden["edit/vae_pixel_values"]], [golden["edit/vit_pixel_values"]], [golden["edit/prompt_ids"]])
    return model.recover(
        inputs, num_inference_steps=4, latents=[golden["edit_full/text_channel/init_noise"]],
        output_type="latent", sample_posterior=False, progress=False,
    )[0]  # fmt: skip


def chat_reply(content: str) -> dict:
    """An OpenAI chat-completions reply with one message (for the local judge servers)."""
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}
