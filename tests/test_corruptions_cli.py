"""The ``corrupt`` and ``build-dataset`` sub-commands."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from robust_u1.corruptions import corrupt
from robust_u1.corruptions.cli import add_corrupt_parser
from robust_u1.data.cli import add_build_dataset_parser


@pytest.fixture()
def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robust-u1")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_corrupt_parser(subparsers)
    add_build_dataset_parser(subparsers)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture()
def image_file(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
        path
    )
    return path


def test_corrupt_writes_the_same_image_as_the_python_api(parser, image_file, tmp_path):
    out = tmp_path / "nested" / "out.png"
    assert (
        run(
            parser,
            [
                "corrupt",
                str(image_file),
                str(out),
                "--name",
                "fog",
                "--severity",
                "mid",
                "--seed",
                "4",
            ],
        )
        == 0
    )
    expected = corrupt(Image.open(image_file), "fog", severity=3, seed=4)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))
    assert (
        run(
            parser,
            ["corrupt", str(image_file), str(out), "--name", "graffiti", "--intensity", "0.9"],
        )
        == 0
    )


@pytest.mark.parametrize(
    ("make_input", "argv_tail", "fragment"),
    [
        (
            lambda tmp: tmp / "missing.png",
            ["--name", "fog", "--severity", "2"],
            "Image file not found",
        ),
        (
            lambda tmp: (tmp / "text.png").write_text("not an image") and tmp / "text.png",
            ["--name", "fog", "--severity", "2"],
            "as an image",
        ),
        (None, ["--name", "motion_blur", "--severity", "2"], "is ambiguous"),
        (None, ["--name", "fog", "--severity", "9"], "severity must be an integer in 1-5; got 9"),
        (None, ["--name", "lens_blur", "--intensity", "loud"], "unknown level 'loud'"),
    ],
)
def test_corrupt_reports_bad_input_on_one_stderr_line(
    parser, image_file, tmp_path, capsys, make_input, argv_tail, fragment
):
    source = make_input(tmp_path) if make_input else image_file
    code = run(parser, ["corrupt", str(source), str(tmp_path / "out.png"), *argv_tail])
    error = capsys.readouterr().err
    assert code != 0
    assert error.count("\n") == 1 and error.startswith("robust-u1 corrupt: error: ")
    assert fragment in error


def test_corrupt_requires_a_strength(parser, image_file, tmp_path):
    with pytest.raises(SystemExit):
        parser.parse_args(["corrupt", str(image_file), str(tmp_path / "o.png"), "--name", "fog"])


def test_build_dataset_writes_jsonl_from_an_image_folder(parser, tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for index, size in enumerate([(40, 30), (33, 47)]):
        Image.new("RGB", size, (40 * index, 90, 160)).save(folder / "sub" / f"{index}.png")
    out = tmp_path / "pairs"
    argv = [
        "build-dataset",
        str(folder),
        str(out),
        "--corruptions",
        "robust_r1/capture,zoom_blur",
        "--severities",
        "low",
        "2",
        "0.6",
        "--samples-per-image",
        "2",
        "--seed",
        "3",
        "--jsonl",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert run(parser, argv) == 0
    records = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert all(
        (out / r["image"]).is_file() and (out / r["target_image"]).is_file() for r in records
    )
    assert {r["severity"] for r in records} <= {1.0, 2.0, 0.23, 0.6}


def test_build_dataset_reports_bad_sources(parser, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.jpg").write_text("not a jpeg")
    for source, fragment in [
        (tmp_path / "nowhere", "source not found"),
        (tmp_path / "empty", "no images"),
        (tmp_path / "broken", "not a readable image"),
    ]:
        assert run(parser, ["build-dataset", str(source), str(tmp_path / "out")]) != 0
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and fragment in error
