"""The robust-u1 command line, run as a user would (subprocesses), and Hub pushes without network."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "corrupted_example.png"
FAST = ["--steps", "3"]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "robust_u1", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_readme_quick_start_answers_with_the_bundled_model(tmp_path):
    """The README's quick-start command (run from a fresh clone, relative paths) with its defaults."""
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "robust-u1 ask examples/corrupted_example.png" in line)
    words = shlex.split(command[command.index("robust-u1 ask") :])
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / EXAMPLE.name).write_bytes(EXAMPLE.read_bytes())
    result = cli(*words[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bundled TinyWorld model" in result.stderr
    saved = words[words.index("--save-recovered") + 1]
    assert f"Recovered image: {saved}" in result.stdout
    assert re.search(r"^Answer: .+", result.stdout, re.MULTILINE)
    assert re.search(r"^Option: [ABC] \((circle|square|triangle)\)$", result.stdout, re.MULTILINE), result.stdout
    assert Image.open(tmp_path / saved).size == Image.open(EXAMPLE).size


def test_recover_writes_the_image(tmp_path):
    out = tmp_path / "nested" / "restored.png"
    result = cli("recover", EXAMPLE, out, *FAST)
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == Image.open(EXAMPLE).size


@pytest.mark.parametrize("kind", ["missing", "not-an-image", "truncated"])
def test_bad_input_is_one_clear_line(tmp_path, kind):
    path = tmp_path / "input.png"
    if kind == "not-an-image":
        path.write_text("hello")
    elif kind == "truncated":
        path.write_bytes(EXAMPLE.read_bytes()[:200])
    result = cli("recover", path, tmp_path / "out.png", *FAST)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("robust-u1")]
    assert len(lines) == 1 and str(path) in lines[0]
    assert "Traceback" not in result.stderr


def test_convert_cli(parity_dir, tmp_path):
    result = cli("convert", parity_dir, tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "robust_u1"


def test_eval_cli_writes_tables_plot_json_and_resumes(tmp_path):
    args = ["eval", "MMMB", "--source", ROOT / "tests/fixtures/eval/mmmb_tiny.tsv", "--output", tmp_path / "report",
            "--levels", "0", "100", "--limit", "2", "--max-new-tokens", "2", *FAST]  # fmt: skip
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    report = tmp_path / "report"
    assert (report / "report.md").read_text().count("|") > 10
    assert (report / "accuracy_vs_level.png").stat().st_size > 1000
    answers = (report / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 2 * 2 * 2 + 2  # items × levels × (baseline, recover) + oracle once per item
    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert (report / "answers.jsonl").read_text().splitlines() == answers  # nothing answered twice
    assert json.loads((report / "results.json").read_text())[0]["benchmark"] == "MMMB"


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records what would be created and committed."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, repo_id, folder_path, commit_message, ignore_patterns):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, files, commit_message, ignore_patterns))
        return type("Commit", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()


@pytest.mark.parametrize("lora", [True, False], ids=["adapter", "full-model"])
def test_push_artifact_commits_the_stage_output_with_card_and_results(tmp_path, lora):
    from datasets import Dataset

    from robust_u1 import FlowMatchingConfig, FlowMatchingTrainer, generation_lora_config
    from robust_u1.evaluation import BenchmarkResults
    from robust_u1.hub import push_artifact
    from robust_u1.tiny import tiny_random_model

    model, _ = tiny_random_model()
    rows = [{"image": Image.fromarray(np.zeros((32, 32, 3), np.uint8)), "target_image": Image.fromarray(np.ones((32, 32, 3), np.uint8))}]
    args = FlowMatchingConfig(str(tmp_path / "sft"), max_steps=1, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    peft_config = generation_lora_config(r=2, lora_alpha=4) if lora else None
    trainer = FlowMatchingTrainer(model, args, train_dataset=Dataset.from_list(rows), peft_config=peft_config)
    trainer.train()
    trainer.save_model()
    trainer.create_model_card(dataset_name="me/pairs")
    results = BenchmarkResults("MMStar", "mcq", "sft", [0, 100], [], {"recover": {"accuracy": {0: 0.5, 100: 0.25}}})

    api = RecordingHfApi()
    url = push_artifact(tmp_path / "sft", "me/robust-u1-sft", results=[results], private=True, api=api)
    assert url == "https://hub/me/robust-u1-sft/commit/1"
    assert api.calls[0] == ("create_repo", "me/robust-u1-sft", {"private": True, "exist_ok": True})
    _, repo, files, message, _ = api.calls[1]
    kind = "adapter" if lora else "model"
    assert repo == "me/robust-u1-sft" and message == f"Upload Robust-U1 {kind}"
    weights = {"adapter_config.json", "adapter_model.safetensors"} if lora else {"config.json", "model.safetensors"}
    assert weights | {"README.md", "processor_config.json", "tokenizer.json"} <= set(files)
    card = (tmp_path / "sft" / "README.md").read_text()
    assert "FlowMatchingTrainer" in card and "me/pairs" in card
    assert ("PeftModel.from_pretrained" in card) == lora
    assert "model-index" in card and "Accuracy (recover, 100%)" in card and "value: 25.0" in card


def test_push_refuses_a_folder_without_artifact(tmp_path):
    from robust_u1.hub import push_artifact

    with pytest.raises(ValueError, match="holds no model, adapter or processor"):
        push_artifact(tmp_path, "me/empty", api=RecordingHfApi())
