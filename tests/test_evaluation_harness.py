"""End-to-end harness tests: tiny MMStar / RealWorldQA / MMMB / R-Bench fixtures, a colour-reading fake model."""

import json
import math
import threading
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from PIL import Image

from robust_u1.evaluation import (
    ExactMatchJudge,
    RBenchBenchmark,
    evaluate_benchmark,
    load_mcq_benchmark,
    load_rbench,
    mcq_table,
    model_index_results,
    rbench_table,
    write_report,
)
from robust_u1.evaluation.options import final_answer_text
from robust_u1.evaluation.prompts import RECOVERY_PROMPT

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
PALETTE = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
STRENGTH_PERCENT = {1: 25, 2: 50, 3: 100}


def solid(color: str) -> Image.Image:
    return Image.new("RGB", (32, 32), PALETTE[color])


def degrade(image, level, seed):
    """Fade towards grey (97 % at level 100) plus seeded noise: hue survives but weakens."""
    alpha = 0.97 * level / 100
    noise = np.random.default_rng(seed).normal(0.0, 2.0, (image.height, image.width, 3))
    faded = np.asarray(image, dtype=np.float64) * (1 - alpha) + 128 * alpha + noise
    return Image.fromarray(np.clip(faded.round(), 0, 255).astype(np.uint8))


def perceived_color(image, *, stretch):
    """The palette colour closest to the mean; "recovery" stretches faded colours back to full contrast."""
    deviation = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0) - 128
    if stretch:
        if np.abs(deviation).max() < 2:
            return None
        deviation = deviation * 127 / np.abs(deviation).max()
    elif np.abs(deviation).max() < 20:
        return None
    return min(PALETTE, key=lambda name: float(((np.array(PALETTE[name]) - (128 + deviation)) ** 2).sum()))


class ColorAnswerer:
    """Reads the image colour; guesses "A" when it cannot tell. Optionally crashes after ``fail_after`` answers."""

    def __init__(self, fail_after=None):
        self.fail_after = fail_after
        self.calls = []

    def __call__(self, image, question, options, mode):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls.append((question, mode))
        color = perceived_color(image, stretch=mode == "recover")
        if options:
            letter = next((key for key, text in options.items() if color and color in text.lower()), "A")
            reply = {
                "baseline": f"The answer is ({letter}).",
                "recover": f"<think>After restoring, the image looks {color}.</think><ANSWER>{letter}</ANSWER>",
                "oracle": f"{letter}. {options[letter]}",
            }[mode]
        elif "describe" in question.lower():
            reply = f"A plain {color} image." if color else "I cannot tell."
        else:
            reply = color or "I cannot tell."
        return {"answer": reply, "reasoning": None, "recovered_image": None}


def fixture_rows(name):
    rows = [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]
    for row in rows:
        row["image"] = solid(row.pop("fixture_color"))
    return rows


