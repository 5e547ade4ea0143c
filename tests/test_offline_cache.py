"""Hub ids load from the local Hugging Face cache with HF_HUB_OFFLINE=1 (issue 14 item 3), both layouts,
through every entry point; an uncached id and a cached repo without weights are one clear line."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hub_cache import add_to_hub_cache

OFFICIAL_FILES = ["llm_config.json", "vit_config.json", "ae_params.json", "bagel_config.json", "ema.safetensors", "ae.safetensors"]

SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    import numpy as np, torch
    from PIL import Image
    import robust_u1
    from robust_u1 import RobustU1ForConditionalGeneration
    from robust_u1.cli import main
    from transformers import AutoModel, AutoProcessor, pipeline

    parity_dir, work = sys.argv[1], sys.argv[2]
    out = {}
    model = RobustU1ForConditionalGeneration.from_pretrained("org/tiny-hf")
    out["hf"] = [type(model).__name__, type(model.processor).__name__]
    official = RobustU1ForConditionalGeneration.from_pretrained("org/bagel-tiny")
    local = RobustU1ForConditionalGeneration.from_pretrained(parity_dir)
    out["official_equal"] = all(torch.equal(t, local.state_dict()[k]) for k, t in official.state_dict().items())
    out["auto_model"] = type(AutoModel.from_pretrained("org/tiny-hf")).__name__
    out["auto_processor"] = type(AutoProcessor.from_pretrained("org/tiny-hf")).__name__
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    image.save(f"{work}/in.png")
    vqa = pipeline("robust-vqa", model="org/tiny-hf")
    out["pipeline"] = sorted(vqa({"image": image, "question": "Which?", "options": ["a", "b"]}, recover=False, max_new_tokens=2))
    for repo in ("org/not-cached", "org/config-only", "org/official-no-weights"):
        try:
            RobustU1ForConditionalGeneration.from_pretrained(repo)
            out[repo] = None
        except Exception as error:
            out[repo] = [type(error).__name__, str(error)]

    def cli(*argv):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(list(argv))
        return [code, stdout.getvalue(), stderr.getvalue()]

    out["cli_convert"] = cli("convert", "org/bagel-tiny", f"{work}/converted")
    out["cli_ask"] = cli("ask", f"{work}/in.png", "Which?", "--model", "org/tiny-hf", "--no-recover", "--max-new-tokens", "2")
    out["cli_uncached"] = cli("ask", f"{work}/in.png", "Which?", "--model", "org/not-cached", "--no-recover")
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def offline_results(parity_dir, tmp_path_factory):
    from robust_u1.tiny import tiny_random_model

    work = tmp_path_factory.mktemp("offline")
    cache = work / "hub"
    model, processor = tiny_random_model(seed=0)
    model.save_pretrained(work / "tiny-hf")
    processor.save_pretrained(work / "tiny-hf")
    add_to_hub_cache(cache, "org/tiny-hf", work / "tiny-hf")
    add_to_hub_cache(cache, "org/bagel-tiny", parity_dir, OFFICIAL_FILES)
    add_to_hub_cache(cache, "org/config-only", work / "tiny-hf", ["config.json"])
    add_to_hub_cache(cache, "org/official-no-weights", parity_dir, ["llm_config.json", "vit_config.json", "ae.safetensors"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(work / "home"), "OMP_NUM_THREADS": "1"}
    env.pop("TRANSFORMERS_CACHE", None)
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(parity_dir), str(work)], env=env, capture_output=True, text=True, timeout=600
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT") :]), cache


def test_cached_ids_load_offline_through_every_entry_point(offline_results):
    results, _ = offline_results
    assert results["hf"] == ["RobustU1ForConditionalGeneration", "RobustU1Processor"]
    assert results["official_equal"] is True
    assert results["auto_model"] == "RobustU1ForConditionalGeneration"
    assert results["auto_processor"] == "RobustU1Processor"
    assert results["pipeline"] == ["answer", "option", "reasoning", "recovered_image"]
    code, stdout, stderr = results["cli_convert"]
    assert code == 0 and "Wrote the Hugging Face layout" in stdout, stderr
    code, stdout, stderr = results["cli_ask"]
    assert code == 0 and "Answer:" in stdout, stderr


def test_uncached_id_is_one_line_naming_it(offline_results):
    results, cache = offline_results
    kind, message = results["org/not-cached"]
    assert kind == "OSError"
    assert message.startswith(f"org/not-cached is neither a local folder nor in the local Hugging Face cache ({cache}), and the Hub is offline")
    assert "hf download org/not-cached" in message and "\n" not in message
    code, stdout, stderr = results["cli_uncached"]
    assert code == 2 and stderr.count("\n") == 1
    assert stderr.startswith("robust-u1 ask: error: org/not-cached is neither a local folder nor in the local Hugging Face cache")


def test_cached_repo_without_weights_names_the_file(offline_results):
    results, _ = offline_results
    kind, message = results["org/config-only"]
    assert kind == "FileNotFoundError" and "has config.json but no weights: expected model.safetensors" in message
    kind, message = results["org/official-no-weights"]
    assert kind == "FileNotFoundError" and "expected one of ema.safetensors, model.safetensors, model_bf16.safetensors" in message


@pytest.fixture
def online_hub(monkeypatch, tmp_path):
    """The online path with the Hub's file listing and download replaced (no network in tests)."""
    import huggingface_hub
    from huggingface_hub import constants

    listings, downloads = {}, []

    def list_repo_files(self, repo_id, revision=None):
        if repo_id not in listings:
            import httpx
            from huggingface_hub.errors import RepositoryNotFoundError

            response = httpx.Response(404, request=httpx.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
            raise RepositoryNotFoundError(f"404 {repo_id}", response=response)
        return listings[repo_id]

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):
        downloads.append((repo_id, allow_patterns))
        return str(tmp_path)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return listings, downloads


def test_online_repos_without_weights_name_the_missing_file(online_hub):
    from robust_u1.loading import locate_checkpoint

    listings, downloads = online_hub
    listings["org/official-no-weights"] = ["llm_config.json", "vit_config.json", "ae.safetensors"]  # was a bare StopIteration
    with pytest.raises(FileNotFoundError, match=r"^org/official-no-weights has the official config files but no weights: expected one of ema.safetensors"):
        locate_checkpoint("org/official-no-weights")
    listings["org/official-no-vae"] = ["llm_config.json", "vit_config.json", "ema.safetensors"]
    with pytest.raises(FileNotFoundError, match=r"^org/official-no-vae has no VAE: expected ae.safetensors"):
        locate_checkpoint("org/official-no-vae")
    listings["org/config-only"] = ["config.json", "tokenizer.json"]
    with pytest.raises(FileNotFoundError, match=r"^org/config-only has config.json but no weights: expected model.safetensors"):
        locate_checkpoint("org/config-only")
    with pytest.raises(OSError, match=r"^org/missing is neither a local folder nor a Hub repository you can read"):
        locate_checkpoint("org/missing")
    assert downloads == []  # nothing is downloaded before the listing says the checkpoint is complete
    listings["org/release"] = ["llm_config.json", "vit_config.json", "ae.safetensors", "model_bf16.safetensors", "README.md"]
    location = locate_checkpoint("org/release")
    assert location.layout == "official"
    assert downloads == [("org/release", ["*.json", "*.txt", "*.model", "ae.safetensors", "model_bf16.safetensors"])]
    listings["org/hf"] = ["config.json", "model.safetensors"]
    assert tuple(locate_checkpoint("org/hf")) == ("hf", None)  # transformers downloads it itself
