"""The three Robust-U1 training stages: flow matching (I), Flow-GRPO (II), reasoning with the standard Trainer (III)."""

from .flow_grpo import FlowGRPOConfig, FlowGRPOTrainer
from .flow_matching import FlowMatchingConfig, FlowMatchingTrainer
from .utils import (
    EMAWeights,
    NonFiniteTrainingError,
    TrainingSafetyCallback,
    generation_lora_config,
    prepare_model_for_training,
)

__all__ = [
    "FlowGRPOConfig", "FlowGRPOTrainer", "FlowMatchingConfig", "FlowMatchingTrainer", "EMAWeights",
    "NonFiniteTrainingError", "TrainingSafetyCallback", "generation_lora_config", "prepare_model_for_training",
]  # fmt: skip
