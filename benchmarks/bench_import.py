"""Start-up cost: ``import robust_u1`` and the ``robust-u1`` command line against torch + transformers.

Run: ``python benchmarks/bench_import.py [--repeats N]``. Every figure is the best of N fresh
interpreters (``python -c ...`` / ``python -m robust_u1 ...``), so caches of the running process do not
help; the commands run round-robin, so a change of load hits them alike. Each reports its wall-clock
time and its CPU time (user + system), which a busy machine inflates much less. Printed in one run:

- ``import torch; from transformers import PreTrainedModel``: the floor any transformers model pays;
- ``import robust_u1`` (registers the Auto classes and the ``robust-vqa`` pipeline): target at most
  0.5 s above that floor;
- ``robust-u1 --help``, a bad option and a missing input file: target under 1.5 s each (the CLI parses
  and checks its arguments before importing torch);
- the Python interpreter alone, for scale.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(command: list[str], expect_code: int) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one fresh process running ``command``."""
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    after = os.times()
    if done.returncode != expect_code:
        raise RuntimeError(f"{command} exited {done.returncode} (expected {expect_code}): {done.stderr[-2000:]}")
    return wall, after.children_user - before.children_user + after.children_system - before.children_system


def main(repeats: int = 5) -> None:
    python, cli = [sys.executable], [sys.executable, "-m", "robust_u1"]
    with tempfile.TemporaryDirectory() as folder:
        missing, output = str(Path(folder) / "missing.png"), str(Path(folder) / "out.png")
        commands = {
            "python -c pass": ([*python, "-c", "pass"], 0),
            "import torch; from transformers import PreTrainedModel": (
                [*python, "-c", "import torch; from transformers import PreTrainedModel"], 0
            ),
            "import robust_u1": ([*python, "-c", "import robust_u1"], 0),
            "robust-u1 --help": ([*cli, "--help"], 0),
            "robust-u1 recover x.png y.png --steps ten (bad option)": ([*cli, "recover", "x.png", "y.png", "--steps", "ten"], 2),
            "robust-u1 recover missing.png out.png (missing file)": ([*cli, "recover", missing, output], 2),
        }
        # Round-robin, so that a change of load on a shared machine hits every command alike.
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(repeats):
            for name, (command, code) in commands.items():
                runs[name].append(run_once(command, code))
    rows = {name: (min(w for w, _ in times), min(c for _, c in times)) for name, times in runs.items()}
    floor_wall, floor_cpu = rows["import torch; from transformers import PreTrainedModel"]
    width = max(map(len, rows))
    print(f"best of {repeats} fresh processes; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':<{width}} | {'wall s':>6} | {'ratio':>5} | {'CPU s':>6} | {'ratio':>5}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:<{width}} | {wall:6.2f} | {wall / floor_wall:5.2f} | {cpu:6.2f} | {cpu / floor_cpu:5.2f}")
    wall, cpu = rows["import robust_u1"]
    verdict = lambda extra: "ok" if extra <= 0.5 else "OVER"  # noqa: E731
    print(
        f"import robust_u1 over torch + transformers (target <= +0.5 s): {wall - floor_wall:+.2f} s wall "
        f"({verdict(wall - floor_wall)}), {cpu - floor_cpu:+.2f} s CPU ({verdict(cpu - floor_cpu)})"
    )
    slowest_cli = max(wall for name, (wall, _) in rows.items() if name.startswith("robust-u1"))
    print(f"slowest CLI answer {slowest_cli:.2f} s wall (target < 1.5 s): {'ok' if slowest_cli < 1.5 else 'OVER'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    main(parser.parse_args().repeats)
