"""Dataset builders for Robust-U1: recovery pairs, degraded benchmarks, JSONL and Hub exchange.

Names are imported lazily (PEP 562), so the ``build-dataset`` command's parser (`robust_u1.data.cli`)
loads without datasets or the corruption code.

Example:
    >>> from robust_u1.data import build_recovery_dataset, export_jsonl
    >>> pairs = build_recovery_dataset("images/", "imagenet_c/common", seed=0)  # doctest: +SKIP
    >>> export_jsonl(pairs, "recovery_data")  # doctest: +SKIP
"""

from .._lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES)

__all__ = sorted(_LAZY_ATTRIBUTES)
