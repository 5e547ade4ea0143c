"""The ``robust-u1`` command line (also ``python -m robust_u1``).

```bash
robust-u1 recover corrupted.png restored.png --num-inference-steps 50 --cfg-text-scale 4
robust-u1 ask corrupted.png "What animal is shown?" --option dog --option cat --save-recovered restored.png
robust-u1 convert /path/to/BAGEL-7B-MoT ./bagel-7b-hf --dtype bfloat16
robust-u1 demo --port 7860            # the interactive demo (pip install "robust-u1[demo]")
```

Every command takes ``--model`` (a Hub id or folder, official or Hugging Face layout). Without it the
bundled TinyWorld model is used (`robust_u1.tinyworld`): trained, offline, 2 M parameters, and it only
knows TinyWorld's 32×32 images of coloured shapes.

The sampling flags of ``recover``, ``ask`` and ``eval`` are the fields of `RecoveryConfig`, built by
transformers' `HfArgumentParser` (``--num-inference-steps`` / ``--steps``, ``--sampling-shift`` /
``--timestep-shift``, ``--cfg-text-scale``, ``--cfg-img-scale``, ``--cfg-interval LOW HIGH``,
``--cfg-renorm-type``, ``--cfg-renorm-min``); a flag left out keeps the model's ``recovery_config``.
They are checked before the model is loaded.

Start-up: this module imports only the standard library at the top; building the parser adds
transformers' lightweight `HfArgumentParser` (no torch), and `main` checks the input files before any
command imports torch, so ``--help``, a bad option or a mistyped file name answer at once
(``benchmarks/bench_import.py`` times it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

BUNDLED_MODEL = "tinyworld"


def _placement(args: argparse.Namespace) -> dict:
    """``from_pretrained`` keywords of --device-map / --max-memory / --offload-folder / --quantize, checked first."""
    placement = {}
    if getattr(args, "max_memory", None):
        from .loading import parse_max_memory

        placement["max_memory"] = parse_max_memory(args.max_memory)
    if getattr(args, "device_map", None):
        placement["device_map"] = args.device_map
    elif placement:
        placement["device_map"] = "auto"  # a memory cap means planning a map
    if getattr(args, "offload_folder", None):
        placement["offload_folder"] = args.offload_folder
    if getattr(args, "quantize", None):
        import torch

        from .loading import quantization_config_for

        compute = getattr(torch, args.dtype) if args.dtype else None
        placement["quantization_config"] = quantization_config_for(args.quantize, compute)
    return placement


def _load(model_name: str, dtype: str | None, placement: dict | None = None):
    import torch

    from . import _registration  # noqa: F401  (deferred in the CLI process, see `_MODEL_FREE_COMMANDS`)
    from .modeling_robust_u1 import RobustU1ForConditionalGeneration

    if model_name == BUNDLED_MODEL:
        from .tinyworld import TINYWORLD_CHECKPOINT

        print(
            f"Using the bundled TinyWorld model ({TINYWORLD_CHECKPOINT}): it only knows 32×32 images of coloured "
            "shapes; pass --model for a real checkpoint.",
            file=sys.stderr,
        )
        model_name = str(TINYWORLD_CHECKPOINT)

    placement = placement or {}
    model = RobustU1ForConditionalGeneration.from_pretrained(model_name, dtype=getattr(torch, dtype) if dtype else None, **placement)
    if torch.cuda.is_available() and not placement:  # a device map or quantizer has placed the weights
        model = model.to("cuda")
    if model.processor is None:
        raise ValueError(f"{model_name} has no processor (tokenizer) files; the CLI needs them.")
    return model


def _open_input(path: str):
    from .processing_robust_u1 import to_rgb_image

    return to_rgb_image(Path(path))


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


def _recovery_overrides(args: argparse.Namespace) -> dict:
    """The recovery settings given on the command line, checked (one line) before anything is loaded."""
    from dataclasses import fields

    from .configuration_recovery import RecoveryOverrides, resolve_recovery_config

    overrides = {item.name: getattr(args, item.name) for item in fields(RecoveryOverrides) if getattr(args, item.name) is not None}
    resolve_recovery_config(None, **overrides)  # raises ValueError / TypeError naming a bad value
    return overrides


def _recover_kwargs(args) -> dict:
    return dict(_recovery_overrides(args), generator=_generator(args.seed), progress=True)


def run_recover(args: argparse.Namespace) -> int:
    _recovery_overrides(args)
    image = _open_input(args.input)
    model = _load(args.model, args.dtype, _placement(args))
    restored = model.recover(image, **_recover_kwargs(args))
    from .image_utils import save_image  # temporary name + rename; converts modes the format cannot hold

    save_image(restored, args.output)
    print(f"Recovered image written to {args.output}")
    return 0


def run_ask(args: argparse.Namespace) -> int:
    _recovery_overrides(args)
    image = _open_input(args.image)
    model = _load(args.model, args.dtype, _placement(args))
    result = model.answer(
        image, args.question, options=args.option or None, recover=not args.no_recover, think=args.think,
        max_new_tokens=args.max_new_tokens, recover_kwargs=_recover_kwargs(args),
    )  # fmt: skip
    if result.recovered_image is not None and args.save_recovered:
        from .image_utils import save_image

        save_image(result.recovered_image, args.save_recovered)
        print(f"Recovered image: {args.save_recovered}")
    if result.reasoning:
        print(f"Reasoning: {result.reasoning}")
    print(f"Answer: {result.answer}")
    if result.option:
        from .evaluation.options import normalize_options

        print(f"Option: {result.option} ({normalize_options(args.option)[result.option]})")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from .convert_bagel_weights_to_hf import convert_bagel_checkpoint

    out = convert_bagel_checkpoint(args.input, args.output, args.dtype)
    print(f"Wrote the Hugging Face layout to {out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from .corruptions import degrade_at_level
    from .evaluation import (
        KNOWN_BENCHMARKS,
        STRENGTH_NAMES,
        JudgeRequestError,
        MissingAPIKeyError,
        evaluate_benchmark,
        load_mcq_benchmark,
        load_rbench,
        write_report,
    )

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}.")
    args.placement = _placement(args)  # placement flags are checked before any work
    is_rbench = args.benchmark.lower().replace("-", "") == "rbench"
    try:
        if is_rbench:
            benchmark = load_rbench(_judge(args), **({"source": args.source} if args.source else {}))
            degrade = None
            levels = _rbench_levels(args.levels, STRENGTH_NAMES)
        else:
            named = args.source is not None or args.benchmark in KNOWN_BENCHMARKS
            benchmark = load_mcq_benchmark(args.source or args.benchmark, name=args.benchmark if named else None)
            degrade = lambda image, level, seed: degrade_at_level(image, level, seed)[0]  # noqa: E731
            levels = _mcq_levels(args.levels)
        if args.limit:
            benchmark.items = benchmark.items[: args.limit]
        output = Path(args.output)
        # evaluate_benchmark reads the caches and checks the judge before the first answer, and the model loads
        # only then: bad input fails in seconds, and a fully cached run (re-scoring, a new report) never loads it.
        results = evaluate_benchmark(
            benchmark, _lazy_answerer(args), levels=levels, modes=args.modes, degrade=degrade, seed=args.seed,
            cache_path=output / "answers.jsonl", model_name=args.model,
        )  # fmt: skip
    except (MissingAPIKeyError, JudgeRequestError) as error:
        # Judge failures are RuntimeErrors; they get the CLI's one-line error too, never a traceback.
        print(f"robust-u1 eval: error: {error}", file=sys.stderr)
        return 2
    from .distributed import is_main_process

    if not is_main_process():  # under `accelerate launch` every process has the results; one writes the report
        return 0
    written = write_report([results], output)
    print(written["markdown"].read_text())
    print(f"Report: {written['markdown']}  plot: {written['plot']}  results: {written['json']}")
    return 0


def _lazy_answerer(args: argparse.Namespace):
    answerer = None

    def answer(image, prompt, options, mode):
        nonlocal answerer
        if answerer is None:
            placement = getattr(args, "placement", None)
            model = _load(args.model, args.dtype, placement) if placement else _load(args.model, args.dtype)
            recover_kwargs = {**_recover_kwargs(args), "progress": False}
            answerer = model.as_answerer(max_new_tokens=args.max_new_tokens, recover_kwargs=recover_kwargs)
        return answerer(image, prompt, options, mode)

    return answer


def _mcq_levels(levels: list[str] | None) -> list[int] | None:
    if levels is None:
        return None
    if not all(level.isdigit() and 0 <= int(level) <= 100 for level in levels):
        raise ValueError(f"--levels for a multiple-choice benchmark are percentages 0..100 (e.g. 0 25 50 100), got {levels}.")
    return [int(level) for level in levels]


def _rbench_levels(levels: list[str] | None, strength_names: dict[int, str]) -> list[str] | None:
    if levels is None:
        return None
    names = [strength_names.get(int(level), level) if level.isdigit() else level.lower() for level in levels]
    unknown = [level for level, name in zip(levels, names) if name not in strength_names.values()]
    if unknown:
        raise ValueError(f"--levels for R-Bench are {list(strength_names.values())} (or 1 2 3), got {unknown}.")
    return names


def _judge(args):
    from .evaluation import ExactMatchJudge, OpenAICompatibleJudge, TransformersJudge

    if args.judge == "exact":
        return ExactMatchJudge()
    if args.judge == "openai":
        if not (args.judge_url and args.judge_model):
            raise ValueError("--judge openai needs --judge-url and --judge-model (the key comes from $OPENAI_API_KEY).")
        return OpenAICompatibleJudge(
            args.judge_url, args.judge_model, timeout=args.judge_timeout, max_retries=args.judge_retries
        )
    if not args.judge_model:
        raise ValueError("--judge transformers needs --judge-model (a local folder or Hub id).")
    return TransformersJudge(args.judge_model)


def run_demo(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1 (runs of the model at a time), got {args.concurrency}.")
    try:
        import gradio  # noqa: F401  (checked before loading the model)
    except ImportError:
        raise ValueError('the demo needs Gradio: pip install "robust-u1[demo]"') from None
    from .demo import launch_demo

    model = _load(args.model, args.dtype, _placement(args))
    print(f"Robust-U1 demo of {args.model} on http://{args.host}:{args.port} (Ctrl+C stops it)", file=sys.stderr)
    launch_demo(model, model.processor, host=args.host, port=args.port, share=args.share, concurrency=args.concurrency)
    return 0


def run_push(args: argparse.Namespace) -> int:
    from .evaluation import read_json
    from .hub import push_artifact

    results = read_json(args.results) if args.results else None
    url = push_artifact(args.folder, args.repo_id, results=results, private=args.private)
    print(f"Pushed {args.folder} to {args.repo_id}: {url}")
    return 0


def run_estimate_memory(args: argparse.Namespace) -> int:
    if args.image_size < 16:
        raise ValueError(f"--image-size must be at least 16 pixels, got {args.image_size}.")
    from .memory import estimate_memory, format_estimates

    modes = [args.quantize] if args.quantize else [None, "int8", "nf4"]
    estimates = [estimate_memory(args.model, args.image_size, mode, args.dtype) for mode in modes]
    print(format_estimates(estimates))
    tokens = estimates[0].tokens
    print(
        f"KV tokens: gen {tokens['gen']}, cfg_text {tokens['cfg_text']}, cfg_img {tokens['cfg_img']} "
        f"({tokens['vae_image']} VAE + {tokens['vit_image']} ViT image tokens); CUDA context (≈0.5 GiB) not included."
    )
    return 0


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=BUNDLED_MODEL, help=f"Hub id or folder (default {BUNDLED_MODEL!r}: the bundled TinyWorld model)."
    )
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--seed", type=int, default=0)
    _add_placement_arguments(parser)


def _add_placement_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device-map", default=None, help="auto, balanced, sequential or one device (cuda:0, cpu).")
    parser.add_argument("--max-memory", default=None, help="Per-device caps for the device map, e.g. 0=20GiB,1=20GiB,cpu=64GiB.")
    parser.add_argument("--offload-folder", default=None, help="Folder for weights the device map puts on disk.")
    parser.add_argument("--quantize", default=None, choices=["nf4", "int8", "int8-torchao"], help="4-/8-bit weights.")


def build_parser() -> argparse.ArgumentParser:
    # HfArgumentParser (an argparse.ArgumentParser) turns the RecoveryConfig fields into the sampling
    # flags of `recover`, `ask` and `eval`, so that their names, help and defaults are written once.
    from transformers import HfArgumentParser

    from .configuration_recovery import RecoveryOverrides

    class _Parser(_OneLineErrors, HfArgumentParser):
        pass

    parser = _Parser(
        prog="robust-u1", description="Robust-U1: recover corrupted images, then answer.", formatter_class=argparse.HelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sampling = dict(dataclass_types=[RecoveryOverrides], formatter_class=argparse.HelpFormatter)  # defaults are in the help
    recover = commands.add_parser("recover", help="Restore a corrupted image.", **sampling)
    recover.add_argument("input")
    recover.add_argument("output")
    _add_sampling_arguments(recover)
    recover.set_defaults(func=run_recover)

    ask = commands.add_parser(
        "ask", help="Answer a question about a (corrupted) image, recovering it first.", **sampling
    )
    ask.add_argument("image")
    ask.add_argument("question")
    ask.add_argument("--option", action="append", help="A multiple-choice option (repeat for each).")
    ask.add_argument("--no-recover", action="store_true", help="Answer from the corrupted image alone (baseline).")
    ask.add_argument("--save-recovered", default=None, help="Where to write the recovered image.")
    ask.add_argument("--think", action="store_true", help="Reason inside <think>…</think> first.")
    ask.add_argument("--max-new-tokens", type=int, default=256)
    _add_sampling_arguments(ask)
    ask.set_defaults(func=run_ask)

    convert = commands.add_parser("convert", help="Convert an official BAGEL checkpoint to the Hugging Face layout.")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    convert.set_defaults(func=run_convert)

    evaluate = commands.add_parser("eval", help="Evaluate under corruption (MCQ benchmarks or R-Bench).", **sampling)
    evaluate.add_argument("benchmark", help="MMStar, RealWorldQA, MMMB, R-Bench, or a name for --source.")
    evaluate.add_argument(
        "--source", default=None,
        help="A local .tsv / .csv / .parquet / .jsonl / .json file or a Hub dataset id instead of the default source.",
    )  # fmt: skip
    evaluate.add_argument("--output", required=True, help="Folder for answers (resumable cache) and the report.")
    evaluate.add_argument(
        "--levels", nargs="+", default=None, help="Degradation levels (MCQ: 0 25 50 100; R-Bench: low mid high)."
    )
    evaluate.add_argument("--modes", nargs="+", default=["baseline", "recover", "oracle"], choices=["baseline", "recover", "oracle"])
    evaluate.add_argument("--limit", type=int, default=None, help="Only the first N items.")
    evaluate.add_argument("--judge", choices=["exact", "openai", "transformers"], default="exact")
    evaluate.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL (…/v1) for --judge openai.")
    evaluate.add_argument("--judge-model", default=None)
    evaluate.add_argument(
        "--judge-timeout", type=float, default=60.0, help="Seconds to wait for each judge reply (default 60)."
    )
    evaluate.add_argument(
        "--judge-retries", type=int, default=2, help="Retries of a judge request after a timeout, 429 or 5xx (default 2)."
    )
    evaluate.add_argument("--max-new-tokens", type=int, default=64)
    _add_sampling_arguments(evaluate)
    evaluate.set_defaults(func=run_eval)

    push = commands.add_parser("push", help="Push a saved model / adapter folder (with its card) to the Hub.")
    push.add_argument("folder")
    push.add_argument("repo_id")
    push.add_argument("--results", default=None, help="results.json from `robust-u1 eval`, merged into the model-index.")
    push.add_argument("--private", action="store_true")
    push.set_defaults(func=run_push)

    memory = commands.add_parser("estimate-memory", help="Memory of one recovery, from the config only (no weights read).")
    memory.add_argument("--model", required=True, help="Hub id or folder, either layout.")
    memory.add_argument("--image-size", type=int, default=1024, help="Side of the square input image in pixels.")
    memory.add_argument("--quantize", default=None, choices=["nf4", "int8", "int8-torchao"], help="One mode (default: bf16, INT8, NF4).")
    memory.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    memory.set_defaults(func=run_estimate_memory)

    demo = commands.add_parser("demo", help='Serve the interactive demo (Gradio; pip install "robust-u1[demo]").')
    demo.add_argument(
        "--model", default=BUNDLED_MODEL, help=f"Hub id or folder (default {BUNDLED_MODEL!r}: the bundled TinyWorld model)."
    )
    demo.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    demo.add_argument("--host", default="127.0.0.1", help="Address to serve on (0.0.0.0 for every interface).")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--share", action="store_true", help="Also serve through a public gradio.live link.")
    demo.add_argument("--concurrency", type=int, default=1, help="Runs of the model at a time; other users wait in the queue.")
    _add_placement_arguments(demo)
    demo.set_defaults(func=run_demo)

    from .corruptions.cli import add_corrupt_parser
    from .data.cli import add_build_dataset_parser

    add_corrupt_parser(commands)
    add_build_dataset_parser(commands)
    return parser


class _OneLineErrors:
    """Mixed into the parser: a usage error is one stderr line (exit code 2) that points to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# Local inputs that must exist, per command: checked before a command imports torch (seconds).
# (`convert` and `--model` also take Hub ids, `eval --source` too.)
_INPUT_PATHS: dict[str, tuple[str, ...]] = {
    "recover": ("input",),
    "ask": ("image",),
    "push": ("folder", "results"),
    "corrupt": ("input",),
    "build-dataset": ("source",),
}


# `robust_u1._started_as_cli` defers registering the model (it imports torch and transformers); `main`
# registers it before every command but these, which never load a model (`eval` loads it in `_load`, only
# when an answer is not cached yet).
_MODEL_FREE_COMMANDS = ("corrupt", "build-dataset", "push", "eval")


def _missing_input(args: argparse.Namespace) -> str | None:
    for name in _INPUT_PATHS.get(args.command, ()):
        path = getattr(args, name, None)
        if path is not None and not Path(path).exists():
            return f"{name.replace('_', ' ')} not found: {path} (check the path)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = _missing_input(args)
    if missing:
        print(f"robust-u1 {args.command}: error: {missing}", file=sys.stderr)
        return 2
    try:
        if args.command not in _MODEL_FREE_COMMANDS:
            from . import _registration  # noqa: F401  (Auto classes and the robust-vqa pipeline)
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, OSError) as error:
        print(f"robust-u1 {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
