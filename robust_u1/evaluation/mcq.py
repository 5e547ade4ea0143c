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

import functools
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
import pyarrow as pa
import pyarrow.compute as pc
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
_REQUIRED_COLUMNS = ("image", "question", "answer")
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

    def __init__(self, table: datasets.Dataset, name: str, *, source: str | None = None) -> None:
        self.name = name
        self.source = source or name  # named in error messages
        _check_table(table, self.source)
        self._images = table.select_columns(["image"])
        self.items = _normalise_items(table, self.source)
        self._id_by_row = {item.row: item.id for item in self.items}
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
        try:
            value = self._images[row]["image"]
            if isinstance(value, str) and value.isdigit() and value in self._row_by_index:
                value = self._images[self._row_by_index[value]]["image"]
            return decode_image(value)
        except (ValueError, TypeError, OSError) as error:
            raise ValueError(
                f"{self.source}: the image of row {row} (id {self._id_by_row.get(row, row)}) cannot be read: {error}"
            ) from error

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
    """Load and normalise an MCQ benchmark from a known name, Hub id, TSV / CSV / parquet / JSON(L) file or dataset.

    A path ending in ``.tsv``, ``.csv``, ``.parquet``, ``.jsonl`` or ``.json`` is always read as a file
    (``FileNotFoundError`` when it does not exist). The table needs ``image``, ``question`` and
    ``answer`` columns and at least one row; errors name the file and, for a bad row, the row.

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
    if Path(source).suffix.lower() in TABLE_SUFFIXES:
        return MCQBenchmark(read_benchmark_table(source), name or Path(source).stem, source=source)
    local = Path(source).expanduser()
    if local.is_file():
        raise ValueError(
            f"Cannot read benchmark file {source}: unknown format; use one of {', '.join(sorted(TABLE_SUFFIXES))}."
        )
    if not local.exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        # A Hub id is "owner/name"; anything else path-like is a local folder that is missing.
        raise FileNotFoundError(f"Benchmark folder {source} does not exist (Hub dataset ids look like owner/name).")
    loaded = datasets.load_dataset(source, split=split)
    if isinstance(loaded, datasets.DatasetDict):
        raise ValueError(f"{source} has splits {list(loaded)}; pass split=.")
    return MCQBenchmark(loaded, name or source, source=source)


TABLE_SUFFIXES: frozenset[str] = frozenset({".tsv", ".csv", ".parquet", ".jsonl", ".json"})
"""File types read as one table; a path with one of these suffixes is a file, never a Hub dataset id."""


def read_benchmark_table(source: str | os.PathLike[str]) -> datasets.Dataset:
    """Read a benchmark table from a TSV / CSV / parquet / JSON Lines / JSON file (local, or ``hf://`` …).

    TSV and CSV cells are read as text (VLMEvalKit's files keep ids and answers as strings).

    Example:
        >>> table = read_benchmark_table("tests/fixtures/eval/mmmb_tiny.tsv")  # doctest: +SKIP
        >>> table.column_names[:3]  # doctest: +SKIP
        ['index', 'question', 'A']
    """
    source = str(source)
    suffix = Path(source).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"Cannot read {source}: unknown format; use one of {', '.join(sorted(TABLE_SUFFIXES))}.")
    remote = "://" in source
    if not remote:
        if not Path(source).expanduser().is_file():
            raise FileNotFoundError(f"Benchmark file {source} does not exist.")
        source = str(Path(source).expanduser())
    try:
        if suffix in {".tsv", ".csv"}:
            frame = pd.read_csv(source, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        elif suffix in {".jsonl", ".json"}:
            frame = pd.read_json(source, lines=suffix == ".jsonl", dtype=False)
        elif remote:
            return datasets.load_dataset("parquet", data_files=source, split="train")
        else:
            return datasets.Dataset.from_parquet(source)
        if len(frame.columns) == 0:
            raise pd.errors.EmptyDataError
        return datasets.Dataset.from_pandas(frame, preserve_index=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"Benchmark file {source} is empty.") from None
    except (ValueError, TypeError) as error:  # pandas parser errors, pyarrow ArrowInvalid / ArrowTypeError
        raise ValueError(f"Cannot read benchmark file {source}: {error}") from error


def _check_table(table: datasets.Dataset, source: str) -> None:
    missing = [column for column in _REQUIRED_COLUMNS if column not in table.column_names]
    if missing:
        raise ValueError(
            f"{source}: an MCQ benchmark needs the columns {list(_REQUIRED_COLUMNS)}; missing {missing} "
            f"(found {table.column_names})."
        )
    if len(table) == 0:
        raise ValueError(f"{source} has no rows (only a header?): nothing to evaluate.")
    empty_rows = _rows_without_image(table)
    if empty_rows:
        raise ValueError(f"{source}: row {empty_rows[0]} has no image ({len(empty_rows)} row(s) without one).")


def _rows_without_image(table: datasets.Dataset) -> list[int]:
    """Rows whose image cell is empty, read from Arrow without decoding any image."""
    column = table.with_format("arrow").select_columns(["image"])[:]["image"]
    empty = pc.is_null(column)
    if pa.types.is_struct(column.type):  # datasets.Image(): {"bytes", "path"}
        fields = [pc.is_null(pc.struct_field(column, name)) for name in ("bytes", "path") if name in column.type.names]
        if fields:
            empty = pc.or_(empty, functools.reduce(pc.and_, fields))
    elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        empty = pc.or_(empty, pc.equal(pc.utf8_trim_whitespace(column), ""))
    elif pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        empty = pc.or_(empty, pc.equal(pc.binary_length(column), 0))
    return [index for index, flag in enumerate(pc.fill_null(empty, True).to_pylist()) if flag]


def _normalise_items(table: datasets.Dataset, source: str) -> list[MCQItem]:
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
        if not _text(record["answer"]):
            raise ValueError(f"{source}: row {row} has no answer; every item needs one to be scored.")
        level = record.get("level")
        items.append(
            MCQItem(
                id=str(record[id_column]) if id_column else str(row),
                question=question,
                options=options,
                answer=_text(record["answer"]),
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
