"""Flow-GRPO rollout time per sample: one shared context prefill for the G rollouts vs G `recover()` calls.

Run: ``python benchmarks/bench_grpo.py``. For G = 4 and 8 rollouts of one 128² image (tiny model,
16 schedule points as `FlowGRPOConfig`, three-context CFG), all from one run:

- **shared prefill** (what `FlowGRPOTrainer` does): one `build_edit_contexts` for the image,
  ``.select([0] * G)`` to give every rollout the same KV caches, and `model.denoise` (one batched
  `guided_velocities` call for the G rollouts per step);
- **separate**: G independent ``model.recover()`` calls, each prefilling its contexts and denoising alone.

Both run the deterministic (Euler) sampler from the same initial noise and stop at the latents (the VAE
decode is the same for both); the script checks they agree. The two are timed in turns.
"""

import functools

import torch
from PIL import Image

from bench_sft import alternating_medians
from robust_u1 import FlowGRPOConfig
from robust_u1.tiny import tiny_random_model

# The rollout settings of FlowGRPOConfig's defaults (16 schedule points, the demo's guidance).
CONFIG = FlowGRPOConfig("bench-grpo", report_to=[], use_cpu=True).recovery_config
NUM_INFERENCE_STEPS = CONFIG.num_inference_steps


def shared_prefill_rollouts(model, inputs, noises):
    contexts = model.build_edit_contexts(inputs, sample_posterior=False).select([0] * len(noises))
    return model.denoise(contexts, noises, CONFIG).latents  # the trainer's loop, with the Euler rule everywhere


def separate_rollouts(model, inputs, noises):
    return [
        model.recover(inputs, recovery_config=CONFIG, latents=[noise], output_type="latent", progress=False,
                      sample_posterior=False)[0]
        for noise in noises
    ]  # fmt: skip


def main(size=(128, 128), group_sizes=(4, 8)):
    # One thread: on a shared CPU, spinning OpenMP threads would dominate (and scatter) the timings.
    torch.set_num_threads(1)
    model, _ = tiny_random_model(seed=0)
    image = Image.new("RGB", size, (120, 80, 40))
    inputs = model.prepare_edit_inputs([image])  # the recovery prompt P_rec
    grid = (size[0] // model.config.pixels_per_latent_token, size[1] // model.config.pixels_per_latent_token)
    print(f"rollouts of one {size[0]}×{size[1]} image, {NUM_INFERENCE_STEPS} schedule points, tiny model")
    print(f"{'G':>3} | {'shared prefill (ms/sample)':>26} | {'G recover() calls (ms/sample)':>29} | {'ratio':>6}")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for G in group_sizes:
            noises = [torch.randn(grid[0] * grid[1], model.config.patch_latent_dim, generator=generator) for _ in range(G)]
            shared, separate = shared_prefill_rollouts(model, inputs, noises), separate_rollouts(model, inputs, noises)
            separate = [model.latent_to_tokens(z)[0] for z in separate]
            assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(shared, separate)), "the two samplers disagree"
            seconds = alternating_medians({
                "shared": functools.partial(shared_prefill_rollouts, model, inputs, noises),
                "separate": functools.partial(separate_rollouts, model, inputs, noises),
            }, repeats=5, warmup=1)  # fmt: skip
            per_sample = {name: value / G for name, value in seconds.items()}
            ratio = f"×{per_sample['separate'] / per_sample['shared']:.2f}"
            print(f"{G:>3} | {per_sample['shared'] * 1e3:>26.1f} | {per_sample['separate'] * 1e3:>29.1f} | {ratio:>6}")


if __name__ == "__main__":
    main()
