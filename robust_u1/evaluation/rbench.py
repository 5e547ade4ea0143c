"""R-Bench (Q-Future/R-Bench, HF ``lcysyzxdxc/R-Bench``): MCQ / VQA / CAP on real-world distortions.

Rows follow the official release (``R_All.parquet``, the ModelScope copy the official script loads):
``name, question, choice, answer, type, distortion, strength, ref_image, dis_image``. ``choice`` is
``"A.x; B.y"`` for MCQ and ``"N"`` otherwise; for CAP ``answer`` is a list of reference captions
(a Python-literal string in the CSV release). Images are ``{"bytes": …}`` dicts or decoded images.

Strength 1 / 2 / 3 is reported as low / mid / high. (The R-Bench README's result template lists the
strengths in the order "high mid low"; Robust-U1's paper and the scores' trend read 1 as the mildest.
Override with ``strength_names=``.)

Modes: ``baseline`` and ``recover`` answer on the distorted image, ``oracle`` on the clean reference
image. Scores, as in the official script's *Show final result* section:

- **absolute** (``dis``): a reply judged against the ground truth, averaged per task × strength;
- **relative**: mean over items of ``com_i × ref_i``, where ``ref_i`` is the oracle (clean-image)
  reply judged against the ground truth and ``com_i`` is the distorted-image reply judged against
  the oracle reply as the reference, i.e. the clean score retained under distortion;
- the judge sees final answers: ``<think>`` reasoning is removed and an ``<ANSWER>`` tag's content
  is used when present, for the judged reply and for the oracle reply used as a reference;
- **Overall** (the paper's column): the mean of the nine task × strength cells (this reproduces the
  paper's 0.5770 for BAGEL and 0.7398 for Robust-U1 from their cells).
"""

from __future__ import annotations

import ast
import hashlib
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from PIL import Image
from tqdm.auto import tqdm

from .cache import JsonlCache, cache_key
from .images import decode_image
from .judges import RBENCH_TASKS, Judge, RBenchTask
from .mcq import read_benchmark_table
from .options import final_answer_text, parse_choice_string
from .prompts import build_rbench_prompt
from .protocols import Degrader, Mode
from .runner import EvalCase, Level

RBENCH_SOURCE = "hf://datasets/lcysyzxdxc/R-Bench/R_All.parquet"
STRENGTH_NAMES: dict[int, str] = {1: "low", 2: "mid", 3: "high"}
STRENGTH_LEVELS: tuple[str, ...] = ("low", "mid", "high")


@dataclass(frozen=True)
class RBenchItem:
    """One R-Bench item; ``answer`` is a caption list for CAP, a letter for MCQ, text for VQA."""

    id: str
    task: RBenchTask
    question: str
    choices: str | None
    answer: str | list[str]
    strength: str
    distortion: str
    row: int


