"""Stage III: answering over [I_c, I_r, Q] with the standard `transformers.Trainer`.

The paper's third stage fine-tunes the understanding path on the corrupted image I_c, the image
I_r that the model itself recovered, and the question, with next-token cross-entropy on the answer
only (the paper's stage III; MathCanvas' stage-2 template for the loss weights). This module holds
the three pieces that make that a plain ``Trainer`` run:

- `build_reasoning_dataset` precomputes I_r once with `model.recover` (cached and resumable), so
  training never runs the 50-step sampler;
- `load_robust_r1_jsonl` imports the Robust-R1 reasoning data (LLaVA-style conversations);
- `ReasoningCollator` packs [ViT(I_c), ViT(I_r), prompt, target] samples for the packed forward, and
  `reasoning_training_arguments` sets the three `TrainingArguments` that the packed batches need.

Target format: the model's reply format (`robust_u1.prompting.format_reply`):
``<think>{reasoning}</think><ANSWER>{answer}</ANSWER>``, or ``<ANSWER>{answer}</ANSWER>`` without
reasoning, so `model.answer` and the benchmark scorers (both read replies with
`robust_u1.prompting.parse_reply` / ``final_answer_text``) parse what the trained model writes without
any change. MCQ answers are the option letter, as the scorers expect.

`TrainingSafetyCallback` (from `robust_u1.trainers`) gives the standard Trainer what our stage I/II
trainers have built in: it stops on a non-finite gradient norm before NaN reaches the weights, and
sets aside checkpoints whose save was interrupted so that ``resume_from_checkpoint=True`` works.

Example:
    >>> model, processor = tiny_random_model()
    >>> train = build_reasoning_dataset(load_robust_r1_jsonl("train.jsonl"), model, cache_dir="cache")
    >>> trainer = Trainer(model, reasoning_training_arguments("out", max_steps=100), train_dataset=train,
    ...                   data_collator=ReasoningCollator(processor, model.config),
    ...                   callbacks=[TrainingSafetyCallback()])
    >>> trainer.train()
"""

from __future__ import annotations

import json
import math
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets.fingerprint import Hasher
from transformers import TrainingArguments

from .collators import PackedBatchBuilder, TextItem, VitItem
from .data.caching import cached_map, fingerprint
from .distributed import check_shared_cache, gather_datasets, process_share
from .prompting import THINK_SYSTEM_PROMPT, build_question_prompt, format_reply, normalize_options, parse_choice_string
from .trainers.utils import sample_generator

REASONING_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "recovered_image": datasets.Image(),
        "question": datasets.Value("string"),
        "options": datasets.List(datasets.Value("string")),
        "answer": datasets.Value("string"),
        "reasoning": datasets.Value("string"),
    }
)
"""Columns of `build_reasoning_dataset` (other input columns, e.g. ``category``, are kept as they are)."""

# The understanding expert's projections (no ``_moe_gen``, no ViT): what answering trains.
UNDERSTANDING_LORA_TARGETS = (
    r"language_model\.model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
)
# `model.recover` arguments that the builder sets itself.
_BUILDER_RECOVER_ARGUMENTS = ("images", "generator", "latents", "output_type", "progress", "processor")
_OPTION_LETTERS = tuple(string.ascii_uppercase)


def format_reasoning_target(answer: str, reasoning: str | None = None) -> str:
    """The text the model learns to write (`robust_u1.prompting.format_reply`, kept under this name).

    Example:
        >>> format_reasoning_target("B", "The sign is red.")
        '<think>The sign is red.</think><ANSWER>B</ANSWER>'
        >>> format_reasoning_target("B")
        '<ANSWER>B</ANSWER>'
    """
    return format_reply(answer, reasoning)


def default_reasoning_prompt(question: str, options: Sequence[str] | Mapping[str, str] | None, recover: bool = True) -> str:
    """The prompt `model.answer` uses (``recover=True`` by default): the demo's MCQ layout, or the open-question one.

    Example:
        >>> print(default_reasoning_prompt("Which animal?", ["dog", "cat"]), end="")
        Question: Which animal?
        Options:
        A. dog
        B. cat
        Please restore this corrupted image to its clean version.
        Based on what you observe in the restored image, please select the correct answer from the options above.
    """
    return build_question_prompt(question, options, recover=recover)


# ----------------------------------------------------------------------------------------------
# Precomputing I_r
# ----------------------------------------------------------------------------------------------


