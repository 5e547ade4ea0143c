"""Deterministic fingerprints and cache files for the dataset builders.

``Dataset.map`` reuses a finished result, and with ``num_proc > 1`` each finished shard, when
it finds a cache file under the same name; naming the files after a fingerprint of every input
that shapes the output makes an interrupted build resume where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
from datasets.fingerprint import Hasher

# Bump when the output of a builder changes for the same inputs, so that old caches are not reused.
BUILDER_VERSION = "1"


def fingerprint(*parts: Any) -> str:
    """A stable hash of the builder inputs (identical in every process)."""
    return Hasher.hash([BUILDER_VERSION, *parts])


def cache_file_name(
    dataset: datasets.Dataset, cache_dir: str | Path | None, prefix: str, key: str
) -> str | None:
    """Where ``Dataset.map`` should cache a result, or ``None`` to let ``datasets`` decide.

    An explicit ``cache_dir`` always wins. A dataset backed by cache files gets ``datasets``'
    default location (next to them). An in-memory dataset would not be cached at all, so it gets
    a file under ``HF_DATASETS_CACHE/robust_u1`` unless caching is disabled.
    """
    if cache_dir is None and (dataset.cache_files or not datasets.is_caching_enabled()):
        return None
    directory = (
        Path(cache_dir)
        if cache_dir is not None
        else (Path(datasets.config.HF_DATASETS_CACHE) / "robust_u1")
    )
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / f"{prefix}-{key}.arrow")
