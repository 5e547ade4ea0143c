"""Memory planning from the config alone (issue 14 item 4): BAGEL-7B-MoT's figures from a config-only fixture."""

from pathlib import Path

import pytest

from robust_u1.cli import main
from robust_u1.memory import estimate_memory

BAGEL_7B = Path(__file__).parent / "fixtures" / "bagel-7b-mot-config"
GIB = 2**30


@pytest.fixture(scope="module")
def estimates():
    return {(size, mode): estimate_memory(BAGEL_7B, size, mode) for size in (512, 1024) for mode in (None, "int8", "nf4")}


def test_bagel_7b_weights_match_its_parameter_count(estimates):
    # 14.69 B parameters (BAGEL-7B-MoT: ≈14.6 B in ema.safetensors + the 84 M-parameter FLUX VAE) × 2 bytes.
    assert estimates[1024, None].weights == pytest.approx(14.69e9 * 2, rel=2e-3)
    assert estimates[1024, None].weights / GIB == pytest.approx(27.36, abs=0.01)
    # Quantized: the decoder / ViT Linear weights shrink, embeddings, head, VAE and projections do not.
    assert estimates[1024, "int8"].weights / GIB == pytest.approx(14.85, abs=0.01)
    assert estimates[1024, "nf4"].weights / GIB == pytest.approx(9.36, abs=0.01)


def test_kv_caches_follow_the_token_counts(estimates):
    large, small = estimates[1024, None], estimates[512, None]
    # 1024² → 64×64 = 4096 VAE tokens and 980² → 70×70 = 4900 ViT tokens; 512² → 1024 and 37² = 1369.
    assert (large.tokens["vae_image"], large.tokens["vit_image"]) == (4096, 4900)
    assert (small.tokens["vae_image"], small.tokens["vit_image"]) == (1024, 1369)
    assert large.tokens == {"gen": 9034, "cfg_text": 9000, "cfg_img": 34, "vae_image": 4096, "vit_image": 4900}
    per_token = 28 * 2 * 4 * 128 * 2  # layers × (K, V) × KV heads × head dim × bf16 = 56 KiB (README)
    assert large.kv_caches == {name: count * per_token for name, count in [("gen", 9034), ("cfg_text", 9000), ("cfg_img", 34)]}
    assert estimates[1024, "nf4"].kv_caches == large.kv_caches  # caches stay bf16 in every mode
    assert large.total == large.weights + large.kv_cache + large.activations
    assert large.activations > small.activations > 0


def test_estimate_memory_cli_prints_the_table(capsys):
    assert main(["estimate-memory", "--model", str(BAGEL_7B), "--image-size", "1024", "--quantize", "nf4"]) == 0
    out = capsys.readouterr().out
    assert "| NF4 | 1024² | 9.36 GiB | 0.96 GiB (0.48 / 0.48 / 0.00) |" in out
    assert "KV tokens: gen 9034, cfg_text 9000, cfg_img 34 (4096 VAE + 4900 ViT image tokens)" in out


def test_estimate_memory_errors_are_one_line(capsys, tmp_path):
    assert main(["estimate-memory", "--model", str(tmp_path / "missing"), "--image-size", "1024"]) == 2
    err = capsys.readouterr().err
    assert err == f"robust-u1 estimate-memory: error: No such folder: {tmp_path / 'missing'} (and it is not a Hub repository id either); check the path.\n"
    assert main(["estimate-memory", "--model", str(BAGEL_7B), "--image-size", "8"]) == 2
    assert capsys.readouterr().err == "robust-u1 estimate-memory: error: --image-size must be at least 16 pixels, got 8.\n"
