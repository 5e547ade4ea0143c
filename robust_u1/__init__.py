"""Robust-U1: BAGEL that recovers corrupted images with its own generator, then answers over both.

Importing the package registers the model with transformers' Auto classes and the ``robust-vqa``
pipeline; every other public name is imported lazily (PEP 562 ``__getattr__``, as transformers does),
so ``import robust_u1`` loads the model code but not the trainers, the datasets code or TinyWorld.

Example:
    >>> from robust_u1 import RobustU1ForConditionalGeneration
    >>> model = RobustU1ForConditionalGeneration.from_pretrained("Jiaqi-hkust/Robust-U1", dtype="bfloat16")  # doctest: +SKIP
"""

import sys

from ._lazy import lazy_attributes

__version__ = "0.1.0"


def _started_as_cli() -> bool:
    """Whether this process is the ``robust-u1`` command (console script or ``python -m robust_u1``).

    Registering the Auto classes imports torch and transformers (seconds). The command line checks its
    arguments and input files first and registers afterwards (`robust_u1.cli.main`), so ``--help`` and
    a mistyped file name answer at once.
    """
    if sys.argv and sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1] in ("robust-u1", "robust-u1.exe", "robust-u1-script.py"):
        return True
    # While `python -m robust_u1` locates its module, sys.argv[0] is "-m" (Python's documented behaviour).
    argv = getattr(sys, "orig_argv", [])
    return bool(sys.argv) and sys.argv[0] == "-m" and "-m" in argv and argv[argv.index("-m") + 1 :][:1] == ["robust_u1"]


if not _started_as_cli():
    from . import _registration  # noqa: F401  (Auto classes and the robust-vqa pipeline)

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
    "RECOVERY_PROMPT": ".prompting",
    "THINK_SYSTEM_PROMPT": ".prompting",
    "build_question_prompt": ".prompting",
    "format_reply": ".prompting",
    "parse_reply": ".prompting",
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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES, also_listed=["__version__"])

__all__ = sorted(_LAZY_ATTRIBUTES)
