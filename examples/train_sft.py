"""Stage I of Robust-U1: supervised visual self-recovery by flow matching (`FlowMatchingTrainer`).

Given [VAE(I_c), ViT(I_c), P_rec] the generation expert learns to generate the clean image I_o
(BAGEL's image-editing objective). Trains the generation expert fully (the official ``freeze_und``)
or a LoRA adapter on it (``--lora-r``); the VAE stays frozen.

Data (``--dataset``): an official JSONL file ``{"prompt", "image", "target_image"}`` (or a folder
holding ``data.jsonl``), a folder of clean images, or a Hub dataset. Clean-only images are turned
into (corrupted, clean) pairs with ``--corruptions`` (ImageNet-C for stage I). Without
``--dataset``, a handful of synthetic pictures is used, so the defaults run offline in seconds.

Examples:

```bash
# offline smoke run on CPU: tiny random model, synthetic pairs, a few steps
python examples/train_sft.py --output outputs/sft-demo
# the real thing on 8 GPUs (see examples/accelerate/README.md for memory and the other configs)
accelerate launch --config_file examples/accelerate/fsdp2.yaml examples/train_sft.py \\
    --model ByteDance-Seed/BAGEL-7B-MoT --dtype bfloat16 --dataset data/recovery/data.jsonl --output outputs/stage1 \\
    --max-steps 5000 --batch-size 1 --grad-accum 4
```
"""

from __future__ import annotations

