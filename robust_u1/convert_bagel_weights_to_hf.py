"""Load the official BAGEL / Robust-U1 checkpoint layout and convert it to the Hugging Face layout.

Official layout (``ByteDance-Seed/BAGEL-7B-MoT``, ``Jiaqi-hkust/Robust-U1``): ``llm_config.json``,
``vit_config.json``, ``ae.safetensors`` (FLUX VAE, BFL key names), the model state dict in
``ema.safetensors`` (or ``model.safetensors`` / ``model_bf16.safetensors``) and the Qwen2 tokenizer.
The HF layout is what `save_pretrained` writes: ``config.json`` + ``model*.safetensors`` (VAE keys
in diffusers names under ``vae.``) + the processor files.

Usage:

```bash
robust-u1 convert /path/to/BAGEL-7B-MoT ./bagel-7b-hf --dtype bfloat16
python -m robust_u1.convert_bagel_weights_to_hf --input_dir ByteDance-Seed/BAGEL-7B-MoT --output_dir ./bagel-7b-hf
```
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .loading import (  # noqa: F401  (re-exported: the names this module has always offered)
    OFFICIAL_CODE_DEFAULTS,
    OFFICIAL_CONFIG_FILES,
    OFFICIAL_WEIGHT_FILES,
    TEXT_CONFIG_KEYS,
    VISION_CONFIG_KEYS,
    load_official_checkpoint,
    locate_checkpoint,
    official_config,
    official_processor,
    official_state_dict,
)


def convert_bagel_checkpoint(
    input_dir: str | os.PathLike, output_dir: str | os.PathLike, dtype: str | torch.dtype | None = None, max_shard_size: str = "5GB"
) -> Path:
    """Writes the Hugging Face layout (model, config and, when tokenizer files exist, the processor).

    Example:
        >>> convert_bagel_checkpoint("BAGEL-7B-MoT", "bagel-7b-hf", dtype="bfloat16")
    """
    from .modeling_robust_u1 import RobustU1ForConditionalGeneration

    location = locate_checkpoint(input_dir)
    if location.layout != "official":
        raise ValueError(
            f"{input_dir} is not an official BAGEL checkpoint: it needs {' and '.join(OFFICIAL_CONFIG_FILES)}, "
            f"ae.safetensors and one of {', '.join(OFFICIAL_WEIGHT_FILES)}."
        )
    folder = location.folder
    model = load_official_checkpoint(folder, RobustU1ForConditionalGeneration, dtype=dtype)
    output_dir = Path(output_dir)
    # Written to a sibling folder and renamed, so a failure never leaves a half-written checkpoint.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(staging, max_shard_size=max_shard_size)
        processor = official_processor(folder)
        if processor is not None:
            processor.save_pretrained(staging)
        if output_dir.exists():
            previous = output_dir.with_name(f"{staging.name}.old")
            os.replace(output_dir, previous)
            os.replace(staging, output_dir)
            shutil.rmtree(previous)
        else:
            os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input_dir", required=True, help="Official checkpoint folder or Hub id.")
    parser.add_argument("--output_dir", required=True, help="Where to write the Hugging Face layout.")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max_shard_size", default="5GB")
    args = parser.parse_args(argv)
    out = convert_bagel_checkpoint(args.input_dir, args.output_dir, args.dtype, args.max_shard_size)
    print(f"Wrote the Hugging Face layout to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
