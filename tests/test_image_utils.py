"""The one image-input rule (robust_u1.image_utils), EXIF orientation, atomic image writes."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import robust_u1
from robust_u1 import image_utils
from robust_u1.corruptions import corrupt
from robust_u1.evaluation.images import decode_image
from robust_u1.evaluation.recovery import recovery_scores
from robust_u1.image_utils import image_array, open_image, save_image, to_float_tensor, to_rgb_array, to_rgb_image
from robust_u1.processing_robust_u1 import RobustU1ImageProcessor
from robust_u1.rewards import SSIMReward

PACKAGE = Path(robust_u1.__file__).parent
RNG = np.random.default_rng(0)
RGB_ARRAY = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def bagel_pil_img2rgb(image: Image.Image) -> Image.Image:
    """BAGEL's conversion (data/data_utils.py ``pil_img2rgb``): alpha pasted on white."""
    if image.mode == "RGBA" or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.split()[3])
        return white
    return image.convert("RGB")


# ------------------------------------------------------------------------------------------ one module


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_image_utils_and_processing_do_not_depend_on_upper_layers():
    for module in ("image_utils.py", "image_metrics.py", "processing_robust_u1.py"):
        imported = _imported_modules(PACKAGE / module)
        internal = {name for name in imported if name.startswith(".") or name.startswith("robust_u1")}
        upper = {"corruptions", "evaluation", "trainers", "data", "tinyworld", "reasoning"}
        leaks = {name for name in internal if upper & set(name.strip(".").split("."))}
        assert not leaks, f"{module} imports {leaks}"


def test_every_entry_point_uses_the_shared_converters():
    # The five former converters are gone; each entry point imports the shared module.
    import robust_u1.processing_robust_u1 as processing
    import robust_u1.rewards as rewards

    assert processing.to_rgb_image is image_utils.to_rgb_image
    assert not hasattr(rewards, "to_float_chw") and not hasattr(rewards, "to_pil")
    for relative in ("corruptions/image_io.py", "rewards.py", "evaluation/recovery.py", "evaluation/images.py",
                     "corruptions/cli.py", "data/degraded.py", "data/recovery.py"):  # fmt: skip
        assert "..image_utils" in _imported_modules(PACKAGE / relative) or ".image_utils" in _imported_modules(
            PACKAGE / relative
        ), relative


def test_entry_points_give_the_same_pixels():
    rgba = RNG.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    expected = to_rgb_array(rgba)
    assert np.array_equal(np.asarray(to_rgb_image(rgba)), expected)
    assert np.array_equal(np.asarray(decode_image(Image.fromarray(rgba, "RGBA"))), expected)
    # the float path composites without rounding to 8 bits: within half a level of the uint8 result
    as_float = to_float_tensor(rgba)
    torch.testing.assert_close(as_float, torch.from_numpy(expected).permute(2, 0, 1).float() / 255, atol=0.5 / 255 + 1e-6, rtol=0)
    assert not torch.equal(as_float, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)
    processor = RobustU1ImageProcessor(vae_min_size=16, vae_max_size=64)
    assert torch.equal(processor.vae_pixel_values(rgba), processor.vae_pixel_values(Image.fromarray(expected)))


# ------------------------------------------------------------------------------------------- colour


def test_alpha_is_composited_on_white_exactly_as_bagel_does():
    rgba = Image.fromarray(RNG.integers(0, 256, (17, 23, 4), dtype=np.uint8), "RGBA")
    assert np.array_equal(to_rgb_array(rgba), np.asarray(bagel_pil_img2rgb(rgba)))
    palette = rgba.convert("RGB").convert("P")
    palette.info["transparency"] = 0
    assert np.array_equal(to_rgb_array(palette), np.asarray(bagel_pil_img2rgb(palette)))
    # grey + alpha and float RGBA follow the same formula
    assert to_rgb_array(np.array([[[0, 0]]], np.uint8)).tolist() == [[[255, 255, 255]]]
    half = np.array([[[0.0, 0.0, 0.0, 0.5]]])
    assert to_rgb_array(half).tolist() == [[[128, 128, 128]]]
    assert torch.allclose(to_float_tensor(half), torch.full((3, 1, 1), 0.5))