import argparse
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image, ImageDraw

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, corruptions="imagenet_c/common", max_steps=10)
    parser.add_argument("--lora-r", type=int, default=0, help="LoRA rank on the generation expert; 0 = full fine-tuning of it")
    parser.add_argument("--lr", type=float, default=2e-5, help="learning rate (BAGEL fine-tuning: 2e-5)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per device per packed batch")
    parser.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default: min(2000, max_steps // 10); BAGEL: 2000)")
    parser.add_argument("--timestep-shift", type=float, default=2.0, help="shift of the training timesteps (MathCanvas stage 1: 2.0)")
    parser.add_argument("--ema-decay", type=float, default=0.0, help="EMA of the trained weights, saved as ema.safetensors (BAGEL 0.9999, MathCanvas 0.999; 0 = off)")
    parser.add_argument("--max-tokens-per-batch", type=int, help="packing budget: a longer packed batch is an error")
    parser.add_argument("--eval-size", type=float, default=0.0, help="held-out fraction (or count, if ≥ 1) for the eval loss; 0 = none")
    return parser.parse_args(argv)


def add_common_arguments(parser: argparse.ArgumentParser, corruptions: str, max_steps: int) -> None:
    """Model, data, run and Hub arguments shared by the stage I and stage II examples."""
    parser.add_argument("--model", default=TINY_MODEL, help=f"checkpoint folder or Hub id ({TINY_MODEL!r}: offline tiny random model)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="dtype the weights are loaded in; bfloat16 halves the frozen weights (LoRA, and full fine-tuning "
                             "under FSDP2 / DeepSpeed, which keep fp32 copies of the trained ones; a lone GPU does not)")  # fmt: skip
    parser.add_argument("--dataset", help="official JSONL file (or folder with data.jsonl), image folder, or Hub dataset id; default: synthetic pictures")
    parser.add_argument("--split", default="train", help="split of a Hub dataset")
    parser.add_argument("--image-column", default="image", help="image column of a Hub dataset without (corrupted, clean) pairs")
    parser.add_argument("--corruptions", default=corruptions, help="corruptions that turn clean images into pairs (names, families or selectors)")
    parser.add_argument("--samples-per-image", type=int, default=1, help="corrupted copies per clean image")
    parser.add_argument("--synthetic-images", type=int, default=16, help="number of synthetic pictures when no --dataset is given")
    parser.add_argument("--vae-max-size", type=int, help="long side of the VAE images (default: the processor's, 1024 for BAGEL)")
    parser.add_argument("--vae-min-size", type=int, help="short side of the VAE images (default: the processor's, 512 for BAGEL)")
    parser.add_argument("--output", default=f"outputs/{parser.prog.removesuffix('.py')}", help="checkpoints, final model and model card")
    parser.add_argument("--max-steps", type=int, default=max_steps, help="optimizer steps (the default is a smoke run)")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--lora-alpha", type=int, help="LoRA alpha (default: 2·r)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute each decoder layer in the backward (not with the FSDP configs: they checkpoint themselves)")  # fmt: skip
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (accelerate configs set it already)")
    parser.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps")
    parser.add_argument("--logging-steps", type=int, default=1, help="log every N steps")
    parser.add_argument("--report-to", default="none", help="'none', 'wandb', 'tensorboard', …")
    parser.add_argument("--resume-from-checkpoint", help="checkpoint folder to resume from ('true' = the latest in --output)")
    parser.add_argument("--push-to-hub", action="store_true", help="push the final model (or adapter) and its card to the Hub")
    parser.add_argument("--hub-model-id", help="Hub repository of --push-to-hub (default: the output folder's name)")
    parser.add_argument("--seed", type=int, default=0)


def load_model(args: argparse.Namespace):
    """The model; its processor rides on ``model.processor``, where the trainers find it."""
    if args.model == TINY_MODEL:
        model, _ = tiny_random_model(seed=args.seed)
        return model.to(DTYPES[args.dtype])
    # No device_map: the Trainer (or accelerate's FSDP / DeepSpeed) places and shards the weights.
    return RobustU1ForConditionalGeneration.from_pretrained(args.model, dtype=DTYPES[args.dtype])


def load_pairs(args: argparse.Namespace) -> datasets.Dataset:
    """(corrupted ``image``, clean ``target_image``, ``prompt``) rows from whatever ``--dataset`` names."""
    if args.dataset is None:
        return build_recovery_dataset(synthetic_pictures(args.synthetic_images, args.seed), args.corruptions,
                                      samples_per_image=args.samples_per_image, seed=args.seed)  # fmt: skip
    path = Path(args.dataset)
    if path.is_file() or (path / JSONL_NAME).is_file():
        return load_jsonl(path)
    if path.is_dir():
        return build_recovery_dataset(path, args.corruptions, samples_per_image=args.samples_per_image, seed=args.seed)
    rows = datasets.load_dataset(args.dataset, split=args.split)
    if "target_image" in rows.column_names:
        return rows
    return build_recovery_dataset(rows, args.corruptions, samples_per_image=args.samples_per_image, seed=args.seed,
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


def lora_config(args: argparse.Namespace):
    return generation_lora_config(r=args.lora_r, lora_alpha=args.lora_alpha or 2 * args.lora_r) if args.lora_r else None


def run_arguments(args: argparse.Namespace) -> dict:
    """`TrainingArguments` fields both stages set the same way from the command line."""
    return {
        "output_dir": args.output,
        "max_steps": args.max_steps,
        "gradient_accumulation_steps": args.grad_accum,
        "activation_checkpointing": args.gradient_checkpointing,
        "bf16": args.bf16,
        "save_strategy": "steps",
        "save_steps": args.save_steps,
        "save_total_limit": 2,
        "logging_steps": args.logging_steps,
        "report_to": args.report_to,
        "push_to_hub": args.push_to_hub,
        "hub_model_id": args.hub_model_id,
        "dataloader_pin_memory": torch.cuda.is_available(),
        "seed": args.seed,
    }


def train_and_save(trainer, args: argparse.Namespace) -> None:
    """Trains (resuming if asked), saves the final model (an adapter under LoRA), processor and card; pushes if asked."""
    resume = {"true": True}.get(str(args.resume_from_checkpoint).lower(), args.resume_from_checkpoint)
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_fsdp_enabled:
        # Checkpoints stay sharded; the final model is gathered once on rank 0 so from_pretrained reads it.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(args.output)
    trainer.create_model_card(dataset_name=args.dataset)
    if args.push_to_hub:
        trainer.push_to_hub()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = load_model(args)
    train, held_out = split_eval(load_pairs(args), args.eval_size, args.seed)
    config = FlowMatchingConfig(
        **run_arguments(args),
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        lr_scheduler_type="cosine",
        warmup_steps=min(2000, args.max_steps // 10) if args.warmup_steps is None else args.warmup_steps,
        max_grad_norm=1.0,
        timestep_shift=args.timestep_shift,
        ema_decay=args.ema_decay,
        max_tokens_per_batch=args.max_tokens_per_batch,
        vae_max_size=args.vae_max_size,
        vae_min_size=args.vae_min_size,
        eval_strategy="steps" if held_out is not None else "no",
        eval_steps=max(1, args.max_steps // 4),
    )
    trainer = FlowMatchingTrainer(model, config, train_dataset=train, eval_dataset=held_out, peft_config=lora_config(args))
    train_and_save(trainer, args)


if __name__ == "__main__":
    main()
