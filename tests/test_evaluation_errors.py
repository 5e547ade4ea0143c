"""Bad benchmark files, foreign caches and unreachable judges: one clear error, before any answer is computed."""

import base64
import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pandas as pd
import pytest
from PIL import Image

from robust_u1.evaluation import (
    JudgeRequestError,
    OpenAICompatibleJudge,
    evaluate_benchmark,
    load_mcq_benchmark,
    load_rbench,
)
from robust_u1.evaluation.cache import JsonlCache, cache_key

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def png_base64(color=(255, 0, 0)):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def mcq_rows(count=2):
    return [
        {"index": str(row), "question": "Which colour?", "A": "red", "B": "green", "answer": "A", "image": png_base64()}
        for row in range(count)
    ]


class Answerer:
    def __init__(self):
        self.calls = 0

    def __call__(self, image, prompt, options, mode):
        self.calls += 1
        return {"answer": "A", "reasoning": None, "recovered_image": None}


# --- benchmark files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_a_local_benchmark_file_is_read_as_a_file(tmp_path, suffix):
    path = tmp_path / f"bench{suffix}"
    frame = pd.DataFrame(mcq_rows())
    if suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    bench = load_mcq_benchmark(path)
    assert bench.name == "bench"
    assert [(item.id, item.options, item.answer) for item in bench.items] == [
        ("0", {"A": "red", "B": "green"}, "A"),
        ("1", {"A": "red", "B": "green"}, "A"),
    ]
    assert bench.image(1).getpixel((0, 0)) == (255, 0, 0)


def test_a_missing_local_file_is_not_looked_up_on_the_hub(tmp_path):
    missing = tmp_path / "typo.jsonl"
    with pytest.raises(FileNotFoundError, match=f"Benchmark file {missing} does not exist"):
        load_mcq_benchmark(missing)
    with pytest.raises(FileNotFoundError, match=f"Benchmark folder {tmp_path / 'no-such-folder'} does not exist"):
        load_mcq_benchmark(tmp_path / "no-such-folder")


def test_a_benchmark_without_an_answer_column_names_the_file(tmp_path):
    path = tmp_path / "no_answer.tsv"
    pd.DataFrame(mcq_rows()).drop(columns="answer").to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=rf"{path}: an MCQ benchmark needs the columns .*missing \['answer'\]"):
        load_mcq_benchmark(path)


def test_header_only_and_empty_files_name_the_file(tmp_path):
    header_only = tmp_path / "header.tsv"
    header_only.write_text("index\tquestion\tA\tB\tanswer\timage\n")
    with pytest.raises(ValueError, match=rf"{header_only} has no rows"):
        load_mcq_benchmark(header_only)
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(ValueError, match=rf"Benchmark file {empty} is empty"):
        load_mcq_benchmark(empty)