def build_reasoning_dataset(
    dataset: datasets.Dataset,
    model,
    processor=None,
    *,
    recover_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 4,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    num_proc: int | None = None,
    rows_per_shard: int = 64,
) -> datasets.Dataset:
    """Adds the recovered image I_r (``model.recover`` of each ``image``) to a question-answering dataset.

    Input columns: ``image`` (I_c: a ``datasets.Image`` or file paths), ``question``, the options as an
    ``options`` column (list, ``{letter: text}`` or R-Bench's ``"A.x; B.y"``) or as ``A``, ``B``, …
    columns (VLMEvalKit TSV layout; empty cells end the list), ``answer`` (an option letter or text;
    an answer equal to an option's text becomes its letter), optional ``reasoning``; any other column
    (``category``, ``index``, …) is kept. Output columns: `REASONING_FEATURES` plus the kept ones, with
    ``options`` None for open questions and I_c stored byte for byte.

    Row ``i`` recovers with a generator seeded from ``(seed, i)``, so results depend neither on
    ``batch_size`` nor on ``num_proc``. Caching: the rows are mapped in shards of ``rows_per_shard``, each
    with its own cache file named after a fingerprint of the dataset, the model (name, config, dtype and
    a probe of the first values of every parameter tensor, so a fine-tuned model never reuses a stale
    cache), the processor's image transforms, ``recover_kwargs`` and ``seed``. A rerun loads every
    shard; an interrupted run (exception, kill) resumes at the first unfinished shard. Shards are
    needed because ``Dataset.map`` writes to a temporary file that it only renames when the whole map
    succeeds, whatever its ``writer_batch_size``; the builder keeps ``writer_batch_size = batch_size``
    so memory stays at one batch of images.

    Args:
        dataset: the question-answering rows (I_c is the corrupted image).
        model: a `RobustU1ForConditionalGeneration` (or a PEFT wrapper of one).
        processor: its processor (default ``model.processor``).
        recover_kwargs: arguments of `model.recover` (``num_inference_steps``, guidance scales, …).
        batch_size: images per `model.recover` call.
        cache_dir: folder of the cache files (default: ``datasets``' cache, see `data.caching`).
        seed: base seed of the recovery noise.
        num_proc: worker processes for ``Dataset.map`` (CPU models; a CUDA model cannot be forked).
        rows_per_shard: rows per cache file, i.e. the most work an interruption can lose.

    Example:
        >>> mmstar = datasets.load_dataset("Lin-Chen/MMStar", split="val")  # doctest: +SKIP
        >>> rows = build_reasoning_dataset(mmstar, model, recover_kwargs={"num_inference_steps": 50})  # doctest: +SKIP
        >>> rows[0]["recovered_image"].size  # doctest: +SKIP
    """
    processor = processor if processor is not None else getattr(model, "processor", None)
    if processor is None:
        raise ValueError("build_reasoning_dataset needs a processor: pass `processor=` or set `model.processor`.")
    if isinstance(dataset, datasets.DatasetDict):
        raise TypeError(f"got a DatasetDict; pick a split, e.g. dataset[{next(iter(dataset))!r}]")
    missing = [column for column in ("image", "question", "answer") if column not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset lacks columns {missing}; its columns are {dataset.column_names}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    for name, value in (("batch_size", batch_size), ("rows_per_shard", rows_per_shard)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    recover_kwargs = dict(recover_kwargs or {})
    reserved = sorted(set(recover_kwargs) & set(_BUILDER_RECOVER_ARGUMENTS))
    if reserved:
        raise ValueError(f"recover_kwargs may not set {reserved}: the builder sets them (per-row seeds, PIL output).")

    if isinstance(dataset.features["image"], datasets.Image):
        # Undecoded, so I_c is passed through with its original bytes instead of being re-encoded.
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    option_columns = _option_columns(dataset.column_names)
    standard = {"image", "question", "answer", "options", "reasoning", *option_columns}
    kept = [column for column in dataset.column_names if column not in standard]
    features = datasets.Features({**REASONING_FEATURES, **{column: dataset.features[column] for column in kept}})

    key = fingerprint(
        "reasoning",
        dataset._fingerprint,
        _model_fingerprint(model),
        processor.image_processor.to_dict(),
        sorted(recover_kwargs.items()),
        seed,
    )
    # Under `accelerate launch` each process maps a contiguous share of the shards (same shard bounds and
    # cache names as one process, so a run resumes whatever the process count) and the shares are gathered.
    check_shared_cache(dataset, cache_dir)
    shards = []
    for start in process_share(range(0, len(dataset), rows_per_shard)):
        stop = min(start + rows_per_shard, len(dataset))
        shard = dataset.select(range(start, stop))
        shard_key = f"{key}-{start:09d}-{stop:09d}"
        shards.append(
            cached_map(
                shard,
                _recover_batch,
                prefix="reasoning",
                key=shard_key,
                cache_dir=cache_dir,
                batched=True,
                batch_size=batch_size,
                writer_batch_size=batch_size,
                with_indices=True,
                remove_columns=[column for column in dataset.column_names if column in standard],
                features=features,
                num_proc=num_proc,
                fn_kwargs={
                    "model": model,
                    "processor": processor,
                    "recover_kwargs": recover_kwargs,
                    "seed": seed,
                    "first_index": start,
                    "option_columns": option_columns,
                },
                load_from_cache_file=True,
                desc=f"Recovering images (rows {start}-{stop - 1} of {len(dataset)})",
            )
        )
    return gather_datasets(shards)


def _recover_batch(
    batch: dict[str, list],
    indices: list[int],
    *,
    model,
    processor,
    recover_kwargs: dict[str, Any],
    seed: int,
    first_index: int,
    option_columns: list[str],
) -> dict[str, list]:
    stored = [_stored_image(value) for value in batch["image"]]
    corrupted = [datasets.Image().decode_example(value) for value in stored]
    generators = [sample_generator(model.device, seed, first_index + index) for index in indices]
    recovered = model.recover(
        corrupted, processor=processor, generator=generators, output_type="pil", progress=False, **recover_kwargs
    )
    rows = len(stored)
    options = [_row_options(batch, row, option_columns) for row in range(rows)]
    reasoning = batch.get("reasoning", [None] * rows)
    return {
        "image": stored,
        "recovered_image": recovered,
        "question": [str(question) for question in batch["question"]],
        "options": options,
        "answer": [_as_answer(answer, row_options) for answer, row_options in zip(batch["answer"], options)],
        "reasoning": [text.strip() if isinstance(text, str) and text.strip() else None for text in reasoning],
    }


def _stored_image(value: Any) -> dict[str, Any]:
    """An I_c value as stored bytes (a path is read, so the cache does not depend on the file)."""
    if isinstance(value, (str, os.PathLike)):
        value = {"bytes": None, "path": str(value)}
    if value.get("bytes") is None:
        return {"bytes": Path(value["path"]).read_bytes(), "path": value["path"]}
    return value


def _option_columns(columns: Sequence[str]) -> list[str]:
    """``A``, ``B``, … columns in letter order, up to the first missing letter."""
    found = []
    for letter in _OPTION_LETTERS:
        if letter not in columns:
            break
        found.append(letter)
    return found


def _row_options(batch: dict[str, list], row: int, option_columns: list[str]) -> list[str] | None:
    value = batch["options"][row] if "options" in batch else None
    if isinstance(value, str):
        value = parse_choice_string(value)
    if value:
        return list(normalize_options(value).values())
    texts = []
    for letter in option_columns:
        text = batch[letter][row]
        if _is_blank(text):
            break
        texts.append(str(text))
    return texts or None


def _is_blank(value: Any) -> bool:
    # VLMEvalKit TSVs read through pandas leave NaN in unused option cells.
    return value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()


def _as_answer(answer: Any, options: list[str] | None) -> str:
    """The answer as an option letter when it names one (by letter or by its text), else as text."""
    text = str(answer).strip()
    if not options:
        return text
    letters = _OPTION_LETTERS[: len(options)]
    if text.upper() in letters:
        return text.upper()
    matching = [letter for letter, option in zip(letters, options) if option.strip().casefold() == text.casefold()]
    return matching[0] if len(matching) == 1 else text


def _model_fingerprint(model) -> str:
    """Name, config, dtype and the first values of every parameter: what decides `model.recover`'s output."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
    probe = [
        (name, parameter.detach().reshape(-1)[:16].float().cpu().numpy())
        for name, parameter in model.named_parameters()
    ]
    return Hasher.hash([getattr(model, "name_or_path", ""), config, str(model.dtype), probe])


# ----------------------------------------------------------------------------------------------
# Robust-R1 data
# ----------------------------------------------------------------------------------------------

_IMAGE_PLACEHOLDER = re.compile(r"<image>\s*", re.IGNORECASE)
# Robust-R1's answer tag closes with <ANSWER_END> (its reward code); </ANSWER> is accepted too.
_R1_ANSWER = re.compile(r"<answer>(.*?)(?:<answer_end>|</answer>)", re.IGNORECASE | re.DOTALL)
_R1_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_THINK = re.compile(r"<think>(.*?)</think>", re.IGNORECASE | re.DOTALL)
# Robust-R1 appends its output-format instruction to the question; our prompt builder adds its own.
_R1_FORMAT_INSTRUCTION = re.compile(r"\s*First output the (?:the )?types of degradations.*\Z", re.DOTALL)
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z]|\d{1,2})[.):]\s*(.+?)\s*$")
_HUMAN_ROLES = ("human", "user")
_ASSISTANT_ROLES = ("gpt", "assistant")


def load_robust_r1_jsonl(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> datasets.Dataset:
    """Reads Robust-R1 reasoning data (jqtangust/Robust-R1 ``train.jsonl`` / ``test.jsonl``) as stage III rows.

    Each line is a LLaVA-style record ``{"id", "image": "x.jpg" (or a one-item list), "conversations":
    [{"from": "human", "value": "<image>\\nQuestion\\nA. …\\nB. …"}, {"from": "gpt", "value": reply}]}``.
    The reply's answer is the last ``<ANSWER>…<ANSWER_END>`` (or ``…</ANSWER>``); the reasoning is the
    ``<think>`` block when there is one, else everything before the answer tag (Robust-R1's
    ``<TYPE>``/``<INFLUENCE>``/``<REASONING>``/``<CONCLUSION>`` chain, kept verbatim). Trailing option
    lines labelled ``A.``/``B)``/``(C)`` or ``0.``/``1.`` (A-OKVQA's numbering) become ``options``, and an
    answer given as a label or as an option's text becomes its letter. Image paths are resolved against
    ``image_root`` (default: the JSONL file's folder), as Robust-R1's ``--image_folders``.

    Returns:
        A dataset with columns ``id``, ``image`` (``datasets.Image``), ``question``, ``options`` (list or
        None), ``answer`` and ``reasoning`` (None when the reply has none), ready for
        `build_reasoning_dataset`.

    Example:
        >>> rows = load_robust_r1_jsonl("Robust-R1/train.jsonl", image_root="Robust-R1/train_images")  # doctest: +SKIP
        >>> rows[0]["answer"], rows[0]["options"]  # doctest: +SKIP
        ('C', ['trucks', 'wagons', 'cars', 'jeeps'])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    rows = []
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    rows.append(_robust_r1_row(json.loads(line), root))
                except (KeyError, TypeError, ValueError) as error:
                    raise ValueError(f"{path}:{line_number}: not a Robust-R1 record ({error})") from error
    if not rows:
        raise ValueError(f"{path} holds no records")
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "options": datasets.List(datasets.Value("string")),
            "answer": datasets.Value("string"),
            "reasoning": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


def _robust_r1_row(record: dict[str, Any], image_root: Path) -> dict[str, Any]:
    image = record["image"]
    if isinstance(image, list):
        if len(image) != 1:
            raise ValueError(f"expected one image per record, got {len(image)}")
        image = image[0]
    image_path = image_root / image
    if not image_path.is_file():
        raise ValueError(f"image not found: {image_path}")
    turns = record["conversations"]
    prompt = next((turn["value"] for turn in turns if turn["from"] in _HUMAN_ROLES), None)
    reply = next((turn["value"] for turn in turns if turn["from"] in _ASSISTANT_ROLES), None)
    if prompt is None or reply is None:
        raise ValueError("the conversation needs a human turn and a gpt turn")
    question, options = _split_options(_R1_FORMAT_INSTRUCTION.sub("", _IMAGE_PLACEHOLDER.sub("", prompt)).strip())
    answers = _R1_ANSWER.findall(reply)
    if not answers:
        raise ValueError("the reply has no <ANSWER>…<ANSWER_END> tag")
    return {
        "id": str(record.get("id", "")),
        "image": str(image_path),
        "question": question,
        "options": [text for _, text in options] if options else None,
        "answer": _r1_answer(answers[-1].strip(), options),
        "reasoning": _r1_reasoning(reply),
    }


def _split_options(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Question text and its trailing ``(label, option)`` lines, when the labels run A, B, … or 0/1, 1/2, …"""
    lines = text.splitlines()
    start = len(lines)
    while start > 0 and _OPTION_LINE.match(lines[start - 1]):
        start -= 1
    parsed = [_OPTION_LINE.match(line).groups() for line in lines[start:]]
    labels = [label for label, _ in parsed]
    count = len(labels)
    sequences = (list(_OPTION_LETTERS[:count]), [str(i) for i in range(count)], [str(i + 1) for i in range(count)])
    if start == 0 or len(labels) < 2 or labels not in sequences:
        return text, []
    return "\n".join(lines[:start]).strip(), parsed


def _r1_answer(answer: str, options: list[tuple[str, str]]) -> str:
    """An option label (``C``, ``2``, ``(C)``, ``C. cars``) or option text → its letter; other answers as they are."""
    if not options:
        return answer
    labelled = _OPTION_LINE.match(answer)
    label = labelled.group(1) if labelled else answer.strip("()").strip()
    for letter, (option_label, option_text) in zip(_OPTION_LETTERS, options):
        if label == option_label or answer.casefold() == option_text.casefold():
            return letter
    return answer


def _r1_reasoning(reply: str) -> str | None:
    think = _THINK.findall(reply)
    reasoning = think[-1] if think else _R1_ANSWER_OPEN.split(reply, maxsplit=1)[0]
    return reasoning.strip() or None


# ----------------------------------------------------------------------------------------------
# Collation and evaluation
# ----------------------------------------------------------------------------------------------

PromptBuilder = Callable[[str, Sequence[str] | None, bool], str]  # (question, options, recover) → prompt


class ReasoningCollator:
    """Stage III data collator: rows of `build_reasoning_dataset` → packed [ViT(I_c), ViT(I_r), prompt, target].

    The prompt (``prompt_builder(question, options, recover)``, by default the one `model.answer` uses) has no
    loss; the target (`format_reasoning_target`) is a loss text item, so CE covers its tokens and the
    closing ``<|im_end|>``, predicted from the opening ``<|im_start|>`` on (the packer's rule). This is
    the inference layout of ``model.answer(image, question, options, recover=True, think=think)``:
    images through the ViT as `RobustU1Processor.interleaved_blocks` makes them, and with ``think`` BAGEL's
    think system prompt first. Batches go straight into ``model(**batch)``.

    With ``allow_without_recovery`` a row whose ``recovered_image`` is None is packed in the layout of
    ``recover=False`` instead — [ViT(I_c), prompt without the recovery instruction, target] — so one
    run can also train answering from I_c alone; otherwise such a row is an error.

    Example:
        >>> collator = ReasoningCollator(processor, model.config)
        >>> batch = collator([rows[0], rows[1]])
        >>> model(**batch).loss
    """

    def __init__(
        self,
        processor,
        config,
        prompt_builder: PromptBuilder | None = None,
        think: bool = False,
        max_tokens_per_batch: int | None = None,
        allow_without_recovery: bool = False,
    ):
        self.processor = processor
        self.prompt_builder = prompt_builder or default_reasoning_prompt
        self.think = think
        self.allow_without_recovery = allow_without_recovery
        self.builder = PackedBatchBuilder.from_config(config, max_tokens_per_batch)

    def sample(self, example: Mapping[str, Any]) -> list[TextItem | VitItem]:
        """The packing items of one row, e.g. ``collator.sample(rows[0])`` → [VitItem, VitItem, TextItem, TextItem]."""
        required = ("image", "question", "answer") if self.allow_without_recovery else ("image", "recovered_image", "question", "answer")
        missing = [key for key in required if example.get(key) is None]
        if missing:
            raise KeyError(
                f"Reasoning examples need {missing}; run build_reasoning_dataset first (got {sorted(example)})."
            )
        image_processor = self.processor.image_processor
        images = [example["image"]] + ([] if example.get("recovered_image") is None else [example["recovered_image"]])
        prompt = self.prompt_builder(example["question"], example.get("options"), len(images) == 2)
        target = format_reasoning_target(example["answer"], example.get("reasoning"))
        system = [TextItem(self.processor.encode_text(THINK_SYSTEM_PROMPT))] if self.think else []
        return [
            *system,
            *(VitItem(image_processor.vit_pixel_values(image)) for image in images),
            TextItem(self.processor.encode_text(prompt)),
            TextItem(self.processor.encode_text(target), loss=True),
        ]

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return self.builder([self.sample(example) for example in examples])


@torch.no_grad()
def answer_token_loss(
    model, dataset: Sequence[Mapping[str, Any]], collator: ReasoningCollator, batch_size: int = 8
) -> float:
    """Mean next-token CE over all target tokens of ``dataset`` (each token weighs the same).

    Example:
        >>> before = answer_token_loss(model, held_out, collator)  # doctest: +SKIP
    """
    if len(dataset) == 0:
        raise ValueError("answer_token_loss needs at least one example")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            device = model.device
            output = model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
            total += float(output.ce.double().sum())
            count += output.ce.numel()
    finally:
        model.train(was_training)
    return total / count


# ----------------------------------------------------------------------------------------------
# Trainer settings
# ----------------------------------------------------------------------------------------------


def reasoning_training_arguments(output_dir: str | os.PathLike, **kwargs) -> TrainingArguments:
    """`TrainingArguments` for the standard `Trainer` on `ReasoningCollator` batches; ``kwargs`` set the rest.

    Three settings are needed (overriding them raises):

    - ``remove_unused_columns=False``: the collator reads the raw rows (images, question, …), which
      are not arguments of the packed forward, so the Trainer must not drop them;
    - ``label_names=["packed_label_ids"]``: the Trainer computes an eval loss only when every label
      name is in the batch, or with ``label_names=[]`` only for models whose forward has
      ``return_loss=True`` (ours has not, so ``[]`` reports no ``eval_loss``); naming the packed
      labels makes it call the forward's loss. (The Trainer's own guess from the forward's argument
      names is the same list; it is set here so that it does not depend on that guess.)
    - ``prediction_loss_only=True``: evaluation would otherwise gather every output tensor (packed
      hidden states included) across batches; the loss is what stage III evaluation needs.

    Example:
        >>> args = reasoning_training_arguments("out", max_steps=1000, learning_rate=1e-5, per_device_train_batch_size=4)
        >>> trainer = Trainer(model, args, train_dataset=train, eval_dataset=held_out, data_collator=collator,
        ...                   callbacks=[TrainingSafetyCallback()])
    """
    required = {"remove_unused_columns": False, "label_names": ["packed_label_ids"], "prediction_loss_only": True}
    conflicts = sorted(name for name, value in required.items() if name in kwargs and kwargs[name] != value)
    if conflicts:
        raise ValueError(f"Stage III batches need {', '.join(f'{n}={required[n]!r}' for n in conflicts)}.")
    return TrainingArguments(output_dir=str(output_dir), **{**kwargs, **required})


def understanding_lora_config(r: int = 64, lora_alpha: int | None = None, lora_dropout: float = 0.0, **kwargs):
    """A `peft.LoraConfig` on the understanding expert's attention and MLP projections (α = 2r by default).

    Example:
        >>> model = peft.get_peft_model(model, understanding_lora_config(r=16))
    """
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha or 2 * r,
        lora_dropout=lora_dropout,
        target_modules=UNDERSTANDING_LORA_TARGETS,
        **kwargs,
    )


__all__ = [
    "REASONING_FEATURES",
    "UNDERSTANDING_LORA_TARGETS",
    "ReasoningCollator",
    "answer_token_loss",
    "build_reasoning_dataset",
    "default_reasoning_prompt",
    "format_reasoning_target",
    "load_robust_r1_jsonl",
    "reasoning_training_arguments",
    "understanding_lora_config",
]


REASONING_CARD_HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "num_train_epochs",
    "lr_scheduler_type", "warmup_steps", "seed",
)  # fmt: skip


def create_reasoning_model_card(trainer, model_name: str | None = None, dataset_name: str | None = None):
    """Writes the stage III model card (``model_cards/training.md.jinja``) into the trainer's output folder.

    Example:
        >>> trainer = Trainer(model, reasoning_training_arguments("robust-u1-final"), data_collator=collator, ...)
        >>> trainer.train()
        >>> create_reasoning_model_card(trainer, dataset_name="jqtangust/Robust-R1")
    """
    from .trainers.utils import write_training_card

    return write_training_card(
        trainer, "stage III (multimodal reasoning over the corrupted and the recovered image)",
        "Stage III teaches the model to answer from the interleaved corrupted image, its own recovery and the "
        "question, with next-token loss on the reasoning and the answer.",
        REASONING_CARD_HYPERPARAMETERS, model_name, dataset_name,
    )  # fmt: skip
