"""Robust-U1: BAGEL that recovers corrupted images with its own generator, then answers over both.

Public names are imported lazily so that light sub-packages (``robust_u1.corruptions``,
``robust_u1.evaluation``) do not pull in the model code.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY_ATTRIBUTES: dict[str, str] = {
    "RobustU1Config": ".configuration_robust_u1",
    "RobustU1ForConditionalGeneration": ".modeling_robust_u1",
    "RobustU1PreTrainedModel": ".modeling_robust_u1",
    "RobustU1KVCache": ".packing",
    "TextBlock": ".packing",
    "VitImageBlock": ".packing",
    "VaeImageBlock": ".packing",
    "EditInputs": ".generation_robust_u1",
    "EditContexts": ".generation_robust_u1",
    "GuidanceConfig": ".sampling",
    "RECOVERY_PROMPT": ".generation_robust_u1",
    "convert_bagel_checkpoint": ".convert_bagel_weights_to_hf",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        return getattr(import_module(_LAZY_ATTRIBUTES[name], __name__), name)
    raise AttributeError(f"module 'robust_u1' has no attribute {name!r}")


__all__ = sorted(_LAZY_ATTRIBUTES)
