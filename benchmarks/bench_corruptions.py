"""Throughput of every corruption, against ``imagecorruptions-imaug`` called directly.

For each corruption at the "mid" level (ImageNet-C severity 3, Robust-R1 intensity 0.45) this
prints images/s at 256² and 1024² through ``robust_u1.corruptions.corrupt``, the same for the
package's own ``imagecorruptions.corrupt`` (ImageNet-C only), their ratio at 1024², the time of
the first call in this process (numba compile / cache load for glass_blur), and, for the five
corruptions we re-implemented for speed, the PSNR of our output to the package's at the same seed.

Usage:
    python benchmarks/bench_corruptions.py [--sizes 256 1024] [--repeats 3] [--names fog ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import cv2
import imagecorruptions
import numpy as np
from skimage import data

from robust_u1.corruptions import (
    IMAGENET_C,
    corrupt,
    get_corruption,
    imagenet_c,
    list_corruptions,
)

EQUIVALENCE_SEED = 1234


def natural_image(side: int) -> np.ndarray:
    return cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)


def psnr(first: np.ndarray, second: np.ndarray) -> float:
    mse = np.mean((first.astype(np.float64) - second.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def our_call(name: str, level: dict, image: np.ndarray) -> Callable[[int], object]:
    return lambda seed: corrupt(image, name, **level, seed=seed)


def package_call(name: str, image: np.ndarray) -> Callable[[int], object]:
    # The package's own entry point, exactly as a user would call it (global, unseeded RNG).
    return lambda seed: imagecorruptions.corrupt(image, severity=3, corruption_name=name)


def seconds_per_call(call: Callable[[int], object], repeats: int) -> float:
    """Median wall time of ``call(seed)`` over ``repeats`` calls."""
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        call(seed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_first_call(call: Callable[[int], object]) -> float:
    start = time.perf_counter()
    call(0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--names", nargs="+", default=None, help="default: every corruption")
    args = parser.parse_args()

    names = args.names or [n for family in list_corruptions().values() for n in family]
    images = {side: natural_image(side) for side in args.sizes}
    largest = max(args.sizes)
    size_columns = "".join(f"{f'ours {s}²':>11}" for s in args.sizes) + "".join(
        f"{f'pkg {s}²':>10}" for s in args.sizes
    )
    print(f"images/s at the mid level; {args.repeats} repeats (median); first call at {largest}²")
    print(
        f"{'corruption':34}{size_columns}{f'ratio@{largest}':>11}{'1st call s':>11}"
        f"{f's/img@{largest}':>11}{'pkg s/img':>10}{'PSNR vs pkg':>12}"
    )
    for name in names:
        corruption = get_corruption(name)
        is_imagenet_c = corruption.family == IMAGENET_C
        level = {"severity": 3} if is_imagenet_c else {"intensity": 0.45}

        first_call = timed_first_call(our_call(corruption.qualified_name, level, images[largest]))
        ours_seconds = {
            side: seconds_per_call(
                our_call(corruption.qualified_name, level, images[side]), args.repeats
            )
            for side in args.sizes
        }
        package_seconds = (
            {
                side: seconds_per_call(package_call(corruption.name, images[side]), args.repeats)
                for side in args.sizes
            }
            if is_imagenet_c
            else {}
        )
        row = f"{corruption.qualified_name:34}"
        row += "".join(f"{1 / ours_seconds[s]:11.1f}" for s in args.sizes)
        row += "".join(
            f"{1 / package_seconds[s]:10.1f}" if package_seconds else f"{'-':>10}"
            for s in args.sizes
        )
        ratio = package_seconds[largest] / ours_seconds[largest] if package_seconds else None
        row += f"{ratio:10.2f}x" if ratio else f"{'-':>11}"
        row += f"{first_call:11.3f}{ours_seconds[largest]:11.3f}"
        row += f"{package_seconds[largest]:10.3f}" if package_seconds else f"{'-':>10}"
        if corruption.name in imagenet_c.FAST_EQUIVALENTS and is_imagenet_c:
            fast = imagenet_c.FAST_EQUIVALENTS[corruption.name]
            reference = imagenet_c.run_package_corruption(
                corruption.name, images[largest], 3, EQUIVALENCE_SEED
            )
            row += f"{psnr(fast(images[largest], 3, EQUIVALENCE_SEED), reference):10.1f}dB"
        print(row, flush=True)


if __name__ == "__main__":
    main()
