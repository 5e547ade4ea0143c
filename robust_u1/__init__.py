"""Robust-U1: BAGEL that recovers corrupted images with its own generator, then answers over both.

Importing the package registers the model with transformers' Auto classes and the ``robust-vqa``
pipeline; other public names are imported lazily.

Example:

```python
>>> from robust_u1 import RobustU1ForConditionalGeneration
>>> model = RobustU1ForConditionalGeneration.from_pretrained("Jiaqi-hkust/Robust-U1", dtype="bfloat16")
```
"""

from importlib import import_module
from typing import Any

from . import _registration  # noqa: F401  (Auto classes and the robust-vqa pipeline)

__version__ = "0.1.0"

_LAZY_ATTRIBUTES: dict[str, str] = {
    "RobustU1Config": ".configuration_robust_u1",
    "RobustU1ForConditionalGeneration": ".modeling_robust_u1",
    "RobustU1PreTrainedModel": ".modeling_robust_u1",
    "RobustU1KVCache": ".packing",
    "TextBlock": ".packing",
    "VitImageBlock": ".packing",
    "VaeImageBlock": ".packing",
    "TokenLayoutPlanner": ".token_layout",
    "EditInputs": ".generation_robust_u1",
    "EditContexts": ".generation_robust_u1",
    "DenoiseOutput": ".generation_robust_u1",
    "GuidanceConfig": ".configuration_recovery",
    "RecoveryConfig": ".configuration_recovery",
    "TaylorSeerConfig": ".taylorseer",
    "RECOVERY_PROMPT": ".generation_robust_u1",
    "RobustU1Processor": ".processing_robust_u1",
    "RobustU1ImageProcessor": ".processing_robust_u1",
    "RobustVQAPipeline": ".pipeline_robust_vqa",
    "RobustAnswer": ".generation_robust_u1",
    "tiny_random_model": ".tiny",
    "FlowMatchingConfig": ".trainers",
    "FlowMatchingTrainer": ".trainers",
    "generation_lora_config": ".trainers",
    "FlowGRPOConfig": ".trainers",
    "FlowGRPOTrainer": ".trainers",
    "TrainingSafetyCallback": ".trainers",
    "NonFiniteTrainingError": ".trainers",
    "build_reasoning_dataset": ".reasoning",
    "ReasoningCollator": ".reasoning",
    "load_robust_r1_jsonl": ".reasoning",
    "reasoning_training_arguments": ".reasoning",
    "push_artifact": ".hub",
    "convert_bagel_checkpoint": ".convert_bagel_weights_to_hf",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        return getattr(import_module(_LAZY_ATTRIBUTES[name], __name__), name)
    raise AttributeError(f"module 'robust_u1' has no attribute {name!r}")


__all__ = sorted(_LAZY_ATTRIBUTES)