def test_rows_without_an_answer_or_an_image_are_named(tmp_path):
    rows = mcq_rows(3)
    rows[2]["answer"] = ""
    path = tmp_path / "blank_answer.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    with pytest.raises(ValueError, match=rf"{path}: row 2 has no answer"):
        load_mcq_benchmark(path)

    rows = mcq_rows(3)
    rows[1]["image"] = ""
    path = tmp_path / "blank_image.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=rf"{path}: row 1 has no image \(1 row\(s\) without one\)"):
        load_mcq_benchmark(path)

    features = datasets.Features({"question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "image": datasets.Image()})  # fmt: skip
    table = datasets.Dataset.from_list(
        [{"question": "Q? A. x B. y", "answer": "A", "image": Image.new("RGB", (4, 4))},
         {"question": "Q? A. x B. y", "answer": "A", "image": None}], features=features,
    )  # fmt: skip
    with pytest.raises(ValueError, match="toy: row 1 has no image"):
        load_mcq_benchmark(table, name="toy")


def test_an_unreadable_image_names_its_row_when_it_is_needed(tmp_path):
    rows = mcq_rows(2)
    rows[1]["image"] = "not an image"
    path = tmp_path / "bad_image.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    bench = load_mcq_benchmark(path)
    with pytest.raises(ValueError, match=rf"{path}: the image of row 1 \(id 1\) cannot be read"):
        evaluate_benchmark(bench, Answerer(), levels=[0], modes=["baseline"], progress=False)


def test_an_unknown_file_type_is_refused(tmp_path):
    path = tmp_path / "bench.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(ValueError, match=rf"Cannot read benchmark file {path}: unknown format"):
        load_mcq_benchmark(path)


def rbench_rows():
    image = png_base64()
    return [
        {"name": f"item{row}", "question": "Which colour?", "choice": "A.red; B.blue", "answer": "A", "type": "MCQ",
         "distortion": "blur", "strength": 1, "dis_image": image, "ref_image": image}
        for row in range(2)
    ]  # fmt: skip


def test_rbench_files_are_read_locally_and_checked(tmp_path):
    from robust_u1.evaluation import ExactMatchJudge

    path = tmp_path / "rbench.jsonl"
    pd.DataFrame(rbench_rows()).to_json(path, orient="records", lines=True)
    assert len(load_rbench(ExactMatchJudge(), path, tasks=("MCQ",))) == 2
    header_only = tmp_path / "rbench.csv"
    pd.DataFrame(columns=list(rbench_rows()[0])).to_csv(header_only, index=False)
    with pytest.raises(ValueError, match=rf"{header_only} has no rows"):
        load_rbench(ExactMatchJudge(), header_only, tasks=("MCQ",))
    no_answer = tmp_path / "rbench_no_answer.jsonl"
    pd.DataFrame(rbench_rows()).drop(columns="answer").to_json(no_answer, orient="records", lines=True)
    with pytest.raises(ValueError, match=rf"{no_answer}: R-Bench rows need columns .*missing \['answer'\]"):
        load_rbench(ExactMatchJudge(), no_answer, tasks=("MCQ",))


def test_levels_that_select_nothing_are_an_error_not_an_empty_report():
    from robust_u1.evaluation import ExactMatchJudge

    bench = load_rbench(ExactMatchJudge(), datasets.Dataset.from_list(rbench_rows()), tasks=("MCQ",))
    with pytest.raises(ValueError, match=r"R-Bench has nothing to evaluate at levels \['extreme'\] in modes"):
        evaluate_benchmark(bench, Answerer(), levels=["extreme"], progress=False)


# --- the answers cache -------------------------------------------------------------------------------


def test_a_foreign_line_in_the_cache_names_the_file_and_line(tmp_path):
    cache = tmp_path / "answers.jsonl"
    cache.write_text(
        json.dumps({"key": cache_key("b", "1"), "value": {"response": "A"}}) + "\n" + json.dumps({"id": 3}) + "\n"
    )
    with pytest.raises(ValueError, match=rf"{cache}, line 2: not a robust-u1 cache entry"):
        JsonlCache(cache)


def test_a_foreign_judge_cache_fails_before_any_answer(tmp_path):
    from robust_u1.evaluation import ExactMatchJudge

    (tmp_path / "answers.judge.jsonl").write_text('{"score": 1}\n')
    answerer = Answerer()
    bench = load_rbench(ExactMatchJudge(), datasets.Dataset.from_list(rbench_rows()), tasks=("MCQ",))
    with pytest.raises(ValueError, match=r"answers.judge.jsonl, line 1: not a robust-u1 cache entry"):
        evaluate_benchmark(bench, answerer, cache_path=tmp_path / "answers.jsonl", progress=False)
    assert answerer.calls == 0


def test_a_truncated_last_line_is_still_skipped(tmp_path):
    cache = tmp_path / "answers.jsonl"
    cache.write_text(json.dumps({"key": "k", "value": {"response": "A"}}) + '\n{"key": "k2", "val')
    with pytest.warns(UserWarning, match="Ignoring 1 truncated line"):
        assert len(JsonlCache(cache)) == 1


# --- judges ------------------------------------------------------------------------------------------


class SilentServer:
    """Accepts connections (the kernel's backlog) and never answers: a hung judge endpoint."""

    def __enter__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/v1"
        return self

    def __exit__(self, *exc):
        self.socket.close()


def test_a_judge_that_never_answers_fails_after_its_timeout_and_retries():
    with SilentServer() as server:
        judge = OpenAICompatibleJudge(server.url, "m", api_key_env=None, timeout=0.3, max_retries=1, backoff=0.0)
        started = time.monotonic()
        with pytest.raises(JudgeRequestError, match=r"failed 2 times; last problem: no reply within 0.3 s"):
            judge.check()
        assert time.monotonic() - started < 3


def test_judge_check_is_one_cheap_request(judge_server):
    judge = OpenAICompatibleJudge(judge_server.url, "judge-model", api_key_env=None)
    judge.check()
    assert len(judge_server.requests) == 1 and judge_server.requests[0]["body"]["max_tokens"] == 1
    judge_server.script.extend([(401, {"error": "bad key"})] * 5)
    with pytest.raises(JudgeRequestError, match=r"refused the request: HTTP 401 \(check the API key\)"):
        judge.check()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
        ({"timeout": float("nan")}, "timeout must be a positive number of seconds, got nan"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0, got -1"),
    ],
)
def test_judge_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OpenAICompatibleJudge("http://127.0.0.1:1/v1", "m", api_key_env=None, **kwargs)
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        OpenAICompatibleJudge("127.0.0.1:1/v1", "m", api_key_env=None)


def test_a_transformers_judge_is_checked_without_loading_weights(tmp_path):
    from transformers import LlamaConfig

    from robust_u1.evaluation import TransformersJudge

    missing = tmp_path / "no-such-judge"
    with pytest.raises(FileNotFoundError, match=f"The judge model folder {missing} does not exist"):
        TransformersJudge(str(missing)).check()
    with pytest.raises(JudgeRequestError, match="The judge model nobody/no-such-judge cannot be loaded: "):
        TransformersJudge("nobody/no-such-judge").check()
    LlamaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "judge")
    TransformersJudge(str(tmp_path / "judge")).check()  # a config is enough: the weights load on first use


