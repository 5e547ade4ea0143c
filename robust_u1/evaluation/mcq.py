"""Multiple-choice benchmarks (MMStar, RealWorldQA, MMMB) under synthetic degradation.

Every source is normalised to items with ``id, image, question, options, answer, category``:

- **MMMB** (VLMEvalKit TSV, ``AIDC-AI/Parrot-dataset`` ``mmmb/mmmb_<lang>.tsv``): columns ``index,
  question, A, B, C, D, answer, category`` and a base64 ``image``; empty option columns are dropped
  and an image that is a short index refers to another row's image (VLMEvalKit's de-duplication).
  An optional ``hint`` column is kept and printed before the question, as VLMEvalKit does.
- **MMStar** (``Lin-Chen/MMStar``): ``index, image, question, answer, category``; the options are
  inside the question (``…\\nOptions: A: x, B: y, C: z, D: w``) and are split out.
- **RealWorldQA** (``lmms-lab/RealWorldQA``): ``image, question, answer``; options are lines
  ``A. x`` inside the question and the trailing instruction line is dropped (the prompt adds its
  own). Questions without options are kept as open items, answered with a short-answer instruction
  and scored by case-insensitive exact match. Without a ``category`` column every item is in
  ``"all"``.

Option columns ``A``…``Z`` win over options found in the question text. Items are identified by
``index`` (else ``id`` / ``question_id``, else the row number). A ``level`` column marks an already
degraded dataset (rows at levels 0/25/50/100 sharing an id); otherwise images are clean and a
``degrade(image, level, seed)`` callable corrupts them on the fly.
"""

from __future__ import annotations

import os
import re
import string
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
from PIL import Image

from .images import decode_image
from .options import extract_option, final_answer_text
from .prompts import OPEN_QUESTION_INSTRUCTION, build_mcq_prompt, build_open_prompt
from .protocols import Degrader, Mode
from .runner import EvalCase, Level, derive_seed

DEGRADATION_LEVELS: tuple[int, ...] = (0, 25, 50, 100)
"""Clean, then Robust-R1's synthetic degradation at 25 / 50 / 100 % intensity."""

KNOWN_BENCHMARKS: dict[str, dict[str, str]] = {
    "MMStar": {"path": "Lin-Chen/MMStar", "split": "val"},
    "RealWorldQA": {"path": "lmms-lab/RealWorldQA", "split": "test"},
    "MMMB": {"path": "hf://datasets/AIDC-AI/Parrot-dataset/mmmb/mmmb_en.tsv"},
}
"""Where :func:`load_mcq_benchmark` finds each benchmark when given only its name."""

_ID_COLUMNS = ("index", "id", "question_id")
_UNCATEGORISED = "all"


@dataclass(frozen=True)
class MCQItem:
    """One normalised multiple-choice item; ``options`` is empty for open questions."""

    id: str
    question: str
    options: dict[str, str]
    answer: str
    category: str
    hint: str | None
    row: int
    level: int | None = None


def split_question_options(text: str) -> tuple[str, dict[str, str]]:
    """Split options written inside a question into ``(question, {letter: text})``.

    Handles MMStar (``Options: A: x, B: y``) and line-per-option layouts (``A. x``); text after the
    last option's line (an instruction) is dropped. Fewer than two options means none were found.

    Example:
        >>> split_question_options("Which is red?\\nOptions: A: apple, B: sky")
        ('Which is red?', {'A': 'apple', 'B': 'sky'})
        >>> split_question_options("Which way?\\nA. Left\\nB. Right\\nPlease answer with the letter.")
        ('Which way?', {'A': 'Left', 'B': 'Right'})
    """
    header = re.search(r"\boptions?\s*:", text, re.IGNORECASE)
    position = header.end() if header else 0
    # Without an "Options:" header, only options that start a line are trusted.
    boundary = r"(?:^|(?<=[\s,;]))" if header else r"^[ \t]*"
    markers: list[tuple[str, int, int]] = []
    for letter in string.ascii_uppercase:
        found = re.compile(rf"{boundary}\(?{letter}[.:)]\s*", re.MULTILINE).search(text, position)
        if found is None:
            break
        markers.append((letter, found.start(), found.end()))
        position = found.end()
    if len(markers) < 2:
        return text.strip(), {}
    question_end = header.start() if header and header.start() < markers[0][1] else markers[0][1]
    options = {}
    for number, (letter, _, text_start) in enumerate(markers):
        is_last = number + 1 == len(markers)
        chunk = text[text_start:] if is_last else text[text_start : markers[number + 1][1]]
        if is_last:
            chunk = chunk.split("\n", 1)[0]
        options[letter] = chunk.strip().rstrip(",;").strip()
    return text[:question_end].strip(), options


