"""Per-step denoising time with the cached context vs recomputing the context every step.

Run: ``python benchmarks/bench_sampling.py``. Prints, for two context lengths, the time of one
velocity prediction against the KV cache and of prefill + prediction, and their ratio. The cached
step should grow with the context only through attention (tiny next to the projections here).
"""

import torch

from _timing import median_seconds
from robust_u1 import TextBlock
from robust_u1.tiny import tiny_random_model


def main(context_lengths=(256, 2048), latent_grid=(4, 4)):
    torch.manual_seed(0)
    model, _ = tiny_random_model(seed=0)
    dim = model.config.patch_latent_dim
    x = [torch.randn(latent_grid[0] * latent_grid[1], dim)]
    print(f"{'context':>8} | {'cached step (ms)':>16} | {'recompute step (ms)':>19} | {'ratio':>6}")
    cached_times = {}
    for length in context_lengths:
        ids = torch.randint(0, 200, (length - 2,))
        cache = model.prefill(model.new_cache(1), [TextBlock(ids)])

        def cached_step():
            with torch.no_grad():
                model.predict_velocity(cache, x, [latent_grid], 0.5)

        def recompute_step():
            with torch.no_grad():
                fresh = model.prefill(model.new_cache(1), [TextBlock(ids)])
                model.predict_velocity(fresh, x, [latent_grid], 0.5)

        cached, recompute = median_seconds(cached_step, 20), median_seconds(recompute_step, 5)
        cached_times[length] = cached
        print(f"{length:>8} | {cached * 1e3:>16.2f} | {recompute * 1e3:>19.2f} | {recompute / cached:>6.1f}")
    short, long = context_lengths
    print(f"cached step growth {short}→{long} context tokens: ×{cached_times[long] / cached_times[short]:.2f} "
          f"(context ×{long / short:.0f}; only the query-vs-cache attention grows)")  # fmt: skip


if __name__ == "__main__":
    main()
