"""Evaluation harness for Robust-U1: MCQ benchmarks under degradation, R-Bench, recovery quality, reports.

The harness never imports the model; it drives any callable that satisfies
:class:`~robust_u1.evaluation.protocols.Answerer` (or :class:`~robust_u1.evaluation.protocols.Recoverer`).

Example:
    >>> from robust_u1.evaluation import evaluate_benchmark, load_mcq_benchmark, write_report
    >>> bench = load_mcq_benchmark("MMStar")  # doctest: +SKIP
    >>> results = evaluate_benchmark(bench, answer_fn, degrade=degrade, cache_path="runs/mmstar.jsonl")  # doctest: +SKIP
    >>> write_report([results], "reports/")  # doctest: +SKIP

Names are imported lazily, so importing this package does not load torch, datasets or matplotlib.
"""

from .._lazy import lazy_attributes

_LAZY_ATTRIBUTES: dict[str, str] = {
    # protocols
    "Answer": ".protocols",
    "Answerer": ".protocols",
    "Degrader": ".protocols",
    "Mode": ".protocols",
    "MODES": ".protocols",
    "Recoverer": ".protocols",
    # option extraction and prompts
    "extract_option": ".options",
    "final_answer_text": ".options",
    "normalize_options": ".options",
    "parse_choice_string": ".options",
    "strip_reasoning": ".options",
    "RECOVERY_PROMPT": ".prompts",
    "build_mcq_prompt": ".prompts",
    "build_open_prompt": ".prompts",
    "build_rbench_prompt": ".prompts",
    "with_recovery": ".prompts",
    # benchmarks
    "DEGRADATION_LEVELS": ".mcq",
    "KNOWN_BENCHMARKS": ".mcq",
    "MCQBenchmark": ".mcq",
    "load_mcq_benchmark": ".mcq",
    "mcq_metrics": ".mcq",
    "score_mcq_reply": ".mcq",
    "split_question_options": ".mcq",
    "RBenchBenchmark": ".rbench",
    "STRENGTH_NAMES": ".rbench",
    "load_rbench": ".rbench",
    "rbench_metrics": ".rbench",
    # judges
    "ChatJudge": ".judges",
    "ExactMatchJudge": ".judges",
    "Judge": ".judges",
    "JudgeRequestError": ".judges",
    "MissingAPIKeyError": ".judges",
    "OpenAICompatibleJudge": ".judges",
    "TransformersJudge": ".judges",
    "parse_judge_score": ".judges",
    # recovery quality
    "LPIPSWeightsNotFoundError": ".recovery",
    "evaluate_recovery": ".recovery",
    "load_lpips": ".recovery",
    "lpips_weights_path": ".recovery",
    "recovery_metrics": ".recovery",
    "recovery_scores": ".recovery",
    "metric_path": ".metrics",
    # running and reporting
    "BenchmarkResults": ".runner",
    "EvalCase": ".runner",
    "evaluate_benchmark": ".runner",
    "JsonlCache": ".cache",
    "category_table": ".report",
    "mcq_table": ".report",
    "model_index_results": ".report",
    "plot_accuracy_vs_level": ".report",
    "rbench_table": ".report",
    "write_json": ".report",
    "read_json": ".report",
    "write_report": ".report",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES)

__all__ = sorted(_LAZY_ATTRIBUTES)