class RBenchBenchmark:
    """R-Bench items with a judge, ready for :func:`~robust_u1.evaluation.evaluate_benchmark`.

    Only judge calls not already in the score cache are made, ``judge_workers`` at a time (capped by
    the judge's ``max_concurrency``, 1 for a local transformers model).

    Example:
        >>> bench = load_rbench(judge=OpenAICompatibleJudge("https://api.openai.com/v1", "gpt-4o-mini"))  # doctest: +SKIP
        >>> results = evaluate_benchmark(bench, answer_fn, cache_path="runs/rbench.jsonl")  # doctest: +SKIP
        >>> results.metrics["recover"]["absolute_overall"]  # doctest: +SKIP
        0.7398
    """

    kind = "rbench"

    def __init__(
        self,
        table: datasets.Dataset,
        judge: Judge,
        *,
        name: str = "R-Bench",
        tasks: Sequence[RBenchTask] = RBENCH_TASKS,
        strength_names: Mapping[int, str] = STRENGTH_NAMES,
        judge_workers: int = 8,
        source: str | None = None,
    ) -> None:
        self.name = name
        self.source = source or name  # named in error messages
        self.judge = judge
        self.judge_workers = judge_workers
        self._judge_ready = False
        all_items = _normalise_items(table, strength_names, self.source)
        self._image_columns = {column: table.select_columns([column]) for column in ("dis_image", "ref_image")}
        self.items = [item for item in all_items if item.task in tasks]
        if not self.items:
            raise ValueError(f"{self.source} has no {'/'.join(tasks)} items: nothing to evaluate.")
        unsupported = sorted({item.task for item in self.items} - set(judge.tasks))
        if unsupported:
            raise ValueError(
                f"Judge {judge.name!r} cannot score {unsupported} items; use an LLM judge or pass tasks={tuple(judge.tasks)}."
            )

    def __len__(self) -> int:
        return len(self.items)

    def default_levels(self, degrade: Degrader | None) -> list[Level]:
        present = {item.strength for item in self.items}
        return [level for level in STRENGTH_LEVELS if level in present] + sorted(present - set(STRENGTH_LEVELS))

    def cases(
        self, *, levels: Sequence[Level], modes: Sequence[Mode], degrade: Degrader | None, seed: int
    ) -> list[EvalCase]:
        if degrade is not None:
            raise ValueError("R-Bench images are already distorted; do not pass degrade=.")
        cases = []
        for item in self.items:
            if item.strength not in levels:
                continue
            for mode in modes:
                image_column = "ref_image" if mode == "oracle" else "dis_image"
                cases.append(
                    EvalCase(
                        item_id=item.id,
                        level=item.strength,
                        mode=mode,
                        prompt=build_rbench_prompt(item.task, item.question, item.choices, recover=mode == "recover"),
                        options=parse_choice_string(item.choices) or None,
                        load_image=lambda item=item, column=image_column: self._image(item, column),
                        image_key=(item.id, image_column),
                        metadata={
                            "task": item.task,
                            "question": item.question,
                            "choices": item.choices,
                            "answer": item.answer,
                            "distortion": item.distortion,
                        },
                    )
                )
        return cases

    def _image(self, item: RBenchItem, column: str) -> Image.Image:
        try:
            return decode_image(self._image_columns[column][item.row][column])
        except (ValueError, TypeError, OSError) as error:
            raise ValueError(
                f"{self.source}: the {column} of row {item.row} (name {item.id}) cannot be read: {error}"
            ) from error

    def check_ready(self) -> None:
        """Check the judge can be reached before any answer is computed (the judge runs only at the end)."""
        check = getattr(self.judge, "check", None)
        if check is not None and not self._judge_ready:
            check()
            self._judge_ready = True

    def summarize(
        self, records: list[dict[str, Any]], *, cache_path: Path | None = None, progress: bool = False
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Judge every reply (cached in ``cache_path``) and compute absolute and relative robustness."""
        scores = JsonlCache(cache_path)
        requests: dict[str, tuple[Any, ...]] = {}

        def request(record: Mapping[str, Any], reference: str | list[str]) -> str:
            response = final_answer_text(record["response"])
            key = _score_key(self.judge.name, record, reference, response)
            requests[key] = (record["task"], record["question"], record["choices"], reference, response)
            return key

        oracle_by_item = {record["item_id"]: record for record in records if record["mode"] == "oracle"}
        planned = []
        for record in records:
            oracle = oracle_by_item.get(record["item_id"])
            if record["mode"] == "oracle" or oracle is None:
                planned.append((record, request(record, record["answer"]), None, None))
            else:
                consistency = request(record, final_answer_text(oracle["response"]))
                planned.append(
                    (record, request(record, record["answer"]), consistency, request(oracle, oracle["answer"]))
                )

        self._judge_missing({key: call for key, call in requests.items() if key not in scores}, scores, progress)

        scored = []
        for record, truth, consistency, oracle_truth in planned:
            result = {**record, "score": scores.get(truth)}
            if consistency is not None:
                result["consistency"] = scores.get(consistency)
                result["relative"] = result["consistency"] * scores.get(oracle_truth)
            scored.append(result)
        return scored, rbench_metrics(scored)

    def _judge_missing(self, calls: dict[str, tuple[Any, ...]], scores: JsonlCache, progress: bool) -> None:
        # Judge calls are network-bound: run them concurrently, caching each score as it arrives.
        workers = min(self.judge_workers, getattr(self.judge, "max_concurrency", None) or self.judge_workers)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(self.judge.score, *call): key for key, call in calls.items()}
            try:
                for future in tqdm(
                    as_completed(futures), total=len(futures), desc=f"judging {self.name}", disable=not progress
                ):
                    scores.put(futures[future], future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def rbench_metrics(scored_records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Absolute and relative robustness per mode × task × strength, with the paper's Overall."""
    cells: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    )
    for record in scored_records:
        mode_cells = cells[record["mode"]]
        mode_cells["absolute"][record["task"]][record["level"]].append(record["score"])
        if "relative" in record:
            mode_cells["relative"][record["task"]][record["level"]].append(record["relative"])

    metrics: dict[str, Any] = {}
    for mode, kinds in cells.items():
        metrics[mode] = {}
        for kind, per_task in kinds.items():
            table = {
                task: {level: sum(values) / len(values) for level, values in _ordered_levels(per_task[task])}
                for task in RBENCH_TASKS
                if task in per_task
            }
            cell_means = [value for per_level in table.values() for value in per_level.values()]
            metrics[mode][kind] = table
            metrics[mode][f"{kind}_overall"] = sum(cell_means) / len(cell_means)
    return metrics