def test_an_unreachable_judge_stops_the_run_before_any_answer(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    judge = OpenAICompatibleJudge(f"http://127.0.0.1:{closed_port}/v1", "m", api_key_env=None, max_retries=0)
    table = datasets.Dataset.from_list(rbench_rows())
    answerer = Answerer()
    with pytest.raises(JudgeRequestError, match=r"failed 1 times; last problem: cannot connect"):
        evaluate_benchmark(load_rbench(judge, table, tasks=("MCQ",)), answerer, cache_path=tmp_path / "a.jsonl",
                           progress=False)  # fmt: skip
    assert answerer.calls == 0 and not (tmp_path / "a.jsonl").exists()


# --- the command line --------------------------------------------------------------------------------


def run_cli(capsys, *args):
    """``robust-u1 …`` in this process (a subprocess costs a torch import): exit code and our stderr lines."""
    from robust_u1.cli import main

    code = main([str(arg) for arg in args])
    stderr = capsys.readouterr().err
    return code, [line for line in stderr.splitlines() if line.strip()]


def assert_one_line_error(code, lines, *fragments):
    assert code == 2, lines
    assert len(lines) == 1, lines  # in particular no "Using the bundled TinyWorld model": it was never loaded
    assert lines[0].startswith("robust-u1 eval: error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_a_missing_local_file_is_one_line_not_a_hub_lookup(tmp_path):
    """As a user runs it (a subprocess): exit 2, one line of ours, no traceback."""
    missing = tmp_path / "typo.jsonl"
    result = subprocess.run([sys.executable, "-m", "robust_u1", "eval", str(missing), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # This venv's torch / kernels packages print import-time notices of their own; count only our lines.
    ours = [line for line in result.stderr.splitlines() if line.startswith("robust-u1")]
    assert ours == [f"robust-u1 eval: error: Benchmark file {missing} does not exist."]


def test_cli_bad_benchmark_files_are_one_line(tmp_path, capsys):
    no_answer = tmp_path / "no_answer.tsv"
    pd.DataFrame(mcq_rows()).drop(columns="answer").to_csv(no_answer, sep="\t", index=False)
    code, lines = run_cli(capsys, "eval", "MMMB", "--source", no_answer, "--output", tmp_path / "out")
    assert_one_line_error(code, lines, str(no_answer), "missing ['answer']")
    header_only = tmp_path / "header.jsonl"
    header_only.write_text("")
    code, lines = run_cli(capsys, "eval", header_only, "--output", tmp_path / "out")
    assert_one_line_error(code, lines, f"Benchmark file {header_only} is empty")
    code, lines = run_cli(capsys, "eval", "MMMB", "--source", FIXTURES / "mmmb_tiny.tsv", "--output", tmp_path / "out",
                          "--levels", "low")  # fmt: skip
    assert_one_line_error(code, lines, "--levels for a multiple-choice benchmark are percentages 0..100")


def test_cli_foreign_cache_line_is_one_line_before_the_model_loads(tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "answers.jsonl").write_text('{"question_id": 1, "text": "A"}\n')
    code, lines = run_cli(capsys, "eval", "MMMB", "--source", FIXTURES / "mmmb_tiny.tsv", "--output", output)
    assert_one_line_error(code, lines, f"{output / 'answers.jsonl'}, line 1: not a robust-u1 cache entry")


def test_cli_judge_without_key_or_answer_is_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch):
    source = tmp_path / "rbench.jsonl"
    pd.DataFrame(rbench_rows()).to_json(source, orient="records", lines=True)
    common = ["eval", "R-Bench", "--source", source, "--output", tmp_path / "out", "--judge", "openai",
              "--judge-model", "judge"]  # fmt: skip
    with SilentServer() as server:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        code, lines = run_cli(capsys, *common, "--judge-url", server.url)
        assert_one_line_error(code, lines, "needs an API key in the environment variable OPENAI_API_KEY")
        monkeypatch.setenv("OPENAI_API_KEY", "key")
        started = time.monotonic()
        code, lines = run_cli(capsys, *common, "--judge-url", server.url, "--judge-timeout", "0.5", "--judge-retries", "1")
        assert_one_line_error(code, lines, f"{server.url}/chat/completions failed 2 times", "no reply within 0.5 s")
        assert time.monotonic() - started < 10
    code, lines = run_cli(capsys, *common, "--judge-url", "http://127.0.0.1:1/v1", "--judge-timeout", "0")
    assert_one_line_error(code, lines, "timeout must be a positive number of seconds, got 0")
    assert not (tmp_path / "out" / "answers.jsonl").exists()


def test_cli_loads_the_model_only_when_an_answer_is_missing(tmp_path, capsys, monkeypatch):
    import robust_u1.cli

    loads = []

    class StubModel:
        def as_answerer(self, **kwargs):
            return lambda image, prompt, options, mode: {"answer": "A", "reasoning": None, "recovered_image": None}

    monkeypatch.setattr(robust_u1.cli, "_load", lambda model, dtype: loads.append(model) or StubModel())
    args = ["eval", "MMMB", "--source", FIXTURES / "mmmb_tiny.tsv", "--output", tmp_path / "out", "--levels", "0",
            "--modes", "baseline", "--limit", "2"]  # fmt: skip
    assert run_cli(capsys, *args)[0] == 0 and loads == ["tinyworld"]
    assert run_cli(capsys, *args)[0] == 0 and loads == ["tinyworld"]  # everything cached: no model load
    assert len((tmp_path / "out" / "answers.jsonl").read_text().splitlines()) == 2
