"""CLI placement flags: --device-map / --max-memory / --offload-folder / --quantize (issue 14)."""

import numpy as np
import pytest
from PIL import Image

from robust_u1.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from robust_u1.tiny import tiny_random_model

    folder = tmp_path_factory.mktemp("cli") / "tiny"
    model, processor = tiny_random_model(seed=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder.parent / "in.png")
    return folder


def recover(tiny_folder, tmp_path, name, *flags):
    out = tmp_path / f"{name}.png"
    code = main(["recover", str(tiny_folder.parent / "in.png"), str(out), "--model", str(tiny_folder), "--steps", "3", *flags])
    assert code == 0
    return np.asarray(Image.open(out))


def test_offloaded_and_quantized_recovery_from_the_cli(tiny_folder, tmp_path):
    plain = recover(tiny_folder, tmp_path, "plain")
    offloaded = recover(
        tiny_folder, tmp_path, "offloaded", "--device-map", "auto", "--max-memory", "cpu=300KB", "--offload-folder", str(tmp_path / "off")
    )
    assert np.array_equal(plain, offloaded)
    quantized = recover(tiny_folder, tmp_path, "int8", "--quantize", "int8-torchao")
    assert quantized.shape == plain.shape and np.abs(quantized.astype(int) - plain).mean() < 8


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-memory", "0=20"], "--max-memory size '20' is not a size like 20GiB or 500MB."),
        (["--max-memory", "cpu"], "--max-memory entry 'cpu' is not DEVICE=SIZE (e.g. 0=20GiB,cpu=64GiB)."),
        (["--device-map", "auto", "--max-memory", "0"], "--max-memory entry '0' is not DEVICE=SIZE"),
    ],
)
def test_bad_placement_flags_are_one_line(tiny_folder, tmp_path, capsys, flags, message):
    code = main(["recover", str(tiny_folder.parent / "in.png"), str(tmp_path / "o.png"), "--model", str(tiny_folder), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
