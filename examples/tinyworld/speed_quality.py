"""Quality against speed of `recover()` on TinyWorld: schedule points and TaylorSeer on / off.

For every setting (schedule points 10 / 25 / 50, TaylorSeer off / on) and every corruption level it
recovers the same corrupted test images with the shipped final checkpoint and measures

- recovery PSNR / SSIM against the clean image,
- MCQ accuracy of the same model over [I_c, I_r, Q] (I_r = that setting's recovery),
- wall time (and CPU time of this process, steadier on a shared machine) of recovery per image
  (batches of 64 images, ``--threads`` threads),

and writes ``speed_quality.json``, ``speed_quality.md`` and ``speed_quality.png`` to ``--output``.

```bash
python examples/tinyworld/speed_quality.py --output outputs/tinyworld   # ≈ 10 min on 1 thread
```
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from robust_u1.evaluation.recovery import recovery_metrics
from robust_u1.tinyworld import LEVELS, TinyWorld, corrupt_scene_image, load_tinyworld
from robust_u1.tinyworld.evaluation import accuracy, answer_rows, recover_rows

STEPS = (10, 25, 50)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="outputs/tinyworld", help="folder for speed_quality.{json,md,png}")
    parser.add_argument("--images", type=int, default=128, help="test scenes (one question each)")
    parser.add_argument("--levels", nargs="+", default=["mid", "high"], help="corruption levels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions and recovery noise")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    return parser.parse_args(argv)


def measure(model, rows: list[dict], levels: list[str], seed: int) -> list[dict]:
    recover_rows(model, [row["clean_image"] for row in rows[:2]], seed=seed, num_inference_steps=3)  # warm-up
    results = []
    for level in levels:
        for i, row in enumerate(rows):
            row["image"] = corrupt_scene_image(row["clean_image"], level, key=(seed, i))[0]
        corrupted = [row["image"] for row in rows]
        clean = [row["clean_image"] for row in rows]
        for steps in STEPS:
            for taylorseer in (False, True):
                start, cpu_start = time.perf_counter(), time.process_time()
                recovered = recover_rows(model, corrupted, seed=seed, num_inference_steps=steps, enable_taylorseer=taylorseer)
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
                scores = recovery_metrics(recovered, clean, metrics=("psnr", "ssim"))
                letters = answer_rows(model, rows, recovered)
                results.append({
                    "level": level, "steps": steps, "taylorseer": taylorseer, "psnr": scores["psnr"], "ssim": scores["ssim"],
                    "accuracy": accuracy(letters, rows), "ms_per_image": 1e3 * seconds / len(rows),
                    "cpu_ms_per_image": 1e3 * cpu_seconds / len(rows),
                })  # fmt: skip
                print(f"{level:>5} {steps:>3} points TaylorSeer {'on ' if taylorseer else 'off'}: "
                      f"{scores['psnr']:.2f} dB, SSIM {scores['ssim']:.3f}, acc. {100 * results[-1]['accuracy']:.1f} %, "
                      f"{results[-1]['ms_per_image']:.1f} ms/image ({results[-1]['cpu_ms_per_image']:.1f} CPU)", flush=True)  # fmt: skip
    return results


def markdown_table(results: list[dict]) -> str:
    header = ["level", "schedule points", "TaylorSeer", "PSNR (dB)", "SSIM", "accuracy I_c + I_r (%)",
              "recovery ms / image (wall)", "(CPU)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r["level"], str(r["steps"]), "on" if r["taylorseer"] else "off", f"{r['psnr']:.2f}", f"{r['ssim']:.3f}",
                 f"{100 * r['accuracy']:.1f}", f"{r['ms_per_image']:.1f}", f"{r['cpu_ms_per_image']:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    """PSNR and accuracy against the recovery CPU time per image (steadier than wall time on a shared
    machine); one line per level and TaylorSeer setting, points labelled with the schedule points."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for level in dict.fromkeys(r["level"] for r in results):
        for taylorseer, style in ((False, "-o"), (True, "--s")):
            points = [r for r in results if r["level"] == level and r["taylorseer"] == taylorseer]
            label = f"{level}, TaylorSeer {'on' if taylorseer else 'off'}"
            times = [r["cpu_ms_per_image"] for r in points]
            left.plot(times, [r["psnr"] for r in points], style, label=label)
            right.plot(times, [100 * r["accuracy"] for r in points], style, label=label)
            for r in points:
                left.annotate(str(r["steps"]), (r["cpu_ms_per_image"], r["psnr"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    xlabel = "recovery CPU ms / image"
    left.set(title="recovery PSNR (labels: schedule points)", xlabel=xlabel, ylabel="PSNR (dB)")
    right.set(title="MCQ accuracy over I_c + I_r", xlabel=xlabel, ylabel="accuracy (%)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)  # never a truncated file


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    problem = None
    if args.images < 1:
        problem = f"--images must be at least 1, got {args.images}."
    elif unknown := sorted(set(args.levels) - set(LEVELS)):
        problem = f"--levels {unknown} unknown: choose among {list(LEVELS)}."
    if problem:  # one line, exit code 2, before loading anything
        print(f"speed_quality.py: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(args.threads)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, _ = load_tinyworld("final")
    pairs = TinyWorld(seed=0).test_questions("test", count=args.images)
    rows = [{"clean_image": s.render(), "question": q.text, "options": list(q.options), "answer": q.answer} for s, q in pairs]
    results = measure(model, rows, args.levels, args.seed)
    minutes = (time.perf_counter() - start) / 60
    table = markdown_table(results)
    _write_text(output / "speed_quality.json", json.dumps({"results": results, "settings": vars(args), "minutes": minutes}, indent=2) + "\n")
    _write_text(output / "speed_quality.md", table)
    plot(results, output / "speed_quality.png")
    print(table)
    print(f"{args.images} test images per level; {minutes:.1f} min on {args.threads} thread(s). Written to {output}/")
    return results


if __name__ == "__main__":
    main()