def load_rbench(
    judge: Judge,
    source: str | os.PathLike[str] | datasets.Dataset = RBENCH_SOURCE,
    *,
    tasks: Sequence[RBenchTask] = RBENCH_TASKS,
    strength_names: Mapping[int, str] = STRENGTH_NAMES,
    judge_workers: int = 8,
) -> RBenchBenchmark:
    """Load R-Bench from a parquet / JSON(L) / CSV / TSV file (local or ``hf://``) or a dataset, with its judge.

    Missing columns, an empty table, unknown tasks and unreadable images are errors naming the file
    (and the row).

    Example:
        >>> bench = load_rbench(ExactMatchJudge(), "R_All.parquet", tasks=("MCQ",))  # doctest: +SKIP
    """
    if isinstance(source, datasets.Dataset):
        table, described = source, None
    else:
        table, described = read_benchmark_table(source), str(source)
    return RBenchBenchmark(
        table, judge, tasks=tasks, strength_names=strength_names, judge_workers=judge_workers, source=described
    )


def _normalise_items(table: datasets.Dataset, strength_names: Mapping[int, str], source: str) -> list[RBenchItem]:
    required = {"question", "answer", "type", "strength", "dis_image", "ref_image"}
    missing = required - set(table.column_names)
    if missing:
        raise ValueError(f"{source}: R-Bench rows need columns {sorted(required)}; missing {sorted(missing)}.")
    if len(table) == 0:
        raise ValueError(f"{source} has no rows (only a header?): nothing to evaluate.")
    text_columns = [column for column in table.column_names if not column.endswith("image")]
    items = []
    for row, record in enumerate(table.select_columns(text_columns)):
        task = str(record["type"]).strip().upper()
        if task not in RBENCH_TASKS:
            raise ValueError(f"{source}: row {row} has an unknown R-Bench task {record['type']!r}; expected {RBENCH_TASKS}.")
        choices = str(record.get("choice") or "").strip()
        strength = record["strength"]
        items.append(
            RBenchItem(
                id=str(record.get("name") or row),
                task=task,
                question=str(record["question"]),
                choices=choices if choices and choices != "N" else None,
                answer=_captions(record["answer"]) if task == "CAP" else str(record["answer"]).strip(),
                strength=strength_names.get(int(strength), str(strength)) if str(strength).isdigit() else str(strength),
                distortion=str(record.get("distortion", "")),
                row=row,
            )
        )
    return items


def _captions(answer: Any) -> list[str]:
    if isinstance(answer, str):
        parsed = ast.literal_eval(answer) if answer.lstrip().startswith("[") else [answer]
        return [str(caption) for caption in parsed]
    return [str(caption) for caption in answer]


def _ordered_levels(per_level: Mapping[str, list[float]]) -> list[tuple[str, list[float]]]:
    order = {level: index for index, level in enumerate(STRENGTH_LEVELS)}
    return sorted(per_level.items(), key=lambda entry: (order.get(entry[0], len(order)), entry[0]))


def _score_key(judge_name: str, record: Mapping[str, Any], reference: str | list[str], response: str) -> str:
    parts = cache_key(judge_name, record["task"], record["question"], record["choices"], reference, response)
    return hashlib.sha256(parts.encode()).hexdigest()
