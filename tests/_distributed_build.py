"""Evaluation and the three dataset builders on fixed tiny inputs; the distributed test runs this twice.

Usage: ``[torchrun --nproc_per_node N] python tests/_distributed_build.py OUT_DIR``. The main process
writes ``<OUT_DIR>/results.pkl`` (the evaluation results and every built dataset's rows, images as
stored bytes); every process writes ``<OUT_DIR>/calls.rank<N>.json`` (the evaluation cases it answered in
a first and in a repeated run). Files, not stdout, whose lines torchrun may prefix or interleave.
"""

import json
import pickle
import sys
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluation_harness import FIXTURES, ColorAnswerer, degrade  # noqa: E402

from robust_u1 import cli  # noqa: E402
from robust_u1.data import build_degraded_benchmark, build_recovery_dataset  # noqa: E402
from robust_u1.distributed import is_main_process, process_index, wait_for_everyone  # noqa: E402
from robust_u1.evaluation import evaluate_benchmark, load_mcq_benchmark  # noqa: E402
from robust_u1.reasoning import build_reasoning_dataset  # noqa: E402
from robust_u1.tiny import tiny_random_model  # noqa: E402


def images(count, seed=0, size=24):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size + i, 3), dtype=np.uint8)) for i in range(count)]


def stored_rows(dataset):
    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return [{k: (v["bytes"] if isinstance(v, dict) and "bytes" in v else v) for k, v in row.items()} for row in dataset]


def main(out_dir):
    out_dir = Path(out_dir)
    calls = {}
    for run in ("first", "repeat"):
        answerer = ColorAnswerer()
        results = evaluate_benchmark(
            load_mcq_benchmark(FIXTURES / "mmmb_tiny.tsv", name="MMMB"), answerer, levels=[0, 50, 100],
            degrade=degrade, cache_path=out_dir / "eval" / "answers.jsonl", progress=False,
        )  # fmt: skip
        calls[run] = answerer.calls

    source = datasets.Dataset.from_dict(
        {"image": images(5), "question": [f"q{i}" for i in range(5)], "answer": list("ABABA")},
        features=datasets.Features(
            {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
        ),
    )
    degraded = build_degraded_benchmark(source, levels=(0, 50), seed=3, cache_dir=out_dir / "cache" / "degraded")
    pairs = build_recovery_dataset(
        source, "robust_r1", samples_per_image=2, seed=4, cache_dir=out_dir / "cache" / "recovery"
    )
    model, processor = tiny_random_model(seed=0)
    reasoning = build_reasoning_dataset(
        source.select(range(4)), model, processor, recover_kwargs={"num_inference_steps": 2}, batch_size=2,
        rows_per_shard=2, cache_dir=out_dir / "cache" / "reasoning",
    )  # fmt: skip

    # The CLI with the bundled TinyWorld model; only the main process writes the report.
    assert cli.main(["eval", "MMMB", "--source", str(FIXTURES / "mmmb_tiny.tsv"), "--output", str(out_dir / "cli"),
                     "--levels", "0", "100", "--limit", "2", "--max-new-tokens", "2", "--steps", "3"]) == 0  # fmt: skip

    (out_dir / f"calls.rank{process_index()}.json").write_text(json.dumps(calls))
    if is_main_process():
        built = {"degraded": stored_rows(degraded), "recovery": stored_rows(pairs), "reasoning": stored_rows(reasoning)}
        (out_dir / "results.pkl").write_bytes(pickle.dumps({"eval": results.to_dict(), **built}))
    wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
