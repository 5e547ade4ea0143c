"""Recovery pairs (corrupted image, clean image, recovery prompt) for Robust-U1 training.

Stage I trains recovery on ImageNet-C corruptions and stages II-III on Robust-R1 degradations;
both are built here from any image dataset or image folder, and exchanged with the official code
through its JSONL layout::

    {"prompt": "Please restore ...", "image": "corrupted/x.png", "target_image": "clean/x.png"}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..corruptions.registry import RandomCorruption, StrengthSpec
from ..corruptions.seeding import SeedLike, as_int_seed
from ..distributed import check_shared_cache, gather_datasets, num_processes, process_bounds
from ..image_utils import open_image, save_image, to_rgb_image
from ..prompting import RECOVERY_PROMPT
from .caching import cached_map, fingerprint

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
JSONL_NAME = "data.jsonl"
RECOVERY_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "target_image": datasets.Image(),
        "prompt": datasets.Value("string"),
        "corruption": datasets.Value("string"),
        "severity": datasets.Value("float64"),
        "seed": datasets.Value("int64"),
        "source_index": datasets.Value("int64"),
    }
)
_IMAGE_COLUMNS = ("image", "target_image")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}


def build_recovery_dataset(
    source: datasets.Dataset | str | os.PathLike,
    corruptions: str | Sequence[str] | None = None,
    severities: Sequence[StrengthSpec] | None = None,
    samples_per_image: int = 1,
    seed: SeedLike = 0,
    num_proc: int | None = None,
    *,
    image_column: str = "image",
    weights: Sequence[float] | Mapping[str, float] | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 8,
) -> datasets.Dataset:
    """Corrupt every source image ``samples_per_image`` times into (corrupted, clean) pairs.

    Output columns: ``image`` (corrupted), ``target_image`` (clean), ``prompt`` (the recovery
    prompt), ``corruption`` (qualified name), ``severity`` (ImageNet-C severity 1-5, or Robust-R1
    intensity in [0, 1] for ``robust_r1/*`` rows), ``seed`` and ``source_index``. Both images are
    RGB and stored as PNG. ``corrupt(target, corruption, severity/intensity, seed=seed)`` replays a
    row exactly.

    Row ``(i, s)`` (source image i, sample s) draws its corruption from
    ``numpy.random.default_rng([seed, i, s])``, so the result does not depend on ``num_proc`` or
    on which worker handled it. Results are cached under a fingerprint of all the inputs, so a
    repeated or interrupted build resumes from the finished shards.

    Args:
        source: a ``datasets.Dataset`` with an image column, or a folder of images (searched
            recursively, in sorted path order).
        corruptions: names, families or selectors as for :class:`RandomCorruption`
            (e.g. ``"imagenet_c/common"`` for stage I, ``"robust_r1"`` for stages II-III).
        severities: ints (ImageNet-C severities), floats (Robust-R1 intensities) or levels
            ("low", "mid", "high", "25%", ...); default 1-5 and 0.23/0.45/0.9.
        samples_per_image: corrupted copies per source image.
        seed: base seed (an int, or a Generator from which one is drawn).
        num_proc: worker processes for ``Dataset.map``.
        image_column: the source's image column.
        weights: relative probability per corruption, as for :class:`RandomCorruption`.
        cache_dir: where to keep the cache files (default: ``datasets``' cache).
        batch_size: source images per ``map`` batch.

    Example:
        >>> source = datasets.Dataset.from_dict(
        ...     {"image": [Image.new("RGB", (32, 32))] * 2}, features=datasets.Features({"image": datasets.Image()})
        ... )
        >>> pairs = build_recovery_dataset(source, "robust_r1", samples_per_image=2, seed=0)
        >>> pairs.num_rows, pairs[0]["prompt"]
        (4, 'Please restore this corrupted image to its clean version.')
    """
    if (
        not isinstance(samples_per_image, int)
        or isinstance(samples_per_image, bool)
        or samples_per_image < 1
    ):
        raise ValueError(f"samples_per_image must be a positive int; got {samples_per_image!r}")
    sampler = RandomCorruption(corruptions, severities, weights=weights)
    base_seed = as_int_seed(seed)
    dataset, source_key = _load_source(source, image_column)

    key = fingerprint(
        "recovery",
        source_key,
        image_column,
        sampler.probabilities.tolist(),
        list(sampler.strengths.items()),
        samples_per_image,
        base_seed,
    )
    # Under `accelerate launch` each process corrupts its contiguous share of the source images (row
    # (i, s) keeps its seed [seed, i, s]) and the shares are gathered, equal to the one-process result.
    check_shared_cache(dataset, cache_dir)
    start, stop = process_bounds(len(dataset))
    share = dataset
    if num_processes() > 1:
        share, key = dataset.select(range(start, stop)), f"{key}-{start:09d}-{stop:09d}"
    pairs = cached_map(
        share,
        _corrupt_batch,
        prefix="recovery",
        key=key,
        cache_dir=cache_dir,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=RECOVERY_FEATURES,
        num_proc=num_proc,
        fn_kwargs={
            "sampler": sampler,
            "seed": base_seed,
            "samples_per_image": samples_per_image,
            "image_column": image_column,
            "first_index": start,
        },
        desc="Corrupting images",
    )
    return gather_datasets([pairs])


def _corrupt_batch(
    batch: dict[str, list],
    indices: list[int],
    *,
    sampler: RandomCorruption,
    seed: int,
    samples_per_image: int,
    image_column: str,
    first_index: int = 0,
) -> dict[str, list]:
    rows: dict[str, list] = {name: [] for name in RECOVERY_FEATURES}
    for image, index in zip(batch[image_column], (first_index + local for local in indices)):
        # The library's input rule (alpha on white, 16-bit rescaled); the result is a copy without
        # the file reference, so datasets stores the clean pixels as PNG.
        clean = to_rgb_image(image)
        for sample in range(samples_per_image):
            record = sampler.draw(np.random.default_rng([seed, index, sample]))
            rows["image"].append(record.apply(clean))
            rows["target_image"].append(clean)
            rows["prompt"].append(RECOVERY_PROMPT)
            rows["corruption"].append(record.name)
            rows["severity"].append(float(record.strength))
            rows["seed"].append(record.seed)
            rows["source_index"].append(index)
    return rows


def _load_source(
    source: datasets.Dataset | str | os.PathLike, image_column: str
) -> tuple[datasets.Dataset, str]:
    """The source as a Dataset with a decoded image column, and a fingerprint of its content."""
    if isinstance(source, datasets.DatasetDict):
        raise TypeError(
            f"source is a DatasetDict; pick a split, e.g. source[{next(iter(source))!r}]"
        )
    if isinstance(source, datasets.Dataset):
        if image_column not in source.column_names:
            raise ValueError(
                f"source has no column {image_column!r}; its columns are {source.column_names} "
                "(pass image_column=...)"
            )
        if not isinstance(source.features[image_column], datasets.Image):
            source = source.cast_column(image_column, datasets.Image())
        elif not source.features[image_column].decode:
            source = source.cast_column(image_column, datasets.Image(decode=True))
        return source, source._fingerprint
    if isinstance(source, (str, os.PathLike)):
        return _folder_source(Path(source), image_column)
    raise TypeError(
        f"source must be a datasets.Dataset or an image folder path; got {type(source).__name__}"
    )


def _folder_source(folder: Path, image_column: str) -> tuple[datasets.Dataset, str]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    paths = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )
    if not paths:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {folder}")
    for path in paths:
        try:
            with Image.open(path):  # reads the header only: catches non-images early
                pass
        except (OSError, Image.UnidentifiedImageError) as error:
            raise ValueError(f"not a readable image: {path} ({error})") from None
    # Content key: relative path, size and modification time of every file.
    key = fingerprint(
        [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    )
    dataset = datasets.Dataset.from_dict(
        {image_column: [str(path) for path in paths]},
        features=datasets.Features({image_column: datasets.Image()}),
    )
    return dataset, key


def export_jsonl(
    dataset: datasets.Dataset, out_dir: str | os.PathLike, *, jsonl_name: str = JSONL_NAME
) -> Path:
    """Write ``dataset`` in the official JSONL layout; returns the JSONL path.

    Corrupted images go to ``out_dir/corrupted/<row>.png``, clean ones to
    ``out_dir/clean/<source_index>.png`` (one file per source image when the dataset has a
    ``source_index`` column, else one per row). Each line holds ``prompt``, ``image`` and
    ``target_image`` (paths relative to the JSONL file) plus the dataset's other scalar columns.

    Example:
        >>> path = export_jsonl(pairs, "recovery_jsonl")  # doctest: +SKIP
        >>> load_jsonl(path).num_rows == pairs.num_rows  # doctest: +SKIP
        True
    """
    missing = [c for c in (*_IMAGE_COLUMNS, "prompt") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset lacks columns {missing}; it has {dataset.column_names}")
    out_dir = Path(out_dir)
    for sub_dir in ("corrupted", "clean"):
        (out_dir / sub_dir).mkdir(parents=True, exist_ok=True)
    raw = dataset
    for column in _IMAGE_COLUMNS:
        raw = raw.cast_column(column, datasets.Image(decode=False))

    jsonl_path = out_dir / jsonl_name
    written_clean: set[str] = set()
    # Written under a temporary name and renamed at the end, so a failure never leaves a partial file.
    partial_path = jsonl_path.with_name(f".{jsonl_path.name}.{os.getpid()}.tmp")
    try:
        with partial_path.open("w", encoding="utf-8") as jsonl:
            for row_index, row in enumerate(tqdm(raw, total=raw.num_rows, desc="Exporting JSONL")):
                clean_index = row.get("source_index", row_index)
                image_path = f"corrupted/{row_index:08d}.png"
                target_path = f"clean/{clean_index:08d}.png"
                _write_png(row["image"], out_dir / image_path)
                if target_path not in written_clean:
                    _write_png(row["target_image"], out_dir / target_path)
                    written_clean.add(target_path)
                extra = {
                    key: value
                    for key, value in row.items()
                    if key not in (*_IMAGE_COLUMNS, "prompt")
                    and (value is None or isinstance(value, (str, int, float, bool)))
                }
                record = {"prompt": row["prompt"], "image": image_path, "target_image": target_path}
                jsonl.write(json.dumps({**record, **extra}) + "\n")
        os.replace(partial_path, jsonl_path)
    finally:
        partial_path.unlink(missing_ok=True)
    return jsonl_path


def _write_png(value: Mapping[str, Any], path: Path) -> None:
    """Write an undecoded datasets image ({"bytes", "path"}) as PNG, atomically: PNG bytes are
    copied as is, other formats are decoded (EXIF orientation applied) and re-encoded."""
    data = value.get("bytes")
    if data is None:
        data = Path(value["path"]).read_bytes()
    if data.startswith(_PNG_SIGNATURE):
        _write_atomically(path, data)
        return
    image = open_image(data)
    if image.mode not in _PNG_MODES:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    save_image(image, path, format="PNG")


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` to a temporary file next to ``path``, then renamed over it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_jsonl(path: str | os.PathLike) -> datasets.Dataset:
    """Load an official-layout JSONL file (or a folder holding ``data.jsonl``) as a Dataset.

    ``image`` and ``target_image`` paths are resolved against the JSONL file's folder and become
    ``datasets.Image`` columns; every other key becomes a column.

    Example:
        >>> pairs = load_jsonl("recovery_jsonl/data.jsonl")  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        path = path / JSONL_NAME
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file not found: {path}")
    records = []
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            missing = [key for key in ("prompt", *_IMAGE_COLUMNS) if key not in record]
            if missing:
                raise ValueError(f"{path}:{line_number} lacks keys {missing}")
            for column in _IMAGE_COLUMNS:
                record[column] = str(path.parent / record[column])
            records.append(record)
    if not records:
        raise ValueError(f"{path} holds no records")
    columns = list(dict.fromkeys(key for record in records for key in record))
    dataset = datasets.Dataset.from_dict(
        {column: [record.get(column) for record in records] for column in columns}
    )
    for column in _IMAGE_COLUMNS:
        dataset = dataset.cast_column(column, datasets.Image())
    return dataset
