"""Dataset builders for Robust-U1: recovery pairs, degraded benchmarks, JSONL and Hub exchange.

Names are imported lazily (PEP 562), so the ``build-dataset`` command's parser (`robust_u1.data.cli`)
loads without datasets or the corruption code.

Example:
    >>> from robust_u1.data import build_recovery_dataset, export_jsonl
    >>> pairs = build_recovery_dataset("images/", "imagenet_c/common", seed=0)  # doctest: +SKIP
    >>> export_jsonl(pairs, "recovery_data")  # doctest: +SKIP
"""

from importlib import import_module
from typing import Any

_LAZY_ATTRIBUTES: dict[str, str] = {
    "RECOVERY_FEATURES": ".recovery",
    "RECOVERY_PROMPT": "..prompting",
    "build_degraded_benchmark": ".degraded",
    "build_recovery_dataset": ".recovery",
    "export_jsonl": ".recovery",
    "load_jsonl": ".recovery",
    "push_dataset_to_hub": ".hub",
    "render_dataset_card": ".hub",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        return getattr(import_module(_LAZY_ATTRIBUTES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(_LAZY_ATTRIBUTES)


__all__ = sorted(_LAZY_ATTRIBUTES)
