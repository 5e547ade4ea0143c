"""Stage I training-step throughput: packed batches (no padding) vs padded batches of mixed image sizes.

Run: ``python benchmarks/bench_sft.py``. Times the trainer's loss (VAE encode, packed forward) and its
backward (no optimizer step) on the tiny model for batches holding two pairs of each size
32², 64², 96², 128², and prints tokens/s and their ratio, all from one run.

- **packed**: what `RecoveryCollator` does: samples back to back, each as long as its own images.
- **padded**: what a naive collator does, padding every sample to the longest of the batch. Emulated by
  zero-padding (black, bottom/right) both images of every pair to the batch's largest size before the
  same collator, so each sample gets the longest sample's token count and all of it is computed (the
  projections, the MLPs and each sample's attention cost what a [B, L_max] padded batch costs).

Tokens/s counts only the real tokens (the packed batch's length) in both cases. The two batches are timed
in turns (median of 9 after 2 warm-ups each), so that other load on the machine affects both alike.
"""

import functools
import statistics
import time
from typing import Callable

import numpy as np
import torch
from datasets import Dataset
from PIL import Image, ImageDraw

from robust_u1 import FlowMatchingConfig, FlowMatchingTrainer
from robust_u1.tiny import tiny_random_model

SIZES = (32, 64, 96, 128)
PAIRS_PER_SIZE = 2


def alternating_medians(fns: dict[str, Callable[[], object]], repeats: int = 9, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each function, run in turns, so that load from other processes hits all alike."""
    times = {name: [] for name in fns}
    for round_index in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def pair(size: int, seed: int) -> dict:
    """A picture (flat background, one rectangle) and its Gaussian-noise corruption."""
    rng = np.random.default_rng(seed)
    clean = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    x, y = (int(v) for v in rng.integers(0, size // 2, 2))
    ImageDraw.Draw(clean).rectangle((x, y, x + size // 3, y + size // 3), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noisy = np.clip(np.asarray(clean) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    return {"image": Image.fromarray(noisy), "target_image": clean}


def zero_padded(image: Image.Image, side: int) -> Image.Image:
    canvas = Image.new("RGB", (side, side))
    canvas.paste(image, (0, 0))
    return canvas


def main():
    # One thread: on a shared CPU, spinning OpenMP threads would dominate (and scatter) the timings.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _ = tiny_random_model(seed=0)
    args = FlowMatchingConfig("/tmp/bench_sft", report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    rows = [pair(size, seed) for seed, size in enumerate(size for size in SIZES for _ in range(PAIRS_PER_SIZE))]
    trainer = FlowMatchingTrainer(model, args, train_dataset=Dataset.from_list(rows))
    trainer.model.train()

    largest = max(SIZES)
    padded_rows = [{key: zero_padded(image, largest) for key, image in row.items()} for row in rows]
    batches = {"packed": trainer.data_collator(rows), "padded": trainer.data_collator(padded_rows)}
    real_tokens = batches["packed"]["sequence_length"]

    def full_step(name):
        trainer.compute_loss(trainer.model, trainer._prepare_inputs(batches[name])).backward()

    # The frozen VAE encode scales with pixels, the transformer with tokens: time the latter alone too.
    encoded = {name: trainer._complete_flow_inputs(trainer.model, batch) for name, batch in batches.items()}

    def transformer_step(name):
        trainer.model(**encoded[name], timestep_shift=args.timestep_shift).loss.backward()

    print(f"stage I training step (forward + backward), tiny model, {len(rows)} pairs of sizes "
          f"{'², '.join(map(str, SIZES))}² ({PAIRS_PER_SIZE} each); {real_tokens} real tokens, "
          f"{batches['padded']['sequence_length']} computed when padded")  # fmt: skip
    print(f"{'timed part':>34} | {'packed (ms)':>11} | {'padded (ms)':>11} | {'packed tok/s':>12} | {'padded tok/s':>12} | {'ratio':>5}")
    for label, step in (("VAE encode + transformer + backward", full_step), ("transformer + backward", transformer_step)):
        seconds = alternating_medians({name: functools.partial(step, name) for name in batches})
        packed, padded = (real_tokens / seconds[name] for name in ("packed", "padded"))
        print(f"{label:>34} | {seconds['packed'] * 1e3:>11.1f} | {seconds['padded'] * 1e3:>11.1f} | {packed:>12.0f} | "
              f"{padded:>12.0f} | ×{packed / padded:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
