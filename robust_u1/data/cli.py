"""The ``build-dataset`` sub-command, for the main ``robust-u1`` CLI to register.

It lives with the dataset builders it drives (`robust_u1.data.recovery`), so the corruption package
does not depend on the data package. Only the standard library is imported at the top, so building
the parser (``robust-u1 --help``) stays instant.

Example:
    >>> parser = argparse.ArgumentParser(prog="robust-u1")
    >>> subparsers = parser.add_subparsers(dest="command")
    >>> _ = add_build_dataset_parser(subparsers)
    >>> args = parser.parse_args(["build-dataset", "images/", "pairs/", "--severities", "low", "2"])
    >>> args.func is run_build_dataset, args.severities
    (True, ['low', 2])
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..corruptions.cli import fail, number_or_level

if TYPE_CHECKING:
    import datasets

_EXPECTED_ERRORS = (ValueError, TypeError, OSError)


def add_build_dataset_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``build-dataset SOURCE OUT [--corruptions ...] [--severities ...] ... [--jsonl]``."""
    parser = subparsers.add_parser(
        "build-dataset",
        help="build (corrupted, clean) recovery pairs",
        description=(
            "Corrupt every image of SOURCE (an image folder, or a dataset saved with "
            "Dataset.save_to_disk) into recovery pairs; write them to OUT with save_to_disk, or "
            "in the official JSONL layout with --jsonl."
        ),
    )
    parser.add_argument("source", metavar="SOURCE", type=Path)
    parser.add_argument("output", metavar="OUT", type=Path)
    parser.add_argument(
        "--corruptions",
        nargs="+",
        default=None,
        help="names, families or selectors (imagenet_c, robust_r1, imagenet_c/common, ...); default all",
    )
    parser.add_argument(
        "--severities",
        nargs="+",
        type=number_or_level,
        default=None,
        help="ints (ImageNet-C), floats (Robust-R1) or levels; default 1-5 and 0.23/0.45/0.9",
    )
    parser.add_argument("--samples-per-image", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--image-column", default="image", help="image column of a saved dataset")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="cache for resuming (default: datasets' cache)"
    )
    parser.add_argument(
        "--jsonl", action="store_true", help="write OUT/data.jsonl with corrupted/ and clean/ PNGs"
    )
    parser.set_defaults(func=run_build_dataset)
    return parser


def run_build_dataset(args: argparse.Namespace) -> int:
    """Run ``build-dataset``; returns 0, or 2 (the CLI error code) after one error line on stderr."""
    import datasets

    from .recovery import build_recovery_dataset, export_jsonl

    try:
        source = _read_source(args.source)
        corruptions = (
            [name for item in args.corruptions for name in item.split(",") if name]
            if args.corruptions
            else None
        )
        pairs = build_recovery_dataset(
            source,
            corruptions=corruptions,
            severities=args.severities,
            samples_per_image=args.samples_per_image,
            seed=args.seed,
            num_proc=args.num_proc,
            image_column=args.image_column,
            cache_dir=args.cache_dir,
        )
        if args.jsonl:
            export_jsonl(pairs, args.output)
        else:
            pairs.save_to_disk(str(args.output))
    except (*_EXPECTED_ERRORS, datasets.exceptions.DatasetsError) as error:
        return fail("build-dataset", error)
    return 0


def _read_source(path: Path) -> datasets.Dataset | Path:
    """A saved Dataset is loaded; any other folder is passed on as an image folder."""
    import datasets

    if not path.exists():
        raise FileNotFoundError(f"source not found: {path}")
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if p.is_dir())
        raise ValueError(
            f"{path} holds several splits {splits}; pass one of them, e.g. {path / splits[0]}"
        )
    if (path / "state.json").is_file():
        return datasets.load_from_disk(str(path))
    return path