@pytest.fixture(scope="module")
def mmstar_parquet(tmp_path_factory):
    features = datasets.Features(
        {
            "index": datasets.Value("int64"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "category": datasets.Value("string"),
            "l2_category": datasets.Value("string"),
            "image": datasets.Image(),
        }
    )
    path = tmp_path_factory.mktemp("mmstar") / "mmstar_tiny.parquet"
    datasets.Dataset.from_list(fixture_rows("mmstar_tiny.jsonl"), features=features).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def realworldqa_dataset():
    features = datasets.Features(
        {"question": datasets.Value("string"), "answer": datasets.Value("string"), "image": datasets.Image()}
    )
    return datasets.Dataset.from_list(fixture_rows("realworldqa_tiny.jsonl"), features=features)


@pytest.fixture(scope="module")
def benchmarks(mmstar_parquet, realworldqa_dataset):
    with pytest.warns(UserWarning, match="1 item"):
        realworldqa = load_mcq_benchmark(realworldqa_dataset, name="RealWorldQA")
    return [
        load_mcq_benchmark(FIXTURES / "mmmb_tiny.tsv", name="MMMB"),
        load_mcq_benchmark(mmstar_parquet, name="MMStar"),
        realworldqa,
    ]


def test_loaders_normalise_each_format(benchmarks):
    mmmb, mmstar, realworldqa = benchmarks
    assert [item.id for item in mmmb.items] == ["1", "2", "3", "4"]
    assert mmmb.items[2].options == {"A": "red", "B": "green", "C": "blue"}  # empty D dropped
    assert mmmb.items[3].category == "scene"
    # Row 4's image is "1": VLMEvalKit's reference to row 1's image.
    assert mmmb.image(mmmb.items[3].row).getpixel((0, 0)) == (255, 0, 0)

    assert mmstar.items[1].question == "Hint: look at the whole picture.\nWhich color is shown?"
    assert mmstar.items[1].options == {"A": "yellow", "B": "blue", "C": "green", "D": "red"}
    assert mmstar.items[2].options["C"] == "a yellow picture."
    assert mmstar.items[0].category == "coarse perception"
    assert mmstar.image(0).getpixel((3, 3)) == (255, 0, 0)

    assert realworldqa.items[0].question == "Which color is the wall in front of the camera?"
    assert realworldqa.items[0].options == {"A": "red", "B": "green", "C": "blue"}
    assert realworldqa.items[2].options == {}  # open question
    assert {item.category for item in realworldqa.items} == {"all"}
    assert [item.id for item in realworldqa.items] == ["0", "1", "2"]


def test_mcq_benchmarks_end_to_end(benchmarks, tmp_path):
    answerer = ColorAnswerer()
    results = [
        evaluate_benchmark(
            bench,
            answerer,
            degrade=degrade,
            cache_path=tmp_path / f"{bench.name}.jsonl",
            model_name="stub",
            progress=False,
        )
        for bench in benchmarks
    ]
    # 10 items × (4 baseline levels + 4 recover levels + 1 clean oracle).
    assert len(answerer.calls) == 10 * 9
    assert all((RECOVERY_PROMPT in prompt) == (mode == "recover") for prompt, mode in answerer.calls)

    mmmb, mmstar, realworldqa = results
    assert mmmb.metrics["baseline"]["accuracy"] == {0: 0.75, 25: 0.75, 50: 0.75, 100: 0.25}
    assert mmmb.metrics["baseline"]["drop_from_clean"] == {25: 0.0, 50: 0.0, 100: 0.5}
    assert mmmb.metrics["baseline"]["per_category"][100] == {"color": 0.5, "scene": 0.0}
    assert mmmb.metrics["recover"]["accuracy"] == {0: 0.75, 25: 0.75, 50: 0.75, 100: 0.75}
    assert mmmb.metrics["oracle"]["accuracy"] == {0: 0.75}
    assert mmstar.metrics["baseline"]["accuracy"][100] == pytest.approx(1 / 3)
    assert mmstar.metrics["recover"]["accuracy"][100] == 1.0
    assert realworldqa.metrics["baseline"]["accuracy"] == {0: 1.0, 25: 1.0, 50: 1.0, 100: 0.0}
    assert realworldqa.metrics["recover"]["accuracy"][100] == 1.0

    record = next(r for r in mmmb.records if r["item_id"] == "4" and r["mode"] == "recover" and r["level"] == 100)
    assert record["prediction"] == "A" and record["answer"] == "D" and not record["correct"]

    table = mcq_table(results)
    assert table.splitlines()[0] == (
        "| Method | MMMB clean/25%/50%/100% | MMStar clean/25%/50%/100% | RealWorldQA clean/25%/50%/100% |"
    )
    assert (
        "| stub (baseline) | 75.00/75.00/75.00/25.00 | 100.00/100.00/100.00/33.33 | 100.00/100.00/100.00/0.00 |"
        in table
    )
    assert "| stub (oracle) | 75.00/–/–/– |" in table

    written = write_report(results, tmp_path / "report")
    assert written["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(written["json"].read_text())
    assert [entry["benchmark"] for entry in saved] == ["MMMB", "MMStar", "RealWorldQA"]
    assert saved[0]["metrics"]["baseline"]["accuracy"]["100"] == 0.25
    assert len(saved[0]["records"]) == 4 * 9
    markdown = written["markdown"].read_text()
    assert "## Anti-degradation" in markdown and "| color | " in markdown
    assert "Recovery SSIM" in markdown and "σ = 1.5, 11 × 11 taps, mean over the valid region" in markdown


def test_model_index_metadata_round_trips_through_a_model_card(benchmarks):
    results = [evaluate_benchmark(benchmarks[0], ColorAnswerer(), degrade=degrade, model_name="stub", progress=False)]
    entries = model_index_results(results, modes=["recover"])
    assert all(isinstance(entry, EvalResult) for entry in entries)
    assert [(entry.metric_name, entry.metric_value) for entry in entries] == [
        ("Accuracy (recover, clean)", 75.0),
        ("Accuracy (recover, 25%)", 75.0),
        ("Accuracy (recover, 50%)", 75.0),
        ("Accuracy (recover, 100%)", 75.0),
    ]
    assert entries[0].dataset_type == "AIDC-AI/Parrot-dataset"

    card = ModelCard.from_template(ModelCardData(model_name="Robust-U1", eval_results=entries))
    reloaded = ModelCard(str(card)).data
    model_index = reloaded.to_dict()["model-index"]
    assert model_index[0]["name"] == "Robust-U1"
    assert [metric["value"] for metric in model_index[0]["results"][0]["metrics"]] == [75.0] * 4
    assert len(reloaded.eval_results) == 4


def test_a_crashed_run_resumes_without_redoing_finished_items(benchmarks, tmp_path):
    mmmb = benchmarks[0]
    cache = tmp_path / "mmmb.jsonl"
    crashing = ColorAnswerer(fail_after=13)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate_benchmark(mmmb, crashing, degrade=degrade, cache_path=cache, progress=False)
    assert len(cache.read_text().splitlines()) == 13

    resumed_answerer = ColorAnswerer()
    resumed = evaluate_benchmark(mmmb, resumed_answerer, degrade=degrade, cache_path=cache, progress=False)
    assert len(resumed_answerer.calls) == 4 * 9 - 13

    uninterrupted = evaluate_benchmark(
        mmmb, ColorAnswerer(), degrade=degrade, cache_path=tmp_path / "fresh.jsonl", progress=False
    )
    assert resumed.records == uninterrupted.records
    assert resumed.metrics == uninterrupted.metrics

    # A write cut short by a kill leaves a partial last line; it is ignored and the run still resumes.
    with cache.open("a") as handle:
        handle.write('{"key": "[\\"MMMB\\", \\"1\\"')
    idle_answerer = ColorAnswerer()
    with pytest.warns(UserWarning, match="truncated"):
        again = evaluate_benchmark(mmmb, idle_answerer, degrade=degrade, cache_path=cache, progress=False)
    assert idle_answerer.calls == [] and again.metrics == uninterrupted.metrics

    # A different seed is a different key: everything degraded is answered again, appended after the partial line.
    reseeded_answerer = ColorAnswerer()
    with pytest.warns(UserWarning, match="truncated"):
        evaluate_benchmark(mmmb, reseeded_answerer, degrade=degrade, seed=1, cache_path=cache, progress=False)
    assert len(reseeded_answerer.calls) == 4 * 9
    with pytest.warns(UserWarning, match="truncated"):
        evaluate_benchmark(mmmb, ColorAnswerer(fail_after=0), degrade=degrade, seed=1, cache_path=cache, progress=False)


def test_pre_degraded_dataset_uses_its_level_column(tmp_path):
    rows = []
    for item_id, color, answer in [("a", "red", "A"), ("b", "green", "B")]:
        for level in (0, 100):
            image = solid(color) if level == 0 else degrade(solid(color), level, seed=7)
            rows.append(
                {
                    "id": item_id,
                    "question": "Color?\nA. red\nB. green",
                    "answer": answer,
                    "level": level,
                    "image": image,
                }
            )
    bench = load_mcq_benchmark(datasets.Dataset.from_list(rows), name="predegraded")
    answerer = ColorAnswerer()
    results = evaluate_benchmark(bench, answerer, progress=False)
    assert results.levels == [0, 100]
    assert results.metrics["baseline"]["accuracy"] == {0: 1.0, 100: 0.5}  # "A" guessed at level 100
    assert results.metrics["recover"]["accuracy"] == {0: 1.0, 100: 1.0}
    assert results.metrics["oracle"]["accuracy"] == {0: 1.0}
    with pytest.raises(ValueError, match="lacks rows"):
        evaluate_benchmark(bench, answerer, levels=[50], progress=False)


def test_clean_only_benchmark_needs_a_degrader_for_corrupted_levels(benchmarks):
    with pytest.raises(ValueError, match="pass degrade="):
        evaluate_benchmark(benchmarks[0], ColorAnswerer(), levels=[0, 50], progress=False)
    with pytest.raises(ValueError, match="Unknown modes"):
        evaluate_benchmark(benchmarks[0], ColorAnswerer(), modes=["restore"], progress=False)


class ColorWordJudge:
    """A deterministic stand-in for an LLM judge: MCQ by exact match, VQA/CAP by shared colour words."""

    name = "color-word"
    tasks = ("MCQ", "VQA", "CAP")

    def __init__(self):
        self.calls = 0
        self._lock = threading.Lock()  # the benchmark judges concurrently

    def score(self, task, question, choices, reference, response):
        with self._lock:
            self.calls += 1
        if task == "MCQ":
            return ExactMatchJudge().score(task, question, choices, reference, response)
        references = [reference] if isinstance(reference, str) else reference
        words = {color for color in PALETTE for text in references if color in text.lower()}
        return float(any(color in response.lower() for color in words))


@pytest.fixture(scope="module")
def rbench_dataset():
    rows = [json.loads(line) for line in (FIXTURES / "rbench_tiny.jsonl").read_text().splitlines()]
    for row in rows:
        clean = solid(row.pop("fixture_color"))
        row["ref_image"] = clean
        row["dis_image"] = degrade(clean, STRENGTH_PERCENT[row["strength"]], seed=3)
    return datasets.Dataset.from_list(rows)


def test_rbench_end_to_end_absolute_and_relative(rbench_dataset, tmp_path):
    judge = ColorWordJudge()
    bench = load_rbench(judge, rbench_dataset)
    answerer = ColorAnswerer()
    cache = tmp_path / "rbench.jsonl"
    results = evaluate_benchmark(bench, answerer, cache_path=cache, model_name="stub", progress=False)
    assert len(answerer.calls) == 6 * 3
    assert results.levels == ["low", "mid", "high"]

    baseline = results.metrics["baseline"]
    # Item 2 (MCQ, high) is mislabelled: the blind guess "A" matches the label, the clean answer "B" does not.
    assert baseline["absolute"] == {
        "MCQ": {"low": 1.0, "high": 1.0},
        "VQA": {"mid": 1.0, "high": 0.0},
        "CAP": {"low": 1.0, "mid": 1.0},
    }
    assert baseline["absolute_overall"] == pytest.approx(5 / 6)
    assert baseline["relative"]["MCQ"] == {"low": 1.0, "high": 0.0}
    assert baseline["relative_overall"] == pytest.approx(4 / 6)
    assert results.metrics["recover"]["absolute"]["VQA"]["high"] == 1.0
    assert results.metrics["recover"]["relative_overall"] == pytest.approx(5 / 6)
    assert results.metrics["oracle"]["absolute_overall"] == pytest.approx(5 / 6)
    assert "relative" not in results.metrics["oracle"]

    # 18 truth + 12 consistency judgements of final answers; identical (reference, answer) pairs are judged once.
    final = {(r["item_id"], r["mode"]): final_answer_text(r["response"]) for r in results.records}
    pairs = {
        (item, str(r["answer"]), final[item, mode]) for (item, mode), r in zip(final, results.records, strict=True)
    }
    pairs |= {(item, final[item, "oracle"], answer) for (item, mode), answer in final.items() if mode != "oracle"}
    assert judge.calls == len(pairs) < 30
    # A rerun reads answers and scores from the caches.
    assert cache.with_suffix(".judge.jsonl").exists()
    rerun_judge = ColorWordJudge()
    rerun = evaluate_benchmark(
        load_rbench(rerun_judge, rbench_dataset),
        ColorAnswerer(fail_after=0),
        cache_path=cache,
        model_name="stub",
        progress=False,
    )
    assert rerun_judge.calls == 0 and rerun.metrics == results.metrics

    table = rbench_table([results])
    assert table.splitlines()[0] == "| Method | MCQ low/mid/high | VQA low/mid/high | CAP low/mid/high | Overall |"
    assert "| stub (baseline) | 1.0000/–/1.0000 | –/1.0000/0.0000 | 1.0000/1.0000/– | 0.8333 |" in table
    relative = rbench_table([results], kind="relative")
    assert "| stub (baseline) | 1.0000/–/0.0000 | –/1.0000/0.0000 | 1.0000/1.0000/– | 0.6667 |" in relative
    assert "oracle" not in relative

    names = [entry.metric_name for entry in model_index_results([results], modes=["recover"])]
    assert names[-2:] == ["Overall absolute (recover)", "Overall relative (recover)"]

    written = write_report([results], tmp_path / "rbench-report")
    assert "## R-Bench (relative)" in written["markdown"].read_text()
    assert written["plot"].stat().st_size > 0


def test_exact_match_judge_is_limited_to_mcq(rbench_dataset):
    with pytest.raises(ValueError, match="cannot score \\['CAP', 'VQA'\\]"):
        load_rbench(ExactMatchJudge(), rbench_dataset)
    mcq_only = load_rbench(ExactMatchJudge(), rbench_dataset, tasks=("MCQ",))
    results = evaluate_benchmark(mcq_only, ColorAnswerer(), modes=["baseline", "oracle"], progress=False)
    assert results.metrics["oracle"]["absolute"] == {"MCQ": {"low": 1.0, "high": 0.0}}
    assert math.isclose(results.metrics["baseline"]["relative_overall"], 0.5)
    with pytest.raises(ValueError, match="only scores MCQ"):
        ExactMatchJudge().score("VQA", "q", None, "red", "red")
    assert isinstance(mcq_only, RBenchBenchmark)


class FlakyJudge(ColorWordJudge):
    def __init__(self, fail_after):
        super().__init__()
        self.fail_after = fail_after

    def score(self, task, question, choices, reference, response):
        if self.calls == self.fail_after:
            raise ConnectionError("judge endpoint went away")
        return super().score(task, question, choices, reference, response)


def test_judging_resumes_after_a_judge_failure(rbench_dataset, tmp_path):
    cache = tmp_path / "rbench.jsonl"
    flaky = FlakyJudge(fail_after=5)
    with pytest.raises(ConnectionError):
        evaluate_benchmark(
            load_rbench(flaky, rbench_dataset, judge_workers=1), ColorAnswerer(), cache_path=cache, progress=False
        )
    assert len(cache.with_suffix(".judge.jsonl").read_text().splitlines()) == 5

    healthy = ColorWordJudge()
    resumed = evaluate_benchmark(
        load_rbench(healthy, rbench_dataset), ColorAnswerer(fail_after=0), cache_path=cache, progress=False
    )
    fresh_judge = ColorWordJudge()
    fresh = evaluate_benchmark(
        load_rbench(fresh_judge, rbench_dataset), ColorAnswerer(), cache_path=tmp_path / "fresh.jsonl", progress=False
    )
    assert healthy.calls == fresh_judge.calls - 5
    assert resumed.metrics == fresh.metrics
