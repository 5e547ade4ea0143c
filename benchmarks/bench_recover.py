"""recover() time: CFG branches batched vs one after another, and context prefilled once vs per step.

Run: ``python benchmarks/bench_recover.py``. All ratios come from one run on the same inputs. The
library's loop (`model.denoise`: batched CFG, contexts prefilled once) is the reference; the two
alternatives are written out here step by step with the same schedule, guidance and Euler rule.
"""

import torch
from PIL import Image

from _timing import median_seconds
from robust_u1 import RecoveryConfig
from robust_u1.sampling import EulerStep, flow_timesteps, guided_velocity
from robust_u1.tiny import tiny_random_model

CONFIG = RecoveryConfig(num_inference_steps=10)


def library_loop(model, inputs):
    contexts = model.build_edit_contexts(inputs, sample_posterior=False)
    x = model.prepare_latents(contexts.grids, generator=torch.Generator().manual_seed(0))
    return model.denoise(contexts, x, CONFIG).latents


def written_out_loop(model, inputs, per_step_prefill: bool):
    contexts = model.build_edit_contexts(inputs, sample_posterior=False)
    x = model.prepare_latents(contexts.grids, generator=torch.Generator().manual_seed(0))
    timesteps = flow_timesteps(CONFIG.num_inference_steps, CONFIG.sampling_shift).tolist()
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        if per_step_prefill:
            contexts = model.build_edit_contexts(inputs, sample_posterior=False)
            v = model.guided_velocities(contexts, x, t, CONFIG)
        else:  # the three CFG branches one after another
            branches = [model.predict_velocity(c, x, contexts.grids, t) for c in (contexts.gen, contexts.cfg_text, contexts.cfg_img)]
            v = [guided_velocity(g, tx, im, CONFIG) for g, tx, im in zip(*branches)]
        x = [EulerStep().step(vi[None], xi[None], t, t_next).prev_sample[0] for xi, vi in zip(x, v)]
    return x


def main(size=(128, 128)):
    model, processor = tiny_random_model(seed=0)
    image = Image.new("RGB", size, (120, 80, 40))
    inputs = model.prepare_edit_inputs([image], prompt="Please restore this corrupted image to its clean version.")
    with torch.no_grad():
        reference = library_loop(model, inputs)
        for per_step_prefill in (False, True):
            other = written_out_loop(model, inputs, per_step_prefill)
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(reference, other))
        runs = {
            "batched CFG, prefill once": median_seconds(lambda: library_loop(model, inputs), 3),
            "sequential CFG, prefill once": median_seconds(lambda: written_out_loop(model, inputs, False), 3),
            "batched CFG, prefill every step": median_seconds(lambda: written_out_loop(model, inputs, True), 3),
        }
    base = runs["batched CFG, prefill once"]
    print(f"recover() on a {size[0]}×{size[1]} image, {CONFIG.num_inference_steps} schedule points, tiny model")
    for name, seconds in runs.items():
        print(f"{name:>34}: {seconds * 1e3:8.1f} ms  (×{seconds / base:.2f} of batched + prefill once)")


if __name__ == "__main__":
    main()
