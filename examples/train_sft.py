"""Stage I of Robust-U1: supervised visual self-recovery by flow matching (`FlowMatchingTrainer`).

Given [VAE(I_c), ViT(I_c), P_rec] the generation expert learns to generate the clean image I_o
(BAGEL's image-editing objective). Trains the generation expert fully (the official ``freeze_und``)
or a LoRA adapter on it (``--lora-r``); the VAE stays frozen.

Data (``--dataset``): an official JSONL file ``{"prompt", "image", "target_image"}`` (or a folder
holding ``data.jsonl``), a folder of clean images, or a Hub dataset. Clean-only images are turned
into (corrupted, clean) pairs with ``--corruptions`` (ImageNet-C for stage I). Without
``--dataset``, a handful of synthetic pictures is used, so the defaults run offline in seconds.

Arguments: the fields of `FlowMatchingConfig` (transformers' `TrainingArguments` plus the stage I
settings: ``--output_dir``, ``--max_steps``, ``--learning_rate``, ``--per_device_train_batch_size``,
``--timestep_shift``, ``--ema_decay``, …; dashes work too) and of `ModelAndDataArguments` below, parsed
by transformers' `HfArgumentParser`, so names, defaults and help come from the dataclasses.
``python examples/train_sft.py --help`` lists them. The script only changes defaults that make a bare
run an offline smoke run (``SCRIPT_DEFAULTS``).

Examples:

```bash
# offline smoke run on CPU: tiny random model, synthetic pairs, a few steps
python examples/train_sft.py --output_dir outputs/sft-demo
# the real thing on 8 GPUs (see examples/accelerate/README.md for memory and the other configs)
accelerate launch --config_file examples/accelerate/fsdp2.yaml examples/train_sft.py \\
    --model ByteDance-Seed/BAGEL-7B-MoT --dtype bfloat16 --dataset data/recovery/data.jsonl --output_dir outputs/stage1 \\
    --max_steps 5000 --per_device_train_batch_size 1 --gradient_accumulation_steps 4 --warmup_steps 2000
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import HfArgumentParser

from robust_u1 import (
    FlowMatchingConfig,
    FlowMatchingTrainer,
    RobustU1ForConditionalGeneration,
    generation_lora_config,
)
from robust_u1.data import build_recovery_dataset, load_jsonl
from robust_u1.data.recovery import JSONL_NAME
from robust_u1.tiny import tiny_random_model

TINY_MODEL = "tiny-random"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class ModelAndDataArguments:
    """What the example scripts load: the model, the data and the LoRA adapter (not trainer settings)."""

    model: str = field(default=TINY_MODEL, metadata={"help": f"Checkpoint folder or Hub id ({TINY_MODEL!r}: offline tiny random model)."})
    dtype: Literal["float32", "bfloat16"] = field(
        default="float32",
        metadata={"help": "dtype the weights are loaded in; bfloat16 halves the frozen weights (LoRA, and full fine-tuning "
                          "under FSDP2 / DeepSpeed, which keep fp32 copies of the trained ones; a lone GPU does not)."},
    )  # fmt: skip
    dataset: str | None = field(
        default=None, metadata={"help": "Official JSONL file (or folder with data.jsonl), image folder, or Hub dataset id; default: synthetic pictures."}
    )
    split: str = field(default="train", metadata={"help": "Split of a Hub dataset."})
    image_column: str = field(default="image", metadata={"help": "Image column of a Hub dataset without (corrupted, clean) pairs."})
    corruptions: str = field(
        default="imagenet_c/common", metadata={"help": "Corruptions that turn clean images into pairs (stage I: ImageNet-C; stage II: robust_r1)."}
    )
    samples_per_image: int = field(default=1, metadata={"help": "Corrupted copies per clean image."})
    synthetic_images: int = field(default=16, metadata={"help": "Number of synthetic pictures when no --dataset is given."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the generation expert; 0 = full fine-tuning of it."})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (default: 2·r)."})
    eval_size: float = field(default=0.0, metadata={"help": "Held-out fraction (or count, if ≥ 1) for the eval loss; 0 = none."})


# The script's own defaults (a bare run is an offline smoke run); everything else is the config classes'.
SCRIPT_DEFAULTS = dict(
    output_dir="outputs/train_sft", max_steps=10, per_device_train_batch_size=4, save_steps=500, save_total_limit=2,
    logging_steps=1, report_to="none", lr_scheduler_type="cosine", max_grad_norm=1.0, warmup_steps=0.1,
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> tuple[ModelAndDataArguments, FlowMatchingConfig]:
    parser = HfArgumentParser((ModelAndDataArguments, FlowMatchingConfig), description=__doc__.split("\n\n")[0])
    parser.set_defaults(**SCRIPT_DEFAULTS)
    data, config = parser.parse_args_into_dataclasses(argv)
    config.dataloader_pin_memory = torch.cuda.is_available()
    return data, config


def load_model(args: ModelAndDataArguments, seed: int = 0):
    """The model; its processor rides on ``model.processor``, where the trainers find it."""
    if args.model == TINY_MODEL:
        model, _ = tiny_random_model(seed=seed)
        return model.to(DTYPES[args.dtype])
    # No device_map: the Trainer (or accelerate's FSDP / DeepSpeed) places and shards the weights.
    return RobustU1ForConditionalGeneration.from_pretrained(args.model, dtype=DTYPES[args.dtype])


def load_pairs(args: ModelAndDataArguments, seed: int = 0) -> datasets.Dataset:
    """(corrupted ``image``, clean ``target_image``, ``prompt``) rows from whatever ``--dataset`` names."""
    if args.dataset is None:
        return build_recovery_dataset(synthetic_pictures(args.synthetic_images, seed), args.corruptions,
                                      samples_per_image=args.samples_per_image, seed=seed)  # fmt: skip
    path = Path(args.dataset)
    if path.is_file() or (path / JSONL_NAME).is_file():
        return load_jsonl(path)
    if path.is_dir():
        return build_recovery_dataset(path, args.corruptions, samples_per_image=args.samples_per_image, seed=seed)
    rows = datasets.load_dataset(args.dataset, split=args.split)
    if "target_image" in rows.column_names:
        return rows
    return build_recovery_dataset(rows, args.corruptions, samples_per_image=args.samples_per_image, seed=seed,
                                  image_column=args.image_column)  # fmt: skip


def synthetic_pictures(count: int, seed: int) -> datasets.Dataset:
    """Flat backgrounds with a coloured rectangle and ellipse, at a few sizes (packing sees mixed lengths)."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        size = (32, 48, 64)[index % 3]
        background, box, disc = (tuple(int(v) for v in rgb) for rgb in rng.integers(0, 256, (3, 3)))
        image = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(image)
        x, y = (int(v) for v in rng.integers(0, size // 2, 2))
        draw.rectangle((x, y, x + size // 3, y + size // 4), fill=box)
        draw.ellipse((size - x - size // 4, y, size - x, y + size // 3), fill=disc)
        images.append(image)
    return datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))


def split_eval(rows: datasets.Dataset, eval_size: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    if not eval_size:
        return rows, None
    split = rows.train_test_split(test_size=int(eval_size) if eval_size >= 1 else eval_size, seed=seed)
    return split["train"], split["test"]


def lora_config(args: ModelAndDataArguments):
    return generation_lora_config(r=args.lora_r, lora_alpha=args.lora_alpha or 2 * args.lora_r) if args.lora_r else None


def train_and_save(trainer, data: ModelAndDataArguments) -> None:
    """Trains (resuming if asked), saves the final model (an adapter under LoRA), processor and card; pushes if asked."""
    args = trainer.args
    resume = {"true": True}.get(str(args.resume_from_checkpoint).lower(), args.resume_from_checkpoint)
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_fsdp_enabled:
        # Checkpoints stay sharded; the final model is gathered once on rank 0 so from_pretrained reads it.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(args.output_dir)
    trainer.create_model_card(dataset_name=data.dataset)
    if args.push_to_hub:
        trainer.push_to_hub()


def main(argv: list[str] | None = None) -> None:
    data, config = parse_args(argv)
    model = load_model(data, config.seed)
    train, held_out = split_eval(load_pairs(data, config.seed), data.eval_size, config.seed)
    if held_out is not None:
        config = dataclasses.replace(config, eval_strategy="steps", eval_steps=max(1, config.max_steps // 4))
    trainer = FlowMatchingTrainer(model, config, train_dataset=train, eval_dataset=held_out, peft_config=lora_config(data))
    train_and_save(trainer, data)


if __name__ == "__main__":
    main()
