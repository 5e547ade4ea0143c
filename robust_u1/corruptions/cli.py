"""The ``corrupt`` sub-command, for the main ``robust-u1`` CLI to register.

Only the standard library is imported at the top, so building the parser (``robust-u1 --help``) stays
instant; the corruption code is imported when the command runs.

Example:
    >>> parser = argparse.ArgumentParser(prog="robust-u1")
    >>> subparsers = parser.add_subparsers(dest="command")
    >>> _ = add_corrupt_parser(subparsers)
    >>> args = parser.parse_args(["corrupt", "in.png", "out.png", "--name", "fog", "--severity", "mid"])
    >>> args.func is run_corrupt
    True
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_EXPECTED_ERRORS = (ValueError, TypeError, OSError)


def number_or_level(text: str) -> int | float | str:
    """Parse a severity / intensity argument; levels are validated later, with a clear message.

    Example:
        >>> number_or_level("3"), number_or_level("0.45"), number_or_level("mid")
        (3, 0.45, 'mid')
    """
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
        type=number_or_level,
        help="ImageNet-C severity 1-5, or low/mid/high/25%%/...",
    )
    strength.add_argument(
        "--intensity",
        type=number_or_level,
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
    from ..image_utils import open_image, save_image
    from .registry import corrupt

    try:
        image = open_image(args.input)
        corrupted = corrupt(
            image, args.name, severity=args.severity, intensity=args.intensity, seed=args.seed
        )
        save_image(corrupted, args.output)
    except _EXPECTED_ERRORS as error:
        return fail("corrupt", error)
    return 0


def fail(command: str, error: BaseException) -> int:
    """Print ``robust-u1 COMMAND: error: MESSAGE`` on one stderr line and return 2 (the CLI error code)."""
    message = " ".join(str(error).split())  # one line, whatever the exception text holds
    print(f"robust-u1 {command}: error: {message}", file=sys.stderr)
    return 2
