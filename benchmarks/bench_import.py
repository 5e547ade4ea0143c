"""Start-up cost: ``import robust_u1`` and the ``robust-u1`` command line against torch + transformers.

Run: ``python benchmarks/bench_import.py [--repeats N]``. Every figure is the best of N fresh
interpreters (``python -c ...`` / ``python -m robust_u1 ...``), so caches of the running process do not
help. Printed in one run:

- ``import torch; from transformers import PreTrainedModel``: the floor any transformers model pays;
- ``import robust_u1`` (registers the Auto classes and the ``robust-vqa`` pipeline): target at most
  0.5 s above that floor;
- ``robust-u1 --help``, a bad option and a missing input file: target under 1.5 s each (the CLI parses
  and checks its arguments before importing torch);
- the Python interpreter alone, for scale.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def best_seconds(command: list[str], repeats: int, expect_code: int = 0) -> float:
    """The fastest wall-clock time of ``command`` over ``repeats`` fresh processes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
        if done.returncode != expect_code:
            raise RuntimeError(f"{command} exited {done.returncode} (expected {expect_code}): {done.stderr[-2000:]}")
    return min(times)


def main(repeats: int = 3) -> None:
    python = [sys.executable]
    cli = [sys.executable, "-m", "robust_u1"]
    with tempfile.TemporaryDirectory() as folder:
        missing = str(Path(folder) / "missing.png")
        rows = {
            "python -c pass": best_seconds([*python, "-c", "pass"], repeats),
            "import torch; from transformers import PreTrainedModel": best_seconds(
                [*python, "-c", "import torch; from transformers import PreTrainedModel"], repeats
            ),
            "import robust_u1": best_seconds([*python, "-c", "import robust_u1"], repeats),
            "robust-u1 --help": best_seconds([*cli, "--help"], repeats),
            "robust-u1 recover x.png y.png --steps ten (bad option)": best_seconds(
                [*cli, "recover", "x.png", "y.png", "--steps", "ten"], repeats, expect_code=2
            ),
            "robust-u1 recover missing.png out.png (missing file)": best_seconds(
                [*cli, "recover", missing, str(Path(folder) / "out.png")], repeats, expect_code=2
            ),
        }
    floor = rows["import torch; from transformers import PreTrainedModel"]
    width = max(map(len, rows))
    print(f"best of {repeats} fresh processes")
    print(f"{'command':<{width}} | {'seconds':>7} | vs torch+transformers")
    for name, seconds in rows.items():
        print(f"{name:<{width}} | {seconds:7.2f} | x{seconds / floor:.2f}")
    extra = rows["import robust_u1"] - floor
    slowest_cli = max(seconds for name, seconds in rows.items() if name.startswith("robust-u1"))
    print(f"import robust_u1 costs {extra:+.2f} s over torch + transformers (target <= 0.5 s): {'ok' if extra <= 0.5 else 'OVER'}")
    print(f"slowest CLI answer {slowest_cli:.2f} s (target < 1.5 s): {'ok' if slowest_cli < 1.5 else 'OVER'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    main(parser.parse_args().repeats)
