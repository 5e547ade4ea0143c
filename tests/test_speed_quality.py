"""examples/tinyworld/speed_quality.py: the quality / speed table and plot of recovery settings."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "examples" / "tinyworld" / "speed_quality.py"


def load_script():
    spec = importlib.util.spec_from_file_location("tinyworld_speed_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_writes_table_plot_and_results(tmp_path):
    """End to end on two test images (the README's figures use 128 per level); ≈ 1 min on a busy CPU."""
    results = load_script().main(["--output", str(tmp_path), "--images", "2", "--levels", "mid", "--threads", "1"])

    assert [(r["steps"], r["taylorseer"]) for r in results] == [(s, ts) for s in (10, 25, 50) for ts in (False, True)]
    assert json.loads((tmp_path / "speed_quality.json").read_text())["results"] == results
    exact, taylorseer = results[4], results[5]  # 50 schedule points: TaylorSeer changes the result, a little
    assert exact["psnr"] != taylorseer["psnr"] and abs(exact["psnr"] - taylorseer["psnr"]) < 1.0
    assert all(r["psnr"] > 15 and 0 <= r["accuracy"] <= 1 and r["ms_per_image"] > 0 for r in results)
    table = (tmp_path / "speed_quality.md").read_text().splitlines()
    assert len(table) == 8 and table[7].startswith("| mid | 50 | on |")
    assert (tmp_path / "speed_quality.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [(["--images", "0"], "--images must be at least 1, got 0."), (["--levels", "extreme"], "--levels ['extreme'] unknown")],
)
def test_bad_arguments_are_one_line_before_any_work(tmp_path, capsys, argv, message):
    script = load_script()
    capsys.readouterr()  # import-time warnings of other libraries
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--output", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


def test_table_and_plot_of_given_results(tmp_path):
    script = load_script()
    results = [
        {"level": "mid", "steps": s, "taylorseer": ts, "psnr": 20.0 + s / 100, "ssim": 0.7, "accuracy": 0.85,
         "ms_per_image": 10.0 * s / (2 if ts else 1), "cpu_ms_per_image": 9.0 * s}
        for s in (10, 50) for ts in (False, True)
    ]  # fmt: skip
    table = script.markdown_table(results).splitlines()
    assert table[0].startswith("| level | schedule points | TaylorSeer | PSNR (dB) | SSIM | accuracy I_c + I_r (%)")
    assert table[5] == "| mid | 50 | on | 20.50 | 0.700 | 85.0 | 250.0 | 450.0 |"
    script.plot(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000 and not list(tmp_path.glob(".*tmp*"))
