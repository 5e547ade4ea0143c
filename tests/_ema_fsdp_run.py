"""FlowMatchingTrainer with EMA, optionally under FSDP2 (2 CPU processes, gloo); used by the EMA test.

Usage: ``[torchrun --nproc_per_node N] python tests/_ema_fsdp_run.py OUT_DIR PER_DEVICE_BATCH STEPS [fsdp] [resume]``.
Saves a checkpoint every step (``OUT_DIR/checkpoint-<step>/ema.safetensors``) and the final model with its
EMA in OUT_DIR; ``resume`` continues from the last checkpoint in OUT_DIR.
"""

import sys

from _sft_run import InOrderTrainer, pairs

from robust_u1 import FlowMatchingConfig
from robust_u1.tiny import tiny_random_model


def main(out_dir, per_device_batch, steps, *flags):
    model, _ = tiny_random_model(seed=0)
    fsdp = {"fsdp": "full_shard", "fsdp_config": {"version": 2, "state_dict_type": "FULL_STATE_DICT"}} if "fsdp" in flags else {}
    args = FlowMatchingConfig(
        out_dir, per_device_train_batch_size=per_device_batch, max_steps=steps, learning_rate=1e-3, ema_decay=0.5,
        lr_scheduler_type="constant", report_to=[], save_strategy="steps", save_steps=1, use_cpu=True,
        disable_tqdm=True, seed=0, **fsdp,
    )  # fmt: skip
    trainer = InOrderTrainer(model, args, train_dataset=pairs())
    trainer.train(resume_from_checkpoint="resume" in flags or None)
    trainer.save_model(out_dir)  # every process: under FSDP the full EMA is gathered from the shards


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
