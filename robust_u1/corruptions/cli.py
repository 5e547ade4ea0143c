"""``corrupt`` and ``build-dataset`` sub-commands, for the main ``robust-u1`` CLI to register.

Example:
    >>> parser = argparse.ArgumentParser(prog="robust-u1")
    >>> subparsers = parser.add_subparsers(dest="command")
    >>> _ = add_corrupt_parser(subparsers), add_build_dataset_parser(subparsers)
    >>> args = parser.parse_args(["corrupt", "in.png", "out.png", "--name", "fog", "--severity", "mid"])
    >>> args.func is run_corrupt
    True
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..image_utils import open_image, save_image
from .registry import corrupt

if TYPE_CHECKING:
    import datasets

_EXPECTED_ERRORS = (ValueError, TypeError, OSError)


def _number_or_level(text: str) -> int | float | str:
    """'3' -> 3, '0.45' -> 0.45, 'mid' / '50%' -> unchanged (validated later, with a clear message)."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            continue
    return text


def add_corrupt_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``corrupt IN OUT --name NAME (--severity S | --intensity I) [--seed N]``."""
    parser = subparsers.add_parser(
        "corrupt",
        help="corrupt one image file",
        description="Corrupt one image with an ImageNet-C corruption or a Robust-R1 operation.",
    )
    parser.add_argument("input", metavar="IN", type=Path, help="image file to corrupt")
    parser.add_argument(
        "output", metavar="OUT", type=Path, help="where to write the result (format from its extension)"
    )
    parser.add_argument(
        "--name", required=True, help="e.g. imagenet_c/fog, robust_r1/graffiti, zoom_blur"
    )
    strength = parser.add_mutually_exclusive_group(required=True)
    strength.add_argument(
        "--severity",
        type=_number_or_level,
        help="ImageNet-C severity 1-5, or low/mid/high/25%%/...",
    )
    strength.add_argument(
        "--intensity",
        type=_number_or_level,
        help="Robust-R1 intensity 0-1, or low/mid/high/25%%/...",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(func=run_corrupt)
    return parser


def run_corrupt(args: argparse.Namespace) -> int:
    """Run ``corrupt``; returns 0, or 2 (the CLI error code) after one error line on stderr.

    The input is read upright (EXIF orientation applied) and the result is written upright without
    the tag; it goes to a temporary file that is renamed over OUT, and a mode OUT's format cannot
    hold (e.g. RGBA or 16-bit for JPEG) is converted first, so an existing OUT is never emptied.
    """
    try:
        image = open_image(args.input)
        corrupted = corrupt(
            image, args.name, severity=args.severity, intensity=args.intensity, seed=args.seed
        )
        save_image(corrupted, args.output)
    except _EXPECTED_ERRORS as error:
        return _fail("corrupt", error)
    return 0


def _fail(command: str, error: BaseException) -> int:
    message = " ".join(str(error).split())  # one line, whatever the exception text holds
    print(f"robust-u1 {command}: error: {message}", file=sys.stderr)
    return 2


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
        type=_number_or_level,
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

    from ..data.recovery import build_recovery_dataset, export_jsonl

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
        return _fail("build-dataset", error)
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
