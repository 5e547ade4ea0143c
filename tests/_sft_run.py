"""Runs a few FlowMatchingTrainer steps on a fixed tiny problem; used by the distributed test.

Usage: ``[torchrun --nproc_per_node N] python tests/_sft_run.py OUT_DIR PER_DEVICE_BATCH STEPS``
"""

import sys

import numpy as np
from datasets import Dataset
from PIL import Image
from torch.utils.data import SequentialSampler

from robust_u1 import FlowMatchingConfig, FlowMatchingTrainer
from robust_u1.tiny import tiny_random_model


def pairs(count=8, size=32):
    rows = []
    for i in range(count):
        rng = np.random.default_rng(i)
        clean = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        noisy = np.clip(clean + rng.normal(0, 40, clean.shape), 0, 255).astype(np.uint8)
        rows.append({"image": Image.fromarray(noisy), "target_image": Image.fromarray(clean)})
    return Dataset.from_list(rows)


class InOrderTrainer(FlowMatchingTrainer):
    """Reads the data in order so that runs with different process counts see the same global batches."""

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


def main(out_dir, per_device_batch, steps):
    model, processor = tiny_random_model(seed=0)
    args = FlowMatchingConfig(
        out_dir, per_device_train_batch_size=per_device_batch, max_steps=steps, learning_rate=1e-3,
        lr_scheduler_type="constant", report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = InOrderTrainer(model, args, train_dataset=pairs())
    trainer.train()
    if trainer.is_world_process_zero():
        trainer.save_model(out_dir)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
