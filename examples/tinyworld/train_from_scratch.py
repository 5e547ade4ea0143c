"""Re-creates the TinyWorld checkpoints from random weights: VAE, understanding and generation
pre-training, then Robust-U1's stage I (flow matching), stage II (Flow-GRPO, SSIM reward) and stage III
(reasoning over [I_c, I_r, Q]), all with the library's own trainers. Prints the wall time of every step.

```bash
python examples/tinyworld/train_from_scratch.py                      # → runs/tinyworld/{base,sft,rl,final}
python examples/tinyworld/train_from_scratch.py --install            # also replace the shipped checkpoints
```

The shipped checkpoints (`robust_u1/tinyworld/checkpoint` = final, `robust_u1/tinyworld/stages/{base,sft,rl}`)
were produced by this script with its defaults.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import torch

from robust_u1.tinyworld import TINYWORLD_STAGE_CHECKPOINTS
from robust_u1.tinyworld.card import tinyworld_card
from robust_u1.tinyworld.training import TinyWorldRecipe, train_tinyworld

SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json", "README.md")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/tinyworld", help="where the stage checkpoints and work files go")
    parser.add_argument("--install", action="store_true", help="copy the new checkpoints into the package")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the shipped run: 2 cores)")
    return parser.parse_args(argv)


def install(paths: dict[str, Path]) -> None:
    """Copies the files a checkpoint needs (not the training work files) into the package folders."""
    for stage, source in paths.items():
        target = TINYWORLD_STAGE_CHECKPOINTS[stage]
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in SHIPPED_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, target / name)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    paths = train_tinyworld(TinyWorldRecipe(seed=args.seed), args.output, tinyworld_card)
    minutes = (time.perf_counter() - start) / 60
    print(f"TinyWorld trained from scratch in {minutes:.1f} min on {args.threads} thread(s): "
          + ", ".join(f"{stage} → {path}" for stage, path in paths.items()))  # fmt: skip
    if args.install:
        install(paths)
        print("Installed into", ", ".join(str(TINYWORLD_STAGE_CHECKPOINTS[stage]) for stage in paths))
    return paths


if __name__ == "__main__":
    main()
