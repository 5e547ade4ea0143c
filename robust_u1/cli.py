"""The ``robust-u1`` command line (also ``python -m robust_u1``).

```bash
robust-u1 recover corrupted.png restored.png --steps 50
robust-u1 ask corrupted.png "What animal is shown?" --option dog --option cat --save-recovered restored.png
robust-u1 convert /path/to/BAGEL-7B-MoT ./bagel-7b-hf --dtype bfloat16
```

Every command takes ``--model`` (a Hub id or folder, official or Hugging Face layout). Without it the
bundled tiny model is used, which has random weights until a trained tiny checkpoint ships.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TINY_RANDOM = "tiny-random"


def _load(model_name: str, dtype: str | None):
    import torch

    if model_name == TINY_RANDOM:
        from .tiny import tiny_random_model

        print(
            "NOTE: using the bundled tiny model with RANDOM weights (no trained checkpoint is bundled yet): "
            "the outputs only show that the pipeline runs.",
            file=sys.stderr,
        )
        model, _ = tiny_random_model(seed=0)
        return model
    from .modeling_robust_u1 import RobustU1ForConditionalGeneration

    model = RobustU1ForConditionalGeneration.from_pretrained(model_name, dtype=getattr(torch, dtype) if dtype else None)
    if torch.cuda.is_available():
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


def _recover_kwargs(args) -> dict:
    return dict(num_inference_steps=args.steps, timestep_shift=args.timestep_shift, cfg_text_scale=args.cfg_text_scale,
                cfg_img_scale=args.cfg_img_scale, generator=_generator(args.seed), progress=True)  # fmt: skip


def run_recover(args) -> int:
    image = _open_input(args.input)
    model = _load(args.model, args.dtype)
    restored = model.recover(image, **_recover_kwargs(args))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    restored.save(args.output)
    print(f"Recovered image written to {args.output}")
    return 0


def run_ask(args) -> int:
    image = _open_input(args.image)
    model = _load(args.model, args.dtype)
    result = model.answer(
        image, args.question, options=args.option or None, recover=not args.no_recover, think=args.think,
        max_new_tokens=args.max_new_tokens, recover_kwargs=_recover_kwargs(args),
    )  # fmt: skip
    if result.recovered_image is not None and args.save_recovered:
        Path(args.save_recovered).parent.mkdir(parents=True, exist_ok=True)
        result.recovered_image.save(args.save_recovered)
        print(f"Recovered image: {args.save_recovered}")
    if result.reasoning:
        print(f"Reasoning: {result.reasoning}")
    print(f"Answer: {result.answer}")
    if result.option:
        print(f"Option: {result.option}")
    return 0


def run_convert(args) -> int:
    from .convert_bagel_weights_to_hf import convert_bagel_checkpoint

    out = convert_bagel_checkpoint(args.input, args.output, args.dtype)
    print(f"Wrote the Hugging Face layout to {out}")
    return 0


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=TINY_RANDOM, help="Hub id or folder (default: the bundled tiny model).")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--steps", type=int, default=50, help="Flow schedule points (official num_timesteps).")
    parser.add_argument("--timestep-shift", type=float, default=3.0)
    parser.add_argument("--cfg-text-scale", type=float, default=4.0)
    parser.add_argument("--cfg-img-scale", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robust-u1", description="Robust-U1: recover corrupted images, then answer.")
    commands = parser.add_subparsers(dest="command", required=True)

    recover = commands.add_parser("recover", help="Restore a corrupted image.")
    recover.add_argument("input")
    recover.add_argument("output")
    _add_sampling_arguments(recover)
    recover.set_defaults(func=run_recover)

    ask = commands.add_parser("ask", help="Answer a question about a (corrupted) image, recovering it first.")
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

    _add_optional_commands(commands)
    return parser


def _add_optional_commands(commands) -> None:
    """Sub-commands contributed by the corruption and evaluation packages."""
    from .corruptions.cli import add_build_dataset_parser, add_corrupt_parser

    add_corrupt_parser(commands)
    add_build_dataset_parser(commands)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, OSError) as error:
        print(f"robust-u1 {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