class MCQBenchmark:
    """A normalised multiple-choice benchmark, ready for :func:`~robust_u1.evaluation.evaluate_benchmark`.

    Example:
        >>> bench = load_mcq_benchmark("tests/fixtures/eval/mmmb_tiny.tsv", name="MMMB")  # doctest: +SKIP
        >>> bench.items[2].options  # doctest: +SKIP
        {'A': 'red', 'B': 'green', 'C': 'blue'}
    """

    kind = "mcq"

    def __init__(self, table: datasets.Dataset, name: str) -> None:
        self.name = name
        self._images = table.select_columns(["image"])
        self.items = _normalise_items(table)
        self.has_level_column = any(item.level is not None for item in self.items)
        self._row_by_id_level = {(item.id, item.level): item.row for item in self.items}
        self._row_by_index = _rows_by_index(table)

    def __len__(self) -> int:
        return len({item.id for item in self.items})

    def default_levels(self, degrade: Degrader | None) -> list[Level]:
        if self.has_level_column:
            return sorted({item.level for item in self.items if item.level is not None})
        return list(DEGRADATION_LEVELS) if degrade is not None else [0]

    def image(self, row: int) -> Image.Image:
        """The decoded image of a table row (following VLMEvalKit's image-by-index references)."""
        value = self._images[row]["image"]
        if isinstance(value, str) and value.isdigit() and value in self._row_by_index:
            value = self._images[self._row_by_index[value]]["image"]
        return decode_image(value)

    def cases(
        self, *, levels: Sequence[Level], modes: Sequence[Mode], degrade: Degrader | None, seed: int
    ) -> list[EvalCase]:
        self._check_levels(levels, modes, degrade)
        cases = []
        for item in self._source_items():
            for level in levels:
                for mode in modes:
                    if mode == "oracle" and level != 0:
                        continue  # the clean image does not depend on the level
                    cases.append(self._case(item, int(level), mode, degrade, seed))
        return cases

    def _source_items(self) -> list[MCQItem]:
        if not self.has_level_column:
            return self.items
        # One item per id, preferring its clean (level 0) row as the source image.
        source_per_id: dict[str, MCQItem] = {}
        for item in self.items:
            if item.id not in source_per_id or item.level == 0:
                source_per_id[item.id] = item
        return list(source_per_id.values())

    def _check_levels(self, levels: Sequence[Level], modes: Sequence[Mode], degrade: Degrader | None) -> None:
        if degrade is not None or not levels:
            return
        if not self.has_level_column:
            if any(level != 0 for level in levels):
                raise ValueError(
                    f"{self.name} has clean images only: pass degrade= to corrupt them, "
                    "or use a dataset with a 'level' column."
                )
            return
        missing = {(item.id, level) for item in self._source_items() for level in levels} - set(self._row_by_id_level)
        if "oracle" in modes:
            missing |= {(item.id, 0) for item in self._source_items()} - set(self._row_by_id_level)
        if missing:
            raise ValueError(f"{self.name} lacks rows for (id, level) pairs such as {sorted(missing)[:3]}.")

    def _case(self, item: MCQItem, level: int, mode: Mode, degrade: Degrader | None, seed: int) -> EvalCase:
        image_level = 0 if mode == "oracle" else level
        if self.has_level_column and degrade is None:
            row = self._row_by_id_level[(item.id, image_level)]

            def load_image() -> Image.Image:
                return self.image(row)

        else:
            item_seed = derive_seed(seed, self.name, item.id, image_level)

            def load_image() -> Image.Image:
                clean = self.image(item.row)
                return clean if image_level == 0 else degrade(clean, image_level, item_seed)

        recover = mode == "recover"
        if item.options:
            prompt = build_mcq_prompt(item.question, item.options, recover=recover, hint=item.hint)
        else:
            prompt = build_open_prompt(item.question, recover=recover, hint=item.hint)
        return EvalCase(
            item_id=item.id,
            level=level,
            mode=mode,
            prompt=prompt,
            options=dict(item.options) or None,
            load_image=load_image,
            image_key=(item.id, image_level),
            metadata={"answer": item.answer, "category": item.category, "options": dict(item.options)},
        )

    def summarize(
        self, records: list[dict[str, Any]], *, cache_path: Path | None = None, progress: bool = False
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Score replies (option extraction or exact match) and aggregate accuracy per mode and level."""
        scored = [
            {**record, **score_mcq_reply(record["response"], record["options"], record["answer"])} for record in records
        ]
        return scored, mcq_metrics(scored)


def score_mcq_reply(response: str, options: Mapping[str, str], answer: str) -> dict[str, Any]:
    """Extract the prediction from a reply and compare it with the answer.

    Example:
        >>> score_mcq_reply("<ANSWER>B</ANSWER>", {"A": "dog", "B": "cat"}, "B")
        {'prediction': 'B', 'correct': True}
        >>> score_mcq_reply("Three.", {}, "3")
        {'prediction': 'three', 'correct': False}
    """
    if options:
        prediction = extract_option(response, options)
        return {"prediction": prediction, "correct": prediction is not None and prediction == answer.strip().upper()}
    prediction = _normalise_open_answer(final_answer_text(response))
    return {"prediction": prediction, "correct": prediction == _normalise_open_answer(answer)}


def mcq_metrics(scored_records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy per mode × level, overall and per category, and the drop from the clean level.

    ``drop_from_clean[level]`` is accuracy at level 0 minus accuracy at ``level`` (same mode; for
    ``oracle``, which only runs clean, it is absent). Accuracies are fractions in [0, 1].
    """
    correct: dict[str, dict[Any, list[bool]]] = defaultdict(lambda: defaultdict(list))
    by_category: dict[str, dict[Any, dict[str, list[bool]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for record in scored_records:
        correct[record["mode"]][record["level"]].append(bool(record["correct"]))
        by_category[record["mode"]][record["level"]][record["category"]].append(bool(record["correct"]))

    metrics: dict[str, Any] = {}
    for mode, per_level in correct.items():
        accuracy = {level: _mean(values) for level, values in sorted(per_level.items())}
        metrics[mode] = {
            "accuracy": accuracy,
            "count": {level: len(values) for level, values in sorted(per_level.items())},
            "per_category": {
                level: {category: _mean(values) for category, values in sorted(categories.items())}
                for level, categories in sorted(by_category[mode].items())
            },
            "drop_from_clean": (
                {level: accuracy[0] - value for level, value in accuracy.items() if level != 0} if 0 in accuracy else {}
            ),
        }
    return metrics


def load_mcq_benchmark(
    source: str | os.PathLike[str] | datasets.Dataset | pd.DataFrame,
    *,
    name: str | None = None,
    split: str | None = None,
) -> MCQBenchmark:
    """Load and normalise an MCQ benchmark from a known name, Hub id, TSV / CSV / parquet file or dataset.

    Example:
        >>> bench = load_mcq_benchmark("MMStar")  # Lin-Chen/MMStar, split "val"  # doctest: +SKIP
        >>> bench = load_mcq_benchmark("mmmb_en.tsv", name="MMMB")  # doctest: +SKIP
        >>> len(bench)  # doctest: +SKIP
        1000
    """
    if isinstance(source, datasets.Dataset):
        return MCQBenchmark(source, name or "benchmark")
    if isinstance(source, pd.DataFrame):
        return MCQBenchmark(datasets.Dataset.from_pandas(source, preserve_index=False), name or "benchmark")
    source = str(source)
    if source in KNOWN_BENCHMARKS:
        known = KNOWN_BENCHMARKS[source]
        return load_mcq_benchmark(known["path"], name=name or source, split=split or known.get("split"))
    default_name = name or Path(source).stem
    suffix = Path(source).suffix.lower()
    if suffix in {".tsv", ".csv"}:
        frame = pd.read_csv(source, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        return MCQBenchmark(datasets.Dataset.from_pandas(frame, preserve_index=False), default_name)
    if suffix == ".parquet":
        return MCQBenchmark(datasets.Dataset.from_parquet(source), default_name)
    loaded = datasets.load_dataset(source, split=split)
    if isinstance(loaded, datasets.DatasetDict):
        raise ValueError(f"{source} has splits {list(loaded)}; pass split=.")
    return MCQBenchmark(loaded, name or source)


def _normalise_items(table: datasets.Dataset) -> list[MCQItem]:
    if "image" not in table.column_names or "question" not in table.column_names:
        raise ValueError(f"An MCQ benchmark needs 'image' and 'question' columns; got {table.column_names}.")
    option_columns = [letter for letter in string.ascii_uppercase if letter in table.column_names]
    id_column = next((column for column in _ID_COLUMNS if column in table.column_names), None)
    text_columns = [column for column in table.column_names if column != "image" and not column.endswith("image")]
    items = []
    open_items = 0
    for row, record in enumerate(table.select_columns(text_columns)):
        question = str(record["question"])
        options = {letter: _text(record[letter]) for letter in option_columns if _text(record[letter])}
        if not options:
            question, options = split_question_options(question)
        open_items += not options
        level = record.get("level")
        items.append(
            MCQItem(
                id=str(record[id_column]) if id_column else str(row),
                question=question,
                options=options,
                answer=_text(record.get("answer")),
                category=_text(record.get("category")) or _UNCATEGORISED,
                hint=_text(record.get("hint")) or None,
                row=row,
                level=int(level) if _text(level) else None,
            )
        )
    if open_items:
        warnings.warn(
            f"{open_items} item(s) have no options; they are open questions answered with "
            f"{OPEN_QUESTION_INSTRUCTION!r} and scored by exact match.",
            stacklevel=3,
        )
    return items


def _rows_by_index(table: datasets.Dataset) -> dict[str, int]:
    if "index" not in table.column_names:
        return {}
    return {str(value): row for row, value in enumerate(table["index"])}


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # NaN from pandas
        return ""
    return str(value).strip()


def _normalise_open_answer(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text).strip().lower()


def _mean(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")
