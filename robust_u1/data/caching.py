"""Deterministic fingerprints and cache files for the dataset builders.

``Dataset.map`` reuses a finished result, and with ``num_proc > 1`` each finished shard, when
it finds a cache file under the same name; naming the files after a fingerprint of every input
that shapes the output makes an interrupted build resume where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
from datasets.fingerprint import Hasher

# Bump when the output of a builder changes for the same inputs, so that old caches are not reused.
BUILDER_VERSION = "1"


def fingerprint(*parts: Any) -> str:
    """A stable hash of the builder inputs (identical in every process).

    Example:
        >>> fingerprint("recovery", "abc", 3) == fingerprint("recovery", "abc", 3) != fingerprint("recovery", "abc", 4)
        True
    """
    return Hasher.hash([BUILDER_VERSION, *parts])


def cache_file_name(
    dataset: datasets.Dataset, cache_dir: str | Path | None, prefix: str, key: str
) -> str | None:
    """Where ``Dataset.map`` should cache a result (``{prefix}-{key}.arrow``), or ``None`` to let ``datasets`` decide.

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


def cached_map(
    dataset: datasets.Dataset,
    function: Callable,
    *,
    prefix: str,
    key: str,
    cache_dir: str | Path | None = None,
    **map_kwargs: Any,
) -> datasets.Dataset:
    """``dataset.map(function, **map_kwargs)`` under a fingerprint of its inputs, so that it resumes.

    The builders (recovery pairs, degraded benchmarks, stage III's recovered images) pass a ``key``
    from `fingerprint` of every input that shapes the output: the result takes it as its ``datasets``
    fingerprint and is cached in ``{prefix}-{key}.arrow`` (see `cache_file_name`), and with
    ``num_proc > 1`` each finished shard is cached too, so a repeated or interrupted build reuses
    what is done.

    Args:
        dataset: the dataset to map.
        function: the map function.
        prefix: the builder's name, first part of the cache file name.
        key: the fingerprint of the builder inputs (`fingerprint`).
        cache_dir: folder of the cache file; None lets `cache_file_name` choose.
        **map_kwargs: any other `datasets.Dataset.map` argument (``batched``, ``num_proc``, ``fn_kwargs``…).

    Returns:
        The mapped dataset.

    Example:
        >>> rows = datasets.Dataset.from_dict({"x": [1, 2]})
        >>> key = fingerprint("double", rows._fingerprint)
        >>> cached_map(rows, lambda row: {"x": 2 * row["x"]}, prefix="double", key=key, cache_dir="cache")["x"]  # doctest: +SKIP
        [2, 4]
    """
    return dataset.map(
        function, new_fingerprint=key, cache_file_name=cache_file_name(dataset, cache_dir, prefix, key), **map_kwargs
    )