def test_sixteen_bit_is_rescaled_and_float_keeps_its_precision():
    # not exact multiples of 257: (v + 128) // 257 rounds to the nearest 8-bit level
    sixteen = np.minimum(RGB_ARRAY.astype(np.int64) * 257 + 100, 65535).astype(np.uint16)
    assert np.array_equal(to_rgb_array(sixteen), RGB_ARRAY)
    assert np.array_equal(to_rgb_array(Image.fromarray(sixteen[..., 0])), np.repeat(RGB_ARRAY[..., :1], 3, -1))
    floats = RNG.random((12, 14, 3))
    assert torch.allclose(to_float_tensor(floats), torch.from_numpy(floats).permute(2, 0, 1).float())


# ----------------------------------------------------------------------------------------- layouts


def test_torch_hwc_is_detected_and_chw_read_as_is():
    chw = torch.from_numpy(RGB_ARRAY).permute(2, 0, 1)
    assert np.array_equal(to_rgb_array(chw), RGB_ARRAY)
    assert np.array_equal(to_rgb_array(torch.from_numpy(RGB_ARRAY)), RGB_ARRAY)  # (20, 30, 3): HWC


def test_bf16_and_fp16_tensors_are_converted():
    image = torch.rand(3, 16, 16)
    for dtype in (torch.bfloat16, torch.float16):
        converted = to_float_tensor(image.to(dtype))
        assert converted.dtype == torch.float32
        assert torch.equal(converted, image.to(dtype).float())
        assert to_rgb_image(image.to(dtype)).size == (16, 16)


@pytest.mark.parametrize(
    ("bad", "error", "pattern"),
    [
        (np.full((8, 8, 3), 200.0), ValueError, r"must be in \[0, 1\]; got values in \[200, 200\] .*divide by 255"),
        (torch.rand(3, 8, 8) * 255, ValueError, r"float image values must be in \[0, 1\].*divide by 255"),
        (torch.rand(3, 8, 8) * 2 - 1, ValueError, r"must be in \[0, 1\].*image \* 0.5 \+ 0.5"),
        (np.array([[np.nan, 0.5]]), ValueError, r"1 non-finite values \(NaN\); float images must be finite"),
        (torch.tensor([[float("inf"), 0.5]]), ValueError, r"non-finite values \(inf\)"),
        (torch.zeros(4, 4, 3), ValueError, r"shape \(4, 4, 3\) is ambiguous.*\(C, H, W\) and as \(H, W, C\)"),
        (np.zeros((3, 20, 30), np.uint8), ValueError, r"\(H, W\) or \(H, W, C\) with C in 1-4; got \(3, 20, 30\), "
                                                      r"which looks channel-first: use np.moveaxis\(array, 0, -1\)"),
        (np.zeros((8, 8, 5), np.uint8), ValueError, r"\(H, W\) or \(H, W, C\) with C in 1-4; got \(8, 8, 5\)$"),
        (np.zeros((8, 8), np.int64), TypeError, r"unsupported array dtype int64; use uint8 \(0-255\)"),
        (torch.zeros(8, 8, dtype=torch.bool), TypeError, r"unsupported tensor dtype torch.bool"),
        (np.full((8, 8), 70000, np.int32), ValueError, r"int32 image values .* \[0, 65535\]; got \[70000, 70000\]"),
        (Image.fromarray(np.full((8, 8), 128.0, np.float32)), ValueError, r"\[128, 128\].*divide by 255"),
        (12, TypeError, r"Unsupported image type int: expected a PIL.Image.Image"),
    ],
    ids=["np-0-255", "pt-0-255", "pt-minus1-1", "nan", "inf", "ambiguous-hwc", "np-chw", "np-5-channels",
         "int64", "bool", "int32-range", "pil-F-0-255", "int"],  # fmt: skip
)
def test_bad_inputs_are_one_clear_error_on_every_entry_point(bad, error, pattern):
    with pytest.raises(error, match=pattern):
        to_rgb_image(bad)
    with pytest.raises(error, match=pattern):
        to_float_tensor(bad)
    with pytest.raises(error, match=pattern):
        RobustU1ImageProcessor().vit_pixel_values(bad)
    if not isinstance(bad, int):
        with pytest.raises(error, match=pattern):
            corrupt(bad, "robust_r1/gaussian_noise", intensity=0.45, seed=0)


