"""Reports: paper-shaped markdown tables, an accuracy-vs-degradation plot, JSON and model-card metadata."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from .judges import RBENCH_TASKS
from .mcq import DEGRADATION_LEVELS, KNOWN_BENCHMARKS
from .protocols import MODES
from .rbench import RBENCH_SOURCE, STRENGTH_LEVELS
from .runner import BenchmarkResults, Level

_MISSING = "–"
_MODE_COLORS = {"baseline": "tab:blue", "recover": "tab:orange", "oracle": "tab:green"}
_MODEL_MARKERS = ("o", "s", "^", "D", "v", "P")


def level_label(level: Level) -> str:
    """``0`` → ``"clean"``, ``25`` → ``"25%"``, strengths unchanged.

    Example:
        >>> [level_label(level) for level in (0, 50, "high")]
        ['clean', '50%', 'high']
    """
    if isinstance(level, int):
        return "clean" if level == 0 else f"{level}%"
    return str(level)


def _row_label(result: BenchmarkResults, mode: str) -> str:
    return f"{result.model_name} ({mode})"


def _ordered_modes(results: Sequence[BenchmarkResults], modes: Sequence[str] | None) -> list[str]:
    present = {mode for result in results for mode in result.metrics}
    return [mode for mode in (modes or MODES) if mode in present]


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _MISSING
    return f"{value * scale:.{digits}f}"


def rbench_table(
    results: Sequence[BenchmarkResults], *, kind: str = "absolute", modes: Sequence[str] | None = None
) -> str:
    """The paper's R-Bench table: rows model (mode), columns MCQ / VQA / CAP low/mid/high and Overall.

    ``kind`` is ``"absolute"`` (the paper's Table 1) or ``"relative"``.

    Example:
        >>> print(rbench_table([rbench_results]))  # doctest: +SKIP
        | Method | MCQ low/mid/high | VQA low/mid/high | CAP low/mid/high | Overall |
        |---|---|---|---|---|
        | Robust-U1 (recover) | 0.7353/0.7329/0.6768 | 0.7067/0.7164/0.6934 | 0.8272/0.8059/0.7640 | 0.7398 |
    """
    rbench = [result for result in results if result.kind == "rbench"]
    header = ["Method", *(f"{task} {'/'.join(STRENGTH_LEVELS)}" for task in RBENCH_TASKS), "Overall"]
    rows = []
    for result in rbench:
        for mode in _ordered_modes([result], modes):
            metrics = result.metrics[mode]
            if kind not in metrics:
                continue
            cells = [
                "/".join(_fmt(metrics[kind].get(task, {}).get(level), 4) for level in STRENGTH_LEVELS)
                for task in RBENCH_TASKS
            ]
            rows.append([_row_label(result, mode), *cells, _fmt(metrics[f"{kind}_overall"], 4)])
    return _markdown(header, rows)


def mcq_table(
    results: Sequence[BenchmarkResults],
    *,
    modes: Sequence[str] | None = None,
    levels: Sequence[int] = DEGRADATION_LEVELS,
) -> str:
    """The paper's anti-degradation table: rows model (mode), one ``clean/25%/50%/100%`` column per benchmark.

    Accuracies are in percent; ``oracle`` answers the clean image, so only its clean cell is filled.

    Example:
        >>> print(mcq_table([mmmb_results, mmstar_results]))  # doctest: +SKIP
        | Method | MMMB clean/25%/50%/100% | MMStar clean/25%/50%/100% |
        |---|---|---|
        | Robust-U1 (recover) | 84.75/84.14/83.54/83.18 | 67.20/65.80/64.87/63.87 |
    """
    mcq = [result for result in results if result.kind == "mcq"]
    benchmarks = list(dict.fromkeys(result.benchmark for result in mcq))
    header = ["Method", *(f"{name} {'/'.join(level_label(level) for level in levels)}" for name in benchmarks)]
    rows: dict[str, list[str]] = {}
    for result in mcq:
        column = benchmarks.index(result.benchmark)
        for mode in _ordered_modes([result], modes):
            accuracy = result.metrics[mode]["accuracy"]
            row = rows.setdefault(_row_label(result, mode), [_MISSING] * len(benchmarks))
            row[column] = "/".join(_fmt(accuracy.get(level), 2, scale=100) for level in levels)
    return _markdown(header, [[label, *cells] for label, cells in rows.items()])


def category_table(result: BenchmarkResults, *, modes: Sequence[str] | None = None) -> str:
    """Per-category accuracy (percent) of one MCQ result: rows categories, columns mode @ level.

    Example:
        >>> print(category_table(mmstar_results))  # doctest: +SKIP
    """
    columns = [
        (mode, level) for mode in _ordered_modes([result], modes) for level in result.metrics[mode]["per_category"]
    ]
    categories = sorted(
        {category for mode, level in columns for category in result.metrics[mode]["per_category"][level]}
    )
    header = ["Category", *(f"{mode} @ {level_label(level)}" for mode, level in columns)]
    rows = [
        [
            category,
            *(_fmt(result.metrics[mode]["per_category"][level].get(category), 2, scale=100) for mode, level in columns),
        ]
        for category in categories
    ]
    return f"### {result.benchmark} ({result.model_name})\n\n" + _markdown(header, rows)


def _curve(result: BenchmarkResults, mode: str) -> dict[Level, float]:
    metrics = result.metrics[mode]
    if result.kind == "mcq":
        return dict(metrics["accuracy"])
    per_strength = [
        [metrics["absolute"][task][level] for task in metrics["absolute"] if level in metrics["absolute"][task]]
        for level in STRENGTH_LEVELS
    ]
    return {
        level: sum(values) / len(values) for level, values in zip(STRENGTH_LEVELS, per_strength, strict=True) if values
    }


def plot_accuracy_vs_level(
    results: Sequence[BenchmarkResults], path: str | os.PathLike[str], *, modes: Sequence[str] | None = None
) -> Path:
    """Save a PNG with one panel per benchmark: score vs degradation level, one line per model and mode.

    MCQ panels show accuracy (%); R-Bench panels the absolute score averaged over tasks per strength.
    ``oracle`` (clean image) is drawn as a dashed horizontal line.

    Example:
        >>> plot_accuracy_vs_level([mmmb_results, rbench_results], "reports/accuracy.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    benchmarks = list(dict.fromkeys(result.benchmark for result in results))
    if not benchmarks:
        raise ValueError("No results to plot.")
    figure, axes = plt.subplots(1, len(benchmarks), figsize=(4.5 * len(benchmarks), 3.6), squeeze=False)
    for axis, benchmark in zip(axes[0], benchmarks, strict=True):
        members = [result for result in results if result.benchmark == benchmark]
        levels = list(dict.fromkeys(level for result in members for level in result.levels))
        scale = 100.0 if members[0].kind == "mcq" else 1.0
        for model_number, result in enumerate(members):
            marker = _MODEL_MARKERS[model_number % len(_MODEL_MARKERS)]
            for mode in _ordered_modes([result], modes):
                curve = _curve(result, mode)
                style = {"color": _MODE_COLORS.get(mode), "label": _row_label(result, mode)}
                if mode == "oracle" and result.kind == "mcq" and 0 in curve:
                    axis.axhline(curve[0] * scale, linestyle="--", linewidth=1, **style)
                    continue
                positions = [levels.index(level) for level in curve]
                axis.plot(positions, [value * scale for value in curve.values()], marker=marker, **style)
        axis.set_xticks(range(len(levels)), [level_label(level) for level in levels])
        axis.set_title(benchmark)
        axis.set_xlabel("degradation")
        axis.set_ylabel("accuracy (%)" if scale == 100.0 else "absolute score")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, dpi=120, format=path.suffix.lstrip(".") or "png")
    os.replace(partial, path)  # a failed write never leaves a truncated plot
    plt.close(figure)
    return path


def write_json(results: Sequence[BenchmarkResults], path: str | os.PathLike[str]) -> Path:
    """Write several results (records and metrics) to one JSON file.

    Example:
        >>> write_json([mmmb_results], "reports/results.json")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text_atomically(path, json.dumps([result.to_dict() for result in results], indent=2, ensure_ascii=False))
    return path


def read_json(path: str | os.PathLike[str]) -> list[BenchmarkResults]:
    """Read results written by `write_json` (level keys, strings in JSON, become ints again).

    Example:
        >>> results = read_json("reports/results.json")  # doctest: +SKIP
    """

    def restore_keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {(int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k): restore_keys(v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore_keys(v) for v in value]
        return value

    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    return [BenchmarkResults(**restore_keys(entry)) for entry in entries]


def write_report(results: Sequence[BenchmarkResults], output_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.md`` (tables), ``accuracy_vs_level.png`` and ``results.json`` into ``output_dir``.

    Example:
        >>> write_report([mmmb_results, rbench_results], "reports/robust-u1")  # doctest: +SKIP
        {'markdown': PosixPath('reports/robust-u1/report.md'), 'plot': ..., 'json': ...}
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    if any(result.kind == "rbench" for result in results):
        sections.append("## R-Bench (absolute)\n\n" + rbench_table(results, kind="absolute"))
        sections.append("## R-Bench (relative)\n\n" + rbench_table(results, kind="relative"))
    mcq = [result for result in results if result.kind == "mcq"]
    if mcq:
        sections.append("## Anti-degradation (accuracy %)\n\n" + mcq_table(results))
        sections.append("## Per category\n\n" + "\n".join(category_table(result) for result in mcq))
    sections.append(  # the one SSIM of robust_u1.image_metrics, stated wherever recovery scores are read
        "_Recovery SSIM (`robust_u1.evaluation.recovery`, the `ssim` module, the stage II reward): Gaussian window "
        "σ = 1.5, 11 × 11 taps, mean over the valid region, as scikit-image and pytorch-msssim compute it._\n"
    )
    markdown = output_dir / "report.md"
    _write_text_atomically(markdown, "\n".join(sections))
    return {
        "markdown": markdown,
        "plot": plot_accuracy_vs_level(results, output_dir / "accuracy_vs_level.png"),
        "json": write_json(results, output_dir / "results.json"),
    }


def model_index_results(results: Sequence[BenchmarkResults], *, modes: Sequence[str] | None = None) -> list[EvalResult]:
    """``huggingface_hub.EvalResult`` entries for a model card's ``model-index``.

    MCQ benchmarks give one accuracy (percent) per mode × level; R-Bench one absolute score per
    mode × task × strength plus the Overall (and the relative Overall when present).

    Example:
        >>> from huggingface_hub import ModelCardData
        >>> card_data = ModelCardData(model_name="Robust-U1", eval_results=model_index_results(all_results))  # doctest: +SKIP
    """
    entries = []
    for result in results:
        dataset_type = _dataset_id(result)
        for mode in _ordered_modes([result], modes):
            for name, metric_type, value in _card_metrics(result, mode):
                entries.append(
                    EvalResult(
                        task_type="visual-question-answering",
                        task_name="Visual Question Answering",
                        dataset_type=dataset_type,
                        dataset_name=result.benchmark,
                        metric_type=metric_type,
                        metric_name=name,
                        metric_value=value,
                    )
                )
    return entries


def _dataset_id(result: BenchmarkResults) -> str:
    if result.kind == "rbench":
        source = RBENCH_SOURCE
    else:
        source = KNOWN_BENCHMARKS.get(result.benchmark, {}).get("path", result.benchmark)
    if source.startswith("hf://datasets/"):
        return "/".join(source.removeprefix("hf://datasets/").split("/")[:2])
    return source


def _card_metrics(result: BenchmarkResults, mode: str) -> list[tuple[str, str, float]]:
    metrics = result.metrics[mode]
    if result.kind == "mcq":
        return [
            (f"Accuracy ({mode}, {level_label(level)})", "accuracy", round(value * 100, 2))
            for level, value in metrics["accuracy"].items()
        ]
    entries = [
        (f"{task} {level} absolute ({mode})", "r_bench_absolute", round(value, 4))
        for task, per_level in metrics["absolute"].items()
        for level, value in per_level.items()
    ]
    entries.append((f"Overall absolute ({mode})", "r_bench_absolute", round(metrics["absolute_overall"], 4)))
    if "relative_overall" in metrics:
        entries.append((f"Overall relative ({mode})", "r_bench_relative", round(metrics["relative_overall"], 4)))
    return entries


def _write_text_atomically(path: Path, text: str) -> None:
    """Write to a temporary name in the same folder, then rename: a failure never leaves a truncated file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
