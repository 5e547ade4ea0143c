"""Run an answerer over a benchmark × levels × modes, resumably."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image
from tqdm.auto import tqdm

from ..distributed import (
    broadcast_from_main,
    gather_objects,
    is_main_process,
    num_processes,
    process_index,
    process_share,
)
from .cache import JsonlCache, cache_key
from .protocols import MODES, Answerer, Degrader, Mode

Level = int | str
"""A degradation level: percent intensity (0 = clean) for MCQ benchmarks, ``"low"/"mid"/"high"`` for R-Bench."""


@dataclass(frozen=True)
class EvalCase:
    """One model call: an item at a degradation level in a mode.

    ``load_image`` is called only when the answer is not cached yet, so resuming skips image decoding
    and corruption; cases sharing ``image_key`` (baseline and recover at one level) reuse one image.
    """

    item_id: str
    level: Level
    mode: Mode
    prompt: str
    options: dict[str, str] | None
    load_image: Callable[[], Image.Image]
    image_key: tuple[Any, ...]
    metadata: dict[str, Any] = field(default_factory=dict)


class Benchmark(Protocol):
    """What :func:`evaluate_benchmark` needs from a benchmark (see ``MCQBenchmark`` and ``RBenchBenchmark``)."""

    name: str
    kind: str

    def default_levels(self, degrade: Degrader | None) -> list[Level]: ...

    def cases(
        self, *, levels: Sequence[Level], modes: Sequence[Mode], degrade: Degrader | None, seed: int
    ) -> list[EvalCase]: ...

    def summarize(
        self, records: list[dict[str, Any]], *, cache_path: Path | None, progress: bool
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]: ...

    # Optional: ``check_ready() -> None`` raises when scoring cannot work (e.g. an unreachable judge);
    # :func:`evaluate_benchmark` calls it before computing any answer.


@dataclass
class BenchmarkResults:
    """Per-item records and aggregate metrics of one model on one benchmark.

    ``metrics`` is keyed by mode first. MCQ benchmarks: ``metrics[mode]["accuracy"][level]`` (a
    fraction in [0, 1]), ``["drop_from_clean"][level]``, ``["per_category"][level][category]``,
    ``["count"][level]``. R-Bench: ``metrics[mode]["absolute"][task][strength]``,
    ``["absolute_overall"]`` and, when the oracle (clean reference) answers exist,
    ``["relative"]`` / ``["relative_overall"]``.

    Example:
        >>> results = BenchmarkResults("toy", "mcq", "stub", [0], [], {"baseline": {"accuracy": {0: 1.0}}})
        >>> results.metrics["baseline"]["accuracy"][0]
        1.0
    """

    benchmark: str
    kind: str
    model_name: str
    levels: list[Level]
    records: list[dict[str, Any]]
    metrics: dict[str, Any]

    @property
    def modes(self) -> list[str]:
        return list(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the results as JSON (dictionary keys become strings, as JSON requires)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary name and renamed, so a failure never leaves a truncated file.
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, path)
        return path


def derive_seed(seed: int, *parts: Any) -> int:
    """A per-item seed that depends only on the run seed and the item, so reruns corrupt identically.

    Example:
        >>> derive_seed(0, "mmstar", "7", 50) == derive_seed(0, "mmstar", "7", 50)
        True
    """
    digest = hashlib.sha256(json.dumps([seed, *parts], default=str).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def evaluate_benchmark(
    benchmark: Benchmark,
    answer_fn: Answerer,
    *,
    levels: Sequence[Level] | None = None,
    modes: Sequence[Mode] = MODES,
    degrade: Degrader | None = None,
    seed: int = 0,
    cache_path: str | os.PathLike[str] | None = None,
    model_name: str = "model",
    progress: bool = True,
) -> BenchmarkResults:
    """Answer every item of ``benchmark`` at every level in every mode, then score.

    Answers are appended to ``cache_path`` (JSONL, keyed by benchmark, item id, level, mode and
    seed) as soon as they arrive; calling again with the same cache skips everything already
    answered, so a crashed run restarts where it stopped. Use one cache file per model.
    ``oracle`` answers do not depend on the level and are computed once, at the clean level.

    Under ``accelerate launch`` / ``torchrun`` each process answers a contiguous share of the pending
    cases into ``<cache stem>.process<rank>.jsonl``; the answers are gathered once, the main process
    scores them (judge calls included) and every process returns the same results, equal to one process's.

    Example:
        >>> from robust_u1.evaluation import load_mcq_benchmark
        >>> bench = load_mcq_benchmark("tests/fixtures/eval/mmmb_tiny.tsv", name="MMMB")  # doctest: +SKIP
        >>> results = evaluate_benchmark(bench, answer_fn, degrade=degrade, cache_path="runs/mmmb.jsonl")  # doctest: +SKIP
        >>> results.metrics["recover"]["accuracy"][100]  # doctest: +SKIP
        0.83
    """
    unknown_modes = set(modes) - set(MODES)
    if unknown_modes:
        raise ValueError(f"Unknown modes {sorted(unknown_modes)}; expected a subset of {MODES}.")
    levels = list(levels) if levels is not None else benchmark.default_levels(degrade)
    cases = benchmark.cases(levels=levels, modes=modes, degrade=degrade, seed=seed)
    if not cases:
        raise ValueError(f"{benchmark.name} has nothing to evaluate at levels {list(levels)} in modes {list(modes)}.")
    answers = _process_cache(cache_path)
    judge_cache = Path(cache_path).with_suffix(".judge.jsonl") if cache_path is not None else None
    if judge_cache is not None and judge_cache.exists():
        JsonlCache(judge_cache)  # read only after answering: a foreign or damaged file should fail now
    pending = [case for case in cases if _case_key(benchmark, case, seed) not in answers]
    check_ready = getattr(benchmark, "check_ready", None)
    if pending and check_ready is not None:
        # Fail now, not after hours of answering, when e.g. the judge that scores the answers is unreachable.
        check_ready()
    # Under `accelerate launch` each process answers a contiguous share of what is left (cases sharing an
    # image stay mostly together) into its own cache file; the new answers are gathered once below.
    pending = process_share(pending)

    current_image_key: tuple[Any, ...] | None = None
    current_image: Image.Image | None = None
    for case in tqdm(pending, desc=f"{benchmark.name} ({model_name})", disable=not progress, unit="answer"):
        if case.image_key != current_image_key:
            current_image_key, current_image = case.image_key, case.load_image()
        assert current_image is not None
        reply = answer_fn(current_image, case.prompt, case.options, case.mode)
        answers.put(
            _case_key(benchmark, case, seed),
            {"response": str(reply.get("answer") or ""), "reasoning": reply.get("reasoning")},
        )
    if num_processes() > 1:
        mine = {key: answers.get(key) for key in (_case_key(benchmark, case, seed) for case in pending)}
        for share in gather_objects(mine):
            answers.absorb(share)

    records = [
        {
            "benchmark": benchmark.name,
            "item_id": case.item_id,
            "level": case.level,
            "mode": case.mode,
            "seed": seed,
            **case.metadata,
            **_cached_answer(answers, _case_key(benchmark, case, seed)),
        }
        for case in cases
    ]
    # One process scores (a judge is called once per answer and its cache has one writer); all get the result.
    summary = benchmark.summarize(records, cache_path=judge_cache, progress=progress) if is_main_process() else None
    scored, metrics = broadcast_from_main(summary)
    return BenchmarkResults(benchmark.name, benchmark.kind, model_name, levels, scored, metrics)


def _cached_answer(answers: JsonlCache, key: str) -> dict[str, Any]:
    value = answers.get(key)
    if not (isinstance(value, dict) and "response" in value):
        raise ValueError(
            f"{answers.path}: the entry {key} is not an answer ({str(value)[:60]!r}); is this another kind of "
            "cache (e.g. the judge's)? Use one answers cache per model."
        )
    return value


def _case_key(benchmark: Benchmark, case: EvalCase, seed: int) -> str:
    return cache_key(benchmark.name, case.item_id, case.level, case.mode, seed)


def _process_cache(cache_path: str | os.PathLike[str] | None) -> JsonlCache:
    """The answers cache: ``answers.jsonl`` alone; ``answers.process<rank>.jsonl`` per process under a launcher.

    Every process reads the shared file and all the per-process files, so a run resumes whatever the
    number of processes of the interrupted one.
    """
    if cache_path is None or num_processes() == 1:
        answers = JsonlCache(cache_path)
        siblings = []
    else:
        path = Path(cache_path)
        answers = JsonlCache(path.with_name(f"{path.stem}.process{process_index()}{path.suffix}"))
        siblings = [path]
    if cache_path is not None:
        path = Path(cache_path)
        siblings += sorted(path.parent.glob(f"{path.stem}.process*{path.suffix}"))
    for sibling in siblings:
        if sibling != answers.path and sibling.exists():
            answers.absorb(JsonlCache(sibling).items())
    return answers
