"""Checks the paper's central claims on TinyWorld with the shipped checkpoints (or, with
``--from-scratch``, with checkpoints it first trains from random weights), on CPU.

For clean / low / mid / high corruption of the held-out test split it measures

- recovery PSNR / SSIM against the clean image of the corrupted input and of the recoveries of the
  base, +SFT (stage I) and +RL (stage II) checkpoints ("recovery improves stage by stage");
- MCQ accuracy of the base model on I_c alone, the final (stage III) model on I_c alone, the final
  model on I_c + I_r (its own recovery) and the clean oracle (final model on the clean image)
  ("reasoning over I_c + I_r beats I_c alone under corruption");

and writes ``results.json``, ``table.md`` and ``tinyworld.png`` to ``--output``, printing the table.

```bash
python examples/tinyworld/reproduce.py --output outputs/tinyworld                 # shipped checkpoints
python examples/tinyworld/reproduce.py --output outputs/tinyworld --from-scratch  # train first (≈ 35 min more)
```
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch

from robust_u1 import RobustU1ForConditionalGeneration
from robust_u1.tinyworld import LEVELS, TINYWORLD_STAGE_CHECKPOINTS, TinyWorld
from robust_u1.tinyworld.card import tinyworld_card
from robust_u1.tinyworld.evaluation import mcq_table, recovery_table
from robust_u1.tinyworld.training import TinyWorldRecipe, train_tinyworld

RECOVERY_COLUMNS = {"input": "corrupted input", "base": "base", "sft": "+SFT", "rl": "+RL"}
MCQ_COLUMNS = {
    "base_corrupted_only": "base, I_c",
    "final_corrupted_only": "final, I_c",
    "final_with_recovery": "final, I_c + I_r",
    "clean_oracle": "clean oracle",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="outputs/tinyworld", help="folder for results.json, table.md, tinyworld.png")
    parser.add_argument("--recovery-images", type=int, default=100, help="test scenes for PSNR / SSIM")
    parser.add_argument("--questions", type=int, default=400, help="test questions for MCQ accuracy (≤ 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test corruptions and recovery noise")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train every stage first (into OUTPUT/checkpoints) and evaluate those checkpoints")  # fmt: skip
    return parser.parse_args(argv)


def _cell(value: float, digits: int) -> str:
    return "∞" if math.isinf(value) else f"{value:.{digits}f}"


def markdown_table(recovery: dict, mcq: dict) -> str:
    """One row per level: PSNR / SSIM of every recovery column, then accuracy (%) of every MCQ column."""
    header = [
        "level",
        *(f"PSNR / SSIM {label}" for label in RECOVERY_COLUMNS.values()),
        *(f"acc. {label}" for label in MCQ_COLUMNS.values()),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for level in recovery:
        cells = [level]
        for key in RECOVERY_COLUMNS:
            scores = recovery[level][key]
            cells.append(f"{_cell(scores['psnr'], 2)} / {scores['ssim']:.3f}")
        cells += [f"{100 * mcq[level][key]:.1f}" for key in MCQ_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(recovery: dict, mcq: dict, path: Path) -> None:
    """PSNR and accuracy against the corruption level (the clean level's input PSNR is infinite: not drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    levels = list(recovery)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in RECOVERY_COLUMNS.items():
        points = [(i, recovery[level][key]["psnr"]) for i, level in enumerate(levels) if not math.isinf(recovery[level][key]["psnr"])]
        left.plot(*zip(*points), marker="o", label=label)
    left.set(title="recovery (test split)", ylabel="PSNR (dB)", xlabel="corruption")
    for key, label in MCQ_COLUMNS.items():
        style = {"linestyle": "--"} if key == "clean_oracle" else {"marker": "o"}
        right.plot(range(len(levels)), [100 * mcq[level][key] for level in levels], label=label, **style)
    right.set(title="MCQ accuracy (test split)", ylabel="accuracy (%)", xlabel="corruption")
    for axis in (left, right):
        axis.set_xticks(range(len(levels)), levels)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.from_scratch:
        checkpoints = train_tinyworld(TinyWorldRecipe(), output / "checkpoints", tinyworld_card)
    else:
        checkpoints = TINYWORLD_STAGE_CHECKPOINTS
    models = {stage: RobustU1ForConditionalGeneration.from_pretrained(path).eval() for stage, path in checkpoints.items()}
    world = TinyWorld(seed=0)
    recovery = recovery_table({k: models[k] for k in ("base", "sft", "rl")}, world, args.recovery_images, LEVELS, args.seed)
    mcq = mcq_table(models["base"], models["final"], world, args.questions, LEVELS, args.seed)
    minutes = (time.perf_counter() - start) / 60

    table = markdown_table(recovery, mcq)
    results = {"recovery": recovery, "mcq": mcq, "settings": vars(args), "minutes": minutes}
    (output / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (output / "table.md").write_text(table)
    plot(recovery, mcq, output / "tinyworld.png")
    print(table)
    print(f"{args.recovery_images} test images for recovery, {args.questions} test questions; "
          f"{minutes:.1f} min on {args.threads} thread(s). Written to {output}/")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
