"""Robust-R1-style degraded copies of multiple-choice benchmarks (MMStar, RealWorldQA, MMMB).

Robust-R1 evaluates at 25 / 50 / 100 % synthetic degradation: each image gets one Robust-R1
operation, drawn with the official weights, applied at intensity 0.23 / 0.45 / 0.9. As in the
official script, an image keeps the same operation at every level; here it also keeps the same
random draws, so its 50 % copy is a stronger version of its 25 % copy.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np

from ..corruptions.levels import level_for_percent, parse_level
from ..corruptions.registry import (
    OFFICIAL_R1_WEIGHTS,
    ROBUST_R1,
    RandomCorruption,
    degrade_at_level,
    expand_names,
)
from ..corruptions.seeding import SeedLike, as_int_seed
from ..distributed import check_shared_cache, gather_datasets, num_processes, process_bounds
from ..image_utils import open_image
from .caching import cached_map, fingerprint

CLEAN_LEVEL = 0
_CLEAN_NAMES = {"0", "0%", "clean", "none"}


def build_degraded_benchmark(
    mcq_dataset: datasets.Dataset,
    levels: Sequence[int | str] = (0, 25, 50, 100),
    seed: SeedLike = 0,
    *,
    image_column: str = "image",
    operations: str | Sequence[str] | None = None,
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """One copy of ``mcq_dataset`` per degradation level, concatenated, with a ``level`` column.

    Every row keeps its other columns (question, options / A-D, answer, ...). Level 0 keeps the
    original image bytes untouched; other levels replace the image with a PNG degraded by the
    row's Robust-R1 operation (recorded in a ``corruption`` column, null at level 0). Row i draws
    its operation from ``numpy.random.default_rng([seed, i])``, whatever ``num_proc`` is.

    Args:
        mcq_dataset: a ``datasets.Dataset`` whose image column is a ``datasets.Image`` or a
            string column of file paths or base64 images (VLMEvalKit / MMMB TSV files).
        levels: degradation percents 0, 25, 50, 100, or names ("clean", "25%", "low", ...).
        seed: base seed (an int, or a Generator from which one is drawn).
        image_column: the image column.
        operations: Robust-R1 operations to draw from (names or selectors such as
            ``"robust_r1/capture"``); default all 16, with the official weights.
        num_proc: worker processes for ``Dataset.map``.
        cache_dir: where to keep cache files (default: ``datasets``' cache).

    Example:
        >>> mmstar = datasets.load_dataset("Lin-Chen/MMStar", split="val")  # doctest: +SKIP
        >>> degraded = build_degraded_benchmark(mmstar, levels=(0, 50), seed=0)  # doctest: +SKIP
        >>> degraded.filter(lambda row: row["level"] == 50)  # doctest: +SKIP
    """
    percents = [_as_percent(level) for level in levels]
    if not percents or len(set(percents)) != len(percents):
        raise ValueError(f"levels must be distinct and non-empty; got {list(levels)}")
    names = expand_names(operations if operations is not None else ROBUST_R1)
    foreign = [name for name in names if not name.startswith(f"{ROBUST_R1}/")]
    if foreign:
        raise ValueError(f"the degraded benchmark uses Robust-R1 operations only; got {foreign}")
    chooser = RandomCorruption(names, weights={name: OFFICIAL_R1_WEIGHTS[name] for name in names})
    base_seed = as_int_seed(seed)
    dataset = _undecoded(mcq_dataset, image_column)

    features = dataset.features.copy()
    features[image_column] = datasets.Image()
    features["level"] = datasets.Value("int64")
    features["corruption"] = datasets.Value("string")
    # Under `accelerate launch` each process degrades its contiguous share of the rows (row i keeps seed
    # [seed, i]); the shares are gathered per level, so the result equals the one-process one.
    check_shared_cache(dataset, cache_dir)
    start, stop = process_bounds(len(dataset))
    share = dataset if num_processes() == 1 else dataset.select(range(start, stop))
    copies = []
    for percent in percents:
        key = fingerprint("degraded", dataset._fingerprint, image_column, names, base_seed, percent)
        if num_processes() > 1:
            key = f"{key}-{start:09d}-{stop:09d}"
        copies.append(
            cached_map(
                share,
                _degrade_example,
                prefix="degraded",
                key=key,
                cache_dir=cache_dir,
                with_indices=True,
                features=features,
                num_proc=num_proc,
                fn_kwargs={
                    "percent": percent,
                    "chooser": chooser,
                    "seed": base_seed,
                    "image_column": image_column,
                    "first_index": start,
                },
                desc=f"Degrading images ({percent}%)",
            )
        )
    if num_processes() > 1:
        copies = [gather_datasets([copy]) for copy in copies]
    return datasets.concatenate_datasets(copies)


def _as_percent(level: int | str) -> int:
    if isinstance(level, str) and level.strip().lower() in _CLEAN_NAMES:
        return CLEAN_LEVEL
    if isinstance(level, str):
        return parse_level(level).percent
    if isinstance(level, (int, np.integer)) and not isinstance(level, bool):
        return CLEAN_LEVEL if level == CLEAN_LEVEL else level_for_percent(int(level)).percent
    raise TypeError(f"a level is a percent (0, 25, 50, 100) or a level name; got {level!r}")


def _undecoded(dataset: datasets.Dataset, image_column: str) -> datasets.Dataset:
    """The dataset with its image column left as stored, so level 0 can keep the exact bytes."""
    if isinstance(dataset, datasets.DatasetDict):
        raise TypeError(f"got a DatasetDict; pick a split, e.g. dataset[{next(iter(dataset))!r}]")
    if image_column not in dataset.column_names:
        raise ValueError(
            f"dataset has no column {image_column!r}; its columns are {dataset.column_names} "
            "(pass image_column=...)"
        )
    feature = dataset.features[image_column]
    if isinstance(feature, datasets.Image):
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return dataset
    raise TypeError(
        f"column {image_column!r} must be a datasets.Image or a string column of paths or base64 "
        f"images; it is {feature}"
    )


def _degrade_example(
    example: dict[str, Any],
    index: int,
    *,
    percent: int,
    chooser: RandomCorruption,
    seed: int,
    image_column: str,
    first_index: int = 0,
) -> dict[str, Any]:
    stored = _stored_image(example[image_column])
    example["level"] = percent
    if percent == CLEAN_LEVEL:
        example[image_column] = stored
        example["corruption"] = None
        return example
    source = stored["bytes"] if stored["bytes"] is not None else stored["path"]
    image = open_image(source)  # EXIF orientation applied, as datasets does when it decodes level 0
    example[image_column], record = degrade_at_level(image, percent, np.random.default_rng([seed, first_index + index]), chooser)
    example["corruption"] = record.name
    return example


def _stored_image(value: Any) -> dict[str, Any]:
    """An image value as datasets stores it: {"bytes": ..., "path": ...}."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        if os.path.isfile(value):
            return {"bytes": None, "path": value}
        try:
            return {"bytes": base64.b64decode(value, validate=True), "path": None}
        except (binascii.Error, ValueError):
            pass
    raise ValueError(
        f"image value is neither a file path nor base64 image data: {str(value)[:60]!r}"
    )