def test_float_images_in_0_255_are_refused_by_rewards_and_metrics_not_clamped():
    clean = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"float image values must be in \[0, 1\].*divide by 255"):
        SSIMReward(device="cpu")(images=[clean * 255], target_image=[clean])
    with pytest.raises(ValueError, match=r"float image values must be in \[0, 1\].*divide by 255"):
        recovery_scores([clean.permute(1, 2, 0).numpy() * 255], [clean.permute(1, 2, 0).numpy()], metrics=("psnr",))
    with pytest.raises(ValueError, match=r"non-finite"):
        SSIMReward(device="cpu")(images=[clean], target_image=[torch.full((3, 32, 32), float("nan"))])


# ------------------------------------------------------------------------------------------ EXIF


def exif_jpeg(path: Path, orientation: int) -> Image.Image:
    """A 40×24 JPEG whose stored top-left block is red, tagged with ``orientation``; returns the
    upright image a viewer shows (PIL's own exif_transpose of the stored pixels)."""
    stored = np.full((24, 40, 3), 40, np.uint8)
    stored[:8, :8] = (255, 0, 0)
    image = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(path) as written:
        assert written.getexif()[0x0112] == orientation
        return ImageOps.exif_transpose(written)


def red_corner(image) -> tuple[bool, bool]:
    """(top?, left?) of the red block in an image."""
    array = np.asarray(image.convert("RGB")).astype(int)
    ys, xs = np.nonzero((array[..., 0] > 200) & (array[..., 1] < 80))
    return bool(ys.mean() < array.shape[0] / 2), bool(xs.mean() < array.shape[1] / 2)


@pytest.mark.parametrize(("orientation", "corner"), [(6, (True, False)), (8, (False, True))])
def test_exif_orientation_is_applied_on_every_path(tmp_path, orientation, corner):
    path = tmp_path / f"phone-{orientation}.jpg"
    upright = exif_jpeg(path, orientation)
    assert upright.size == (24, 40) and red_corner(upright) == corner
    # opening: files, bytes, already-opened PIL images
    for image in (open_image(path), open_image(path.read_bytes()), to_rgb_image(path), to_rgb_image(str(path)),
                  to_rgb_image(Image.open(path)), decode_image(str(path)), decode_image({"bytes": path.read_bytes()})):  # fmt: skip
        assert image.size == (24, 40) and red_corner(image) == corner
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(upright.convert("RGB")))
    assert open_image(path).getexif().get(0x0112) is None
    # recover / answer / pipeline inputs go through the processor
    vae = RobustU1ImageProcessor(vae_min_size=64).vae_pixel_values(path)
    assert tuple(vae.shape) == (3, 112, 64)  # portrait: 24×40 scaled to a short side of 64
    assert to_float_tensor(path).shape == (3, 40, 24)
    # corruptions keep the orientation semantics: corrupted upright, returned without the tag
    corrupted = corrupt(Image.open(path), "robust_r1/dark_illumination", intensity=0.23, seed=0)
    assert corrupted.size == (24, 40) and red_corner(corrupted) == corner


def test_corrupt_cli_writes_exif_rotated_input_upright_without_the_tag(tmp_path):
    from robust_u1.corruptions.cli import add_corrupt_parser

    import argparse

    path, out = tmp_path / "phone.jpg", tmp_path / "out.png"
    exif_jpeg(path, 6)
    parser = argparse.ArgumentParser()
    add_corrupt_parser(parser.add_subparsers())
    args = parser.parse_args(["corrupt", str(path), str(out), "--name", "dark_illumination", "--intensity", "0.23"])
    assert args.func(args) == 0
    with Image.open(out) as written:
        assert written.size == (24, 40) and red_corner(written) == (True, False)
        assert written.getexif().get(0x0112) is None


def test_dataset_building_reads_exif_rotated_files_upright(tmp_path):
    from robust_u1.data import build_recovery_dataset, export_jsonl, load_jsonl

    folder = tmp_path / "images"
    folder.mkdir()
    exif_jpeg(folder / "phone.jpg", 8)
    pairs = build_recovery_dataset(folder, corruptions=["robust_r1/dark_illumination"], severities=[0.23],
                                   cache_dir=tmp_path / "cache")  # fmt: skip
    row = pairs[0]
    assert row["image"].size == row["target_image"].size == (24, 40)
    assert red_corner(row["target_image"]) == (False, True)
    exported = load_jsonl(export_jsonl(pairs, tmp_path / "jsonl"))
    assert exported[0]["target_image"].size == (24, 40)


# ---------------------------------------------------------------------------------- atomic writes


