"""recover() time: CFG branches batched vs one after another, and context prefilled once vs per step.

Run: ``python benchmarks/bench_recover.py``. All ratios come from one run on the same inputs.
"""

import torch
from PIL import Image

from _timing import median_seconds
from robust_u1.sampling import GuidanceConfig, euler_step, flow_timesteps, guided_velocity
from robust_u1.tiny import tiny_random_model

STEPS = 10


def denoise(model, inputs, per_step_prefill: bool, batched_cfg: bool):
    guidance = GuidanceConfig()
    contexts = model.build_edit_contexts(inputs, sample_posterior=False)
    x = [torch.randn(h * w, model.config.patch_latent_dim, generator=torch.Generator().manual_seed(0)) for h, w in contexts.grids]
    timesteps = flow_timesteps(STEPS, 3.0).tolist()
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        if per_step_prefill:
            contexts = model.build_edit_contexts(inputs, sample_posterior=False)
        if batched_cfg:
            v = model.guided_velocities(contexts, x, t, guidance)
        else:
            branches = [model.predict_velocity(c, x, contexts.grids, t) for c in (contexts.gen, contexts.cfg_text, contexts.cfg_img)]
            v = [guided_velocity(g, tx, im, guidance) for g, tx, im in zip(*branches)]
        x = [euler_step(a, b, t, t_next) for a, b in zip(x, v)]
    return x


def main(size=(128, 128)):
    model, processor = tiny_random_model(seed=0)
    image = Image.new("RGB", size, (120, 80, 40))
    inputs = model.prepare_edit_inputs([image], prompt="Please restore this corrupted image to its clean version.")
    with torch.no_grad():
        batched = denoise(model, inputs, False, True)
        sequential = denoise(model, inputs, False, False)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(batched, sequential))
        runs = {
            "batched CFG, prefill once": median_seconds(lambda: denoise(model, inputs, False, True), 3),
            "sequential CFG, prefill once": median_seconds(lambda: denoise(model, inputs, False, False), 3),
            "batched CFG, prefill every step": median_seconds(lambda: denoise(model, inputs, True, True), 3),
        }
    base = runs["batched CFG, prefill once"]
    print(f"recover() on a {size[0]}×{size[1]} image, {STEPS} schedule points, tiny model")
    for name, seconds in runs.items():
        print(f"{name:>34}: {seconds * 1e3:8.1f} ms  (×{seconds / base:.2f} of batched + prefill once)")


if __name__ == "__main__":
    main()
