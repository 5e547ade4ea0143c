"""Stage III of Robust-U1 with the standard `transformers.Trainer`: answer over [I_c, I_r, Q].

1. load question-answering rows (a Robust-R1 JSONL, a json/jsonl/parquet table, or a Hub dataset);
2. precompute the recovered image I_r of every row with the model's own generator
   (`build_reasoning_dataset`: cached on disk, a rerun or an interrupted run resumes);
3. fine-tune with next-token CE on the ``<think>…</think><ANSWER>…</ANSWER>`` target only,
   fully or with LoRA on the understanding expert (``--lora-r``), and report the held-out
   answer-token loss before and after.

Examples:

```bash
# offline smoke run: tiny random model, a Robust-R1 JSONL with images next to it
python examples/train_reasoning.py --dataset data/train.jsonl --output runs/tiny --max-steps 20
# the real thing
python examples/train_reasoning.py --model Jiaqi-hkust/Robust-U1-RL --dataset data/train.jsonl \\
    --image-root data/train_images --output runs/stage3 --lora-r 64 --learning-rate 1e-5 --max-steps 2000
```
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets
import torch
from transformers import Trainer

from robust_u1 import RobustU1ForConditionalGeneration, TrainingSafetyCallback, tiny_random_model
from robust_u1.reasoning import (
    ReasoningCollator,
    answer_token_loss,
    build_reasoning_dataset,
    create_reasoning_model_card,
    load_robust_r1_jsonl,
    reasoning_training_arguments,
    understanding_lora_config,
)

TINY_MODEL = "tiny-random"
TABLE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=TINY_MODEL, help=f"checkpoint or Hub id ({TINY_MODEL!r}: offline test model)"
    )
    parser.add_argument("--dataset", required=True, help="Robust-R1 JSONL, json/jsonl/parquet table, or Hub dataset id")
    parser.add_argument("--split", default="train", help="split of a Hub dataset")
    parser.add_argument("--image-root", help="folder of a Robust-R1 JSONL's images (default: the file's folder)")
    parser.add_argument("--output", required=True, help="where checkpoints, the final model and metrics go")
    parser.add_argument("--eval-size", type=float, default=0.1, help="held-out fraction (or count, if ≥ 1)")
    parser.add_argument("--lora-r", type=int, default=0, help="LoRA rank on the understanding expert; 0 = full FT")
    parser.add_argument("--lora-alpha", type=int, help="LoRA alpha (default 2·r)")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--learning-rate", type=float, default=1e-5, help="MathCanvas stage-2 template: 1e-5")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per packed batch")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--think", action="store_true", help="train with BAGEL's think system prompt")
    parser.add_argument("--recover-steps", type=int, default=50, help="flow steps of the I_r precomputation")
    parser.add_argument("--recover-batch-size", type=int, default=4)
    parser.add_argument("--cache-dir", help="cache of the recovered images (default: <output>/recovered)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="load the model in bfloat16")
    return parser.parse_args(argv)


def load_rows(args: argparse.Namespace) -> datasets.Dataset:
    """Question-answering rows from a Robust-R1 JSONL, a local table or the Hub."""
    path = Path(args.dataset)
    if path.suffix == ".jsonl" and path.is_file() and _is_robust_r1_jsonl(path):
        return load_robust_r1_jsonl(path, image_root=args.image_root)
    if path.suffix in TABLE_FORMATS and path.is_file():
        return datasets.load_dataset(TABLE_FORMATS[path.suffix], data_files=str(path), split="train")
    return datasets.load_dataset(args.dataset, split=args.split)


def _is_robust_r1_jsonl(path: Path) -> bool:
    with path.open(encoding="utf-8") as lines:
        first = next((line for line in lines if line.strip()), "{}")
    return "conversations" in json.loads(first)


def load_model(args: argparse.Namespace):
    if args.model == TINY_MODEL:
        return tiny_random_model(seed=args.seed)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = RobustU1ForConditionalGeneration.from_pretrained(args.model, dtype=dtype, device_map=device)
    return model, model.processor


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    output = Path(args.output)
    model, processor = load_model(args)

    rows = build_reasoning_dataset(
        load_rows(args),
        model,
        processor,
        recover_kwargs={"num_inference_steps": args.recover_steps},
        batch_size=args.recover_batch_size,
        cache_dir=args.cache_dir or output / "recovered",
        seed=args.seed,
    )
    eval_size = int(args.eval_size) if args.eval_size >= 1 else args.eval_size
    split = rows.train_test_split(test_size=eval_size, seed=args.seed)
    collator = ReasoningCollator(processor, model.config, think=args.think)

    if args.lora_r:
        from peft import get_peft_model

        model = get_peft_model(model, understanding_lora_config(r=args.lora_r, lora_alpha=args.lora_alpha))
        model.print_trainable_parameters()

    training_args = reasoning_training_arguments(
        output,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        # BAGEL's optimiser (TrainingArguments of train/pretrain_unified_navit.py, ByteDance-Seed/Bagel:
        # AdamW β2 0.95, eps 1e-15, grad clip 1.0).
        adam_beta2=0.95,
        adam_epsilon=1e-15,
        max_grad_norm=1.0,
        lr_scheduler_type="cosine",
        warmup_steps=min(2000, args.max_steps // 10),
        bf16=args.bf16,
        logging_steps=max(1, args.max_steps // 20),
        eval_strategy="steps",
        eval_steps=max(1, args.max_steps // 4),
        save_strategy="steps",
        save_steps=max(1, args.max_steps // 4),
        save_total_limit=2,
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=args.seed,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=split["train"],
        eval_dataset=split["test"],
        data_collator=collator,
        callbacks=[TrainingSafetyCallback()],  # stops on NaN loss/gradients; skips interrupted checkpoints
    )
    before = answer_token_loss(model, split["test"], collator, batch_size=args.batch_size)
    trainer.train()
    after = answer_token_loss(model, split["test"], collator, batch_size=args.batch_size)
    trainer.save_model(str(output / "final"))
    processor.save_pretrained(str(output / "final"))
    trainer.args.output_dir = str(output / "final")
    create_reasoning_model_card(trainer, dataset_name=args.dataset)

    metrics = {"held_out_answer_loss_before": before, "held_out_answer_loss_after": after}
    (output / "reasoning_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"held-out answer-token loss: {before:.4f} → {after:.4f}")
    return metrics


if __name__ == "__main__":
    main()