def test_save_image_converts_modes_the_format_cannot_hold(tmp_path):
    rgba = Image.fromarray(RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA")
    cases = {
        "RGBA": (rgba, "RGB", to_rgb_array(rgba)),
        "LA": (rgba.convert("LA"), "L", None),
        "I;16": (Image.fromarray(np.full((16, 16), 257 * 200, np.uint16)), "L", np.full((16, 16), 200)),
        "F": (Image.fromarray(np.full((16, 16), 0.5, np.float32)), "L", np.full((16, 16), 128)),
        "P": (rgba.convert("RGB").convert("P"), "RGB", None),
    }
    for mode, (image, written_mode, pixels) in cases.items():
        assert image.mode == mode
        target = tmp_path / f"{mode.replace(';', '')}.jpg"
        save_image(image, target, quality=100, subsampling=0)
        with Image.open(target) as written:
            assert written.format == "JPEG" and written.mode == written_mode, mode
            if pixels is not None:  # JPEG at quality 100 is within a few levels
                assert np.abs(np.asarray(written).astype(int) - pixels).max() <= 3, mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["F.jpg", "I16.jpg", "LA.jpg", "P.jpg", "RGBA.jpg"]


def test_a_failed_save_never_empties_an_existing_file(tmp_path, monkeypatch):
    target = tmp_path / "out.jpg"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(target)
    original = target.read_bytes()
    image = Image.new("RGB", (8, 8))

    with pytest.raises(ValueError, match=r"cannot tell the image format of 'out.xyz'; use an extension such as"):
        save_image(image, tmp_path / "out.xyz")

    def broken_encoder(self, fp, format=None, **params):
        fp.write(b"partial")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", broken_encoder)
        with pytest.raises(ValueError, match=r"cannot write a mode RGB image as JPEG \(disk full\)"):
            save_image(image, target)
    assert target.read_bytes() == original

    def broken_rename(source, destination):
        raise OSError("rename refused")

    with monkeypatch.context() as patch:
        patch.setattr(image_utils.os, "replace", broken_rename)
        with pytest.raises(OSError, match="rename refused"):
            save_image(image, target)
    assert target.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jpg"]  # no temporary file left behind


def test_corrupt_cli_writes_rgba_and_16_bit_results_to_jpeg_and_keeps_old_output_on_failure(tmp_path, capsys):
    import argparse

    from robust_u1.corruptions.cli import add_corrupt_parser

    parser = argparse.ArgumentParser()
    add_corrupt_parser(parser.add_subparsers())

    def run(*argv):
        args = parser.parse_args(["corrupt", *map(str, argv), "--name", "imagenet_c/gaussian_noise", "--severity", "2"])
        return args.func(args)

    sources = {
        "rgba.png": Image.fromarray(RNG.integers(0, 256, (24, 24, 4), dtype=np.uint8), "RGBA"),
        "sixteen.png": Image.fromarray(np.full((24, 24), 30000, np.uint16)),
        "la.png": Image.fromarray(RNG.integers(0, 256, (24, 24, 2), dtype=np.uint8), "LA"),
    }
    for name, image in sources.items():
        image.save(tmp_path / name)
        out = tmp_path / f"{name}.jpg"
        out.write_bytes(b"old")
        assert run(tmp_path / name, out) == 0
        with Image.open(out) as written:
            assert written.format == "JPEG" and written.size == (24, 24)

    existing = tmp_path / "keep.xyz"
    existing.write_bytes(b"precious")
    assert run(tmp_path / "rgba.png", existing) == 2
    assert existing.read_bytes() == b"precious"
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "cannot tell the image format of 'keep.xyz'" in error


def test_export_jsonl_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    import datasets

    from robust_u1.data import recovery

    pairs = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (8, 8))], "target_image": [Image.new("RGB", (8, 8))], "prompt": ["p"]},
        features=datasets.Features({"image": datasets.Image(), "target_image": datasets.Image(),
                                    "prompt": datasets.Value("string")}),  # fmt: skip
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.jsonl").write_text("old\n")

    def failing(value, path):
        raise OSError("disk full")

    monkeypatch.setattr(recovery, "_write_png", failing)
    with pytest.raises(OSError, match="disk full"):
        recovery.export_jsonl(pairs, out)
    assert (out / "data.jsonl").read_text() == "old\n"
    assert sorted(p.name for p in out.iterdir()) == ["clean", "corrupted", "data.jsonl"]
