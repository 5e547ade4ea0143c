"""recover() time on the tiny model: CFG batching, prefill reuse, TaylorSeer and regional compilation.

Run: ``python benchmarks/bench_recover.py`` (``--quick`` for fewer repeats). All ratios of one table
come from one run on the same inputs and the same machine.

1. CFG branches batched vs one after another, and context prefilled once vs per step (10 schedule
   points). The library's loop (`model.denoise`: batched CFG, contexts prefilled once) is the
   reference; the two alternatives are written out here step by step with the same schedule,
   guidance and Euler rule.
2. TaylorSeer (official defaults) vs the exact sampler at 128² and 256², 50 schedule points with
   guidance: the denoising loop alone (contexts prefilled beforehand) and the whole ``recover()`` call.
3. ``compile_repeated_blocks()`` vs eager layers for the same loop (compile time excluded, measured
   after a warm-up call; reported separately).
"""

import argparse
import statistics
import time

import torch
from PIL import Image

from _timing import median_seconds
from robust_u1 import RecoveryConfig
from robust_u1.processing_robust_u1 import RobustU1ImageProcessor, RobustU1Processor
from robust_u1.sampling import EulerStep, flow_timesteps, guided_velocity
from robust_u1.taylorseer import TaylorSeerConfig
from robust_u1.tiny import tiny_random_model

CONFIG = RecoveryConfig(num_inference_steps=10)
PROMPT = "Please restore this corrupted image to its clean version."


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


def denoising_loop(model, contexts, num_steps: int, taylorseer: bool):
    """The loop of `recover` alone (`model.denoise` over prefilled contexts), TaylorSeer on or off."""
    x = model.prepare_latents(contexts.grids, generator=torch.Generator().manual_seed(0))
    config = RecoveryConfig(num_inference_steps=num_steps)
    return model.denoise(contexts, x, config, taylorseer=TaylorSeerConfig() if taylorseer else None).latents


def batching_and_prefill(model, repeats: int, size=(128, 128)):
    inputs = model.prepare_edit_inputs([Image.new("RGB", size, (120, 80, 40))], prompt=PROMPT)
    reference = library_loop(model, inputs)
    for per_step_prefill in (False, True):
        other = written_out_loop(model, inputs, per_step_prefill)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(reference, other))
    runs = {
        "batched CFG, prefill once": median_seconds(lambda: library_loop(model, inputs), repeats),
        "sequential CFG, prefill once": median_seconds(lambda: written_out_loop(model, inputs, False), repeats),
        "batched CFG, prefill every step": median_seconds(lambda: written_out_loop(model, inputs, True), repeats),
    }
    base = runs["batched CFG, prefill once"]
    print(f"\nrecover() on a {size[0]}×{size[1]} image, {CONFIG.num_inference_steps} schedule points, tiny model")
    for name, seconds in runs.items():
        print(f"{name:>34}: {seconds * 1e3:8.1f} ms  (×{seconds / base:.2f} of batched + prefill once)")


def interleaved_medians(runs: dict, repeats: int, warmup: int = 1) -> dict:
    """Median (wall, CPU) seconds of each function, run in turns (A, B, A, B, …) so that load changes
    on a shared machine hit every variant alike. The CPU time of this process is the steadier figure
    when other jobs share the cores (one intra-op thread: CPU time ≈ the work done)."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    times = {name: ([], []) for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            times[name][0].append(time.perf_counter() - start)
            times[name][1].append(time.process_time() - cpu_start)
    return {name: (statistics.median(wall), statistics.median(cpu)) for name, (wall, cpu) in times.items()}


def _row(label, name, pair):
    (base, base_cpu), (other, other_cpu) = pair
    print(f"{label:>6} | {name:<36} | {base * 1e3:7.1f} ({base_cpu * 1e3:7.1f}) ms | {other * 1e3:7.1f} ({other_cpu * 1e3:7.1f}) ms"
          f" | ×{base / other:5.2f} (×{base_cpu / other_cpu:5.2f})")  # fmt: skip


def taylorseer_and_compile(model, processor, repeats: int, sizes, num_steps: int = 50):
    print(f"\nTaylorSeer and compilation, tiny model, {num_steps} schedule points, guidance on (3 branches per step)")
    print("wall time (CPU time of this process) per run, medians")
    print(f"{'size':>6} | {'measurement':<36} | {'exact / eager':>21} | {'TaylorSeer / compiled':>21} | speed-up wall (CPU)")
    prepared = {}
    for size in sizes:
        image = Image.new("RGB", size, (120, 80, 40))
        inputs = model.prepare_edit_inputs([image], prompt=PROMPT, processor=processor)
        with torch.no_grad():
            contexts = model.build_edit_contexts(inputs, sample_posterior=False)
            loop = interleaved_medians({ts: lambda ts=ts: denoising_loop(model, contexts, num_steps, ts) for ts in (False, True)}, repeats)
        call_kwargs = dict(prompt=PROMPT, processor=processor, num_inference_steps=num_steps, progress=False, sample_posterior=False)
        call = interleaved_medians({ts: lambda ts=ts: model.recover(image, enable_taylorseer=ts, **call_kwargs) for ts in (False, True)}, repeats)
        label = prepared[size] = f"{size[0]}²" if size[0] == size[1] else f"{size[0]}×{size[1]}"
        _row(label, "denoising loop (TaylorSeer)", (loop[False], loop[True]))
        _row(label, "whole recover() call (TaylorSeer)", (call[False], call[True]))
        prepared[size] = (label, contexts)

    if not _inductor_available():
        print("compiled vs eager: skipped (inductor needs a C++ compiler on CPU; install g++)")
        return
    decoder = model.language_model.model
    model.compile_repeated_blocks()
    compiled_layers = decoder.compiled_layers
    for size, (label, contexts) in prepared.items():
        start = time.perf_counter()
        with torch.no_grad():
            denoising_loop(model, contexts, 3, False)  # compiles (once per new token count)
        compile_seconds = time.perf_counter() - start

        def loop(layers):
            decoder.compiled_layers = layers
            with torch.no_grad():
                denoising_loop(model, contexts, num_steps, False)

        pair = interleaved_medians({"eager": lambda: loop(None), "compiled": lambda: loop(compiled_layers)}, repeats)
        _row(label, f"loop, compiled (+{compile_seconds:.0f} s once)", (pair["eager"], pair["compiled"]))
    decoder.compiled_layers = None


def _inductor_available() -> bool:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
        return True
    except Exception:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier figures)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 5
    model, tiny_processor = tiny_random_model(seed=0)
    # The tiny processor caps VAE inputs at 128 px; allow 256 px for the 256² measurement.
    processor = RobustU1Processor(
        image_processor=RobustU1ImageProcessor(vae_max_size=256, vae_min_size=32, vit_max_size=112, vit_min_size=28),
        tokenizer=tiny_processor.tokenizer,
    )
    with torch.no_grad():
        batching_and_prefill(model, repeats)
    taylorseer_and_compile(model, processor, repeats, sizes=[(128, 128), (256, 256)])


if __name__ == "__main__":
    main()
