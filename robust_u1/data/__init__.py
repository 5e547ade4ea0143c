"""Dataset builders for Robust-U1: recovery pairs, degraded benchmarks, JSONL and Hub exchange.

Example:
    >>> from robust_u1.data import build_recovery_dataset, export_jsonl
    >>> pairs = build_recovery_dataset("images/", "imagenet_c/common", seed=0)  # doctest: +SKIP
    >>> export_jsonl(pairs, "recovery_data")  # doctest: +SKIP
"""

from .degraded import build_degraded_benchmark
from .hub import push_dataset_to_hub, render_dataset_card
from .recovery import (
    RECOVERY_FEATURES,
    RECOVERY_PROMPT,
    build_recovery_dataset,
    export_jsonl,
    load_jsonl,
)

__all__ = [
    "RECOVERY_FEATURES",
    "RECOVERY_PROMPT",
    "build_degraded_benchmark",
    "build_recovery_dataset",
    "export_jsonl",
    "load_jsonl",
    "push_dataset_to_hub",
    "render_dataset_card",
]
