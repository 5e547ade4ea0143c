"""FlowMatchingTrainer with EMA for 3 steps; under torchrun (2 CPU processes) through accelerate's FSDP2 path.

Usage: ``[torchrun --nproc_per_node 2] python tests/_ema_trainer_fsdp2.py OUT_DIR``; writes ``OUT_DIR/ema.safetensors``
and, per process, ``OUT_DIR/rank<N>.txt`` (the class of the trained parameters and of their averages,
whether the averages were built only after sharding).
One process reads the same 2-sample batches the two processes split.
"""

import os
import sys
from pathlib import Path

from _sft_run import InOrderTrainer, pairs

from robust_u1 import FlowMatchingConfig
from robust_u1.tiny import tiny_random_model


class FSDP2OnCPUTrainer(InOrderTrainer):
    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        # accelerate turns FSDP on for accelerators only; its FSDP2 path itself runs on CPU (gloo), so it is
        # switched on by hand here, as `accelerate launch --use_fsdp` does on GPUs (before the EMA is set up).
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        self.accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["RobustU1MoTDecoderLayer", "SiglipEncoderLayer"],
        )  # fmt: skip
        self.accelerator.state.distributed_type = DistributedType.FSDP
        self.is_fsdp_enabled = True


def main(out_dir):
    sharded = "RANK" in os.environ
    model, _ = tiny_random_model(seed=0)
    args = FlowMatchingConfig(
        out_dir, per_device_train_batch_size=1 if sharded else 2, max_steps=3, learning_rate=1e-3, ema_decay=0.5,
        lr_scheduler_type="constant", report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = (FSDP2OnCPUTrainer if sharded else InOrderTrainer)(model, args, train_dataset=pairs())
    deferred = trainer.ema._shadow is None  # under FSDP no full copy is made before the model is sharded
    trainer.train()
    trainer.ema.save(out_dir, write=trainer.args.should_save)  # a collective under FSDP2: every process
    parameter = next(p for p in trainer.model.parameters() if p.requires_grad)
    average = next(iter(trainer.ema.shadow.values()))
    rank = trainer.args.process_index
    (Path(out_dir) / f"rank{rank}.txt").write_text(f"{type(parameter).__name__} {type(average).__name__} {deferred}")


if __name__ == "__main__":
    main(sys.argv[1])
