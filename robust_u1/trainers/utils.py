"""Pieces shared by the Robust-U1 trainers: what is trainable, LoRA on the generation expert, EMA,
per-sample random streams, the model card, and the safety callback (non-finite stop, incomplete
checkpoints)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

logger = logging.get_logger(__name__)

# The generation expert and the flow head: what stage I/II train when the understanding path is frozen
# (the official `freeze_und`).
GENERATION_PARAMETER_MARKERS = ("_moe_gen", "time_embedder.", "vae2llm.", "llm2vae.")
GENERATION_LORA_TARGETS = r".*\.(q_proj_moe_gen|k_proj_moe_gen|v_proj_moe_gen|o_proj_moe_gen|mlp_moe_gen\.(gate_proj|up_proj|down_proj))"


# Public methods the trainers call besides forward that use parameters; FSDP2 must gather them around
# these. `denoise` is not listed: it only calls `guided_velocities` (gathered per step) and the step rules.
FSDP_FORWARD_METHODS = ("encode_images", "encode_edit_latents", "build_edit_contexts", "guided_velocities", "postprocess_latents")


@dataclass
class ImageBoundsArguments:
    """Image size bounds of the training stages; None keeps the processor's (VAE 1024/512, ViT 980/224)."""

    vae_max_size: int | None = field(default=None, metadata={"help": "Long-side bound of VAE images."})
    vae_min_size: int | None = field(default=None, metadata={"help": "Short-side bound of VAE images."})
    vit_max_size: int | None = field(default=None, metadata={"help": "Long-side bound of ViT images."})
    vit_min_size: int | None = field(default=None, metadata={"help": "Short-side bound of ViT images."})

    def apply_image_bounds(self, processor) -> None:
        for name in ("vae_max_size", "vae_min_size", "vit_max_size", "vit_min_size"):
            if getattr(self, name) is not None:
                setattr(processor.image_processor, name, getattr(self, name))


def load_model_and_processor(model, args: ImageBoundsArguments | None, processing_class, trainer_name: str):
    """The shared start of the trainers' ``__init__``: the model (loaded when given as a Hub id or folder)
    and its processor, with the stage's image bounds applied to the processor.

    Args:
        model: a `RobustU1ForConditionalGeneration`, or a name / folder for ``from_pretrained``.
        args: the trainer's config; its ``vae_*`` / ``vit_*`` size bounds are set on the processor.
        processing_class: the processor; None takes the model's own (``model.processor``).
        trainer_name: named in the error when there is no processor.

    Returns:
        ``(model, processing_class)``.

    Raises:
        ValueError: the model carries no processor and none was given.

    Example:
        >>> model, processor = load_model_and_processor("Jiaqi-hkust/Robust-U1", args, None, "FlowMatchingTrainer")  # doctest: +SKIP
    """
    if isinstance(model, (str, os.PathLike)):
        from ..modeling_robust_u1 import RobustU1ForConditionalGeneration

        model = RobustU1ForConditionalGeneration.from_pretrained(model)
    processing_class = processing_class or getattr(model, "processor", None)
    if processing_class is None:
        raise ValueError(f"{trainer_name} needs the model's processor: pass `processing_class=`.")
    if args is not None:
        args.apply_image_bounds(processing_class)
    return model, processing_class


def model_for_calls(trainer):
    """The model whose non-forward methods (encode, prefill, guided velocities…) a training step calls.

    Under FSDP2 that is the wrapped root, with those methods registered so that the sharded
    parameters are gathered around them; otherwise the unwrapped model (DDP hides methods).
    """
    try:
        from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method
    except ImportError:  # torch without FSDP2
        return trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(trainer.model, FSDPModule):
        if not getattr(trainer.model, "_robust_u1_methods_registered", False):
            for name in FSDP_FORWARD_METHODS:
                register_fsdp_forward_method(trainer.model, name)
            trainer.model._robust_u1_methods_registered = True
        return trainer.model
    return trainer.accelerator.unwrap_model(trainer.model)


def is_generation_parameter(name: str) -> bool:
    return any(marker in name for marker in GENERATION_PARAMETER_MARKERS)


def generation_lora_config(r: int = 64, lora_alpha: int = 128, lora_dropout: float = 0.0, **kwargs):
    """A `peft.LoraConfig` on the generation expert's projections (flow_grpo's BAGEL template: r 64, α 128).

    Example:
        >>> trainer = FlowMatchingTrainer(model, args, train_dataset=ds, peft_config=generation_lora_config(r=16))
    """
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=GENERATION_LORA_TARGETS, **kwargs)


def prepare_model_for_training(model, peft_config=None, train_understanding: bool = False):
    """Freezes what the stage does not train and wraps the model with LoRA when ``peft_config`` is given.

    Full fine-tuning trains the generation expert (and the understanding path too with
    ``train_understanding``); the VAE and the fixed position tables are always frozen.
    """
    for name, parameter in model.named_parameters():
        frozen_always = name.startswith("vae.") or name.endswith("pos_embed.pos_embed")
        parameter.requires_grad_(not frozen_always and (train_understanding or is_generation_parameter(name)))
    if peft_config is None:
        return model
    from peft import get_peft_model

    return get_peft_model(model, peft_config)


def sample_generator(device: torch.device, *stream: int) -> torch.Generator:
    """A generator for one training sample, seeded from (seed, step, micro-step, global position…).

    Draws made from it do not depend on how samples are spread over processes or on RNG states
    restored at resume, so a 2-process run and a resumed run see the same timesteps and noise.
    """
    seed = 0
    for value in stream:
        seed = (seed * 1_000_003 + int(value) + 7) % (2**63 - 1)
    return torch.Generator(device=device).manual_seed(seed)


class EMAWeights:
    """Exponential moving average of the trainable parameters (fp32 copies).

    Under FSDP2 the averages are sharded like the model: each process keeps the average of its own
    shards (the ``DTensor`` parameters' local tensors) and updates it without communication. With
    ``defer=True`` the averages are built at their first use (update, load or save), from the
    parameters as they are then: the trainers defer under FSDP, whose sharding happens in ``train()``,
    so no process ever holds a full copy. An EMA built before the model was sharded is re-laid out as
    the parameters' shards at its first update.

    Saved as ``ema.safetensors`` beside a checkpoint (gathered into full tensors, written once);
    `state_dict_with_ema` gives the full model state dict with the averaged values substituted (what
    BAGEL releases as its ``ema.safetensors``).

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> ema = EMAWeights(model, decay=0.9)
        >>> with torch.no_grad():
        ...     _ = model.bias.add_(1.0)
        >>> ema.update(model)  # the average moves 10 % of the way to the new value
        >>> round(ema.shadow["bias"].item() - (model.bias.item() - 1.0), 4)
        0.1
    """

    FILE_NAME = "ema.safetensors"

    def __init__(self, model: torch.nn.Module, decay: float, *, defer: bool = False):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}.")
        self.decay = decay
        self._model = model
        self._shadow: dict[str, torch.Tensor] | None = None if defer else self._averages_of(model)

    @staticmethod
    def _averages_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        # A DTensor parameter (model already sharded) gives a DTensor average with the same shards.
        return {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """The averages by parameter name (FSDP2: ``DTensor`` shards)."""
        if self._shadow is None:
            self._shadow = self._averages_of(self._model)
        return self._shadow

    def _laid_out_like(self, name: str, parameter: torch.Tensor) -> torch.Tensor:
        """The average of ``name``, laid out as ``parameter``'s shards if FSDP2 sharded it after this EMA was built."""
        shadow = self.shadow[name]
        if _is_dtensor(parameter) and not _is_dtensor(shadow):
            from torch.distributed.tensor import distribute_tensor

            # Every process holds the same full average: each keeps its own shard, no communication.
            shadow = distribute_tensor(
                shadow.to(parameter.device), parameter.device_mesh, parameter.placements, src_data_rank=None
            )
            self.shadow[name] = shadow
        return shadow

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, parameter in model.named_parameters():
            if name in self.shadow:
                shadow = self._laid_out_like(name, parameter)
                _local(shadow).lerp_(_local(parameter.detach()).float(), 1.0 - self.decay)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The averages as full CPU tensors; under FSDP2 a collective: every process must call it."""
        return {name: _full(value).contiguous().cpu() for name, value in self.shadow.items()}

    def save(self, folder: str | os.PathLike, write: bool = True) -> None:
        """Writes ``ema.safetensors`` atomically; under FSDP2 call it on every process with ``write`` on one."""
        tensors = self.full_state_dict()
        if write:
            Path(folder).mkdir(parents=True, exist_ok=True)
            atomic_write(Path(folder) / self.FILE_NAME, lambda path: save_file(tensors, str(path)))

    @torch.no_grad()
    def load(self, folder: str | os.PathLike) -> None:
        stored = load_file(str(Path(folder) / self.FILE_NAME))
        if set(stored) != set(self.shadow):
            raise ValueError(f"The EMA state in {folder} does not match the trainable parameters of this run.")
        for name, value in stored.items():
            shadow = self.shadow[name]
            if _is_dtensor(shadow):  # each process keeps its shard of the full saved average
                from torch.distributed.tensor import distribute_tensor

                value = distribute_tensor(value.to(shadow.device), shadow.device_mesh, shadow.placements, src_data_rank=None)
            _local(shadow).copy_(_local(value))

    def state_dict_with_ema(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Full CPU tensors (under FSDP2 a collective: call it on every process)."""
        state = {k: _full(v.detach()).cpu() for k, v in model.state_dict().items()}
        for name, value in self.full_state_dict().items():
            state[name] = value.to(state[name].dtype)
        return state


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return hasattr(tensor, "device_mesh") and hasattr(tensor, "to_local")


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 ``DTensor`` (a collective); a plain tensor itself."""
    return tensor.full_tensor() if _is_dtensor(tensor) else tensor


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of an FSDP2 ``DTensor``; a plain tensor itself."""
    return tensor.to_local() if _is_dtensor(tensor) else tensor


class EMACallback(TrainerCallback):
    """Updates `EMAWeights` after every optimizer step."""

    def __init__(self, ema: EMAWeights, model: torch.nn.Module):
        self.ema, self.model = ema, model

    def on_train_begin(self, args, state, control, **kwargs):
        # A deferred EMA starts from the weights training starts with (sharded by now, or restored on resume).
        _ = self.ema.shadow

    def on_step_end(self, args, state, control, **kwargs):
        self.ema.update(self.model)


def training_hyperparameters(args, names: tuple[str, ...]) -> dict[str, Any]:
    """The named fields of a config, for the model card."""
    known = {f.name for f in fields(args)}
    return {name: getattr(args, name) for name in names if name in known}


def render_training_card(trainer, stage: str, stage_description: str, hyperparameter_names: tuple[str, ...],
                         model_name: str | None = None, dataset_name: str | list[str] | None = None) -> str:  # fmt: skip
    """The README.md of a trainer's output (any `transformers.Trainer`), from ``model_cards/training.md.jinja``."""
    from huggingface_hub import ModelCardData

    from ..model_cards import render_card

    model = trainer.accelerator.unwrap_model(trainer.model)
    base = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    if base is not None and os.path.isdir(base):
        base = None  # a local path means nothing to readers of the Hub page
    is_adapter = hasattr(model, "peft_config")
    datasets = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name or [])
    card_data = ModelCardData(
        base_model=base, datasets=datasets or None, library_name="robust-u1",
        tags=list(getattr(trainer, "_tag_names", ["robust-u1"])),
        pipeline_tag="image-text-to-text",
    )  # fmt: skip
    adapter_summary = ""
    if is_adapter:
        config = next(iter(model.peft_config.values()))
        adapter_summary = f"LoRA r={config.r}, alpha={config.lora_alpha}"
    return render_card(
        "training.md.jinja",
        card_data=card_data.to_yaml(),
        model_name=model_name or Path(trainer.args.output_dir).name,
        repo_id=trainer.args.hub_model_id or Path(trainer.args.output_dir).name,
        stage=stage,
        stage_description=stage_description,
        trainer_name=type(trainer).__name__,
        base_model=base,
        datasets=datasets,
        is_adapter=is_adapter,
        adapter_summary=adapter_summary,
        hyperparameters=training_hyperparameters(trainer.args, hyperparameter_names),
        results=None,
    )


def write_training_card(trainer, stage: str, stage_description: str, hyperparameter_names: tuple[str, ...],
                        model_name: str | None = None, dataset_name: str | list[str] | None = None) -> Path:  # fmt: skip
    """Writes the rendered card as README.md in the trainer's output folder (main process only)."""
    path = Path(trainer.args.output_dir) / "README.md"
    if trainer.is_world_process_zero():
        card = render_training_card(trainer, stage, stage_description, hyperparameter_names, model_name, dataset_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary: Path(temporary).write_text(card))
    return path


def atomic_write(path: str | os.PathLike, write) -> None:
    """Calls ``write(temporary_path)`` for a file in the same folder, then renames it to ``path``,
    so that a failure or a kill never leaves ``path`` truncated (an older version stays intact)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------
# Safety: non-finite losses and gradients, incomplete checkpoints
# ----------------------------------------------------------------------------------------------


class NonFiniteTrainingError(FloatingPointError):
    """A training step produced a non-finite loss or gradient norm; training stopped before the
    optimizer step, so the weights (and every checkpoint written so far) are still finite."""


_NON_FINITE_ADVICE = (
    "training stopped before the optimizer step, so no NaN weights were written; the last checkpoint "
    "is still valid. Usual causes: a non-finite input or reward, too high a learning rate, fp16 overflow."
)


def raise_if_non_finite_loss(trainer, loss: torch.Tensor) -> None:
    """Raises `NonFiniteTrainingError` when ``loss`` is NaN or ±inf on any process.

    The check is gathered over processes so that every rank stops together (a lone rank raising
    would leave the others waiting in the gradient all-reduce).
    """
    losses = trainer.accelerator.gather(loss.detach().float().reshape(1))
    if not bool(torch.isfinite(losses).all()):
        raise NonFiniteTrainingError(
            f"{type(trainer).__name__}: non-finite loss ({losses[~torch.isfinite(losses)][0].item()}) at step {trainer.state.global_step + 1}; "
            + _NON_FINITE_ADVICE
        )


def gradient_norm(model: torch.nn.Module) -> float:
    """The total L2 norm of the gradients of ``model`` (0.0 when there are none)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if hasattr(norm, "full_tensor"):  # FSDP2 DTensor gradients: the norm is a sharded partial sum
        norm = norm.full_tensor()
    return float(norm)


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether a ``checkpoint-N`` folder was written to the end.

    `transformers.Trainer._save_checkpoint` writes ``trainer_state.json`` after the weights, the
    optimizer, the RNG states and our ``ema.safetensors``; a folder whose ``trainer_state.json`` is
    missing or truncated was interrupted while being written.

    Example:
        >>> is_complete_checkpoint("robust-u1-sft/checkpoint-400")
        True
    """
    state = Path(folder) / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return False
    return True


def set_aside_incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Renames interrupted ``checkpoint-N`` folders of ``output_dir`` to ``incomplete-checkpoint-N``.

    `Trainer.train(resume_from_checkpoint=True)` takes the highest-numbered ``checkpoint-N`` folder,
    complete or not, and checkpoint rotation counts every such folder; set aside, an interrupted save
    is invisible to both, so a resumed run continues from the last complete checkpoint. Returns the
    new paths (kept for inspection; they may be deleted).

    Example:
        >>> set_aside_incomplete_checkpoints("robust-u1-sft")
        [PosixPath('robust-u1-sft/incomplete-checkpoint-400')]
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    moved = []
    for folder in sorted(output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")):
        if not folder.is_dir() or not folder.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-").isdigit():
            continue
        if is_complete_checkpoint(folder):
            continue
        target = output_dir / f"incomplete-{folder.name}"
        suffix = 1
        while target.exists():
            target = output_dir / f"incomplete-{folder.name}.{suffix}"
            suffix += 1
        folder.rename(target)
        logger.warning(
            f"{folder} was interrupted while being written (no valid trainer_state.json); moved to {target} "
            "so that resuming starts from the last complete checkpoint. Delete it once inspected."
        )
        moved.append(target)
    return moved


class TrainingSafetyCallback(TrainerCallback):
    """Stops training on a non-finite gradient norm, and sets interrupted checkpoints aside.

    - Before every optimizer step the gradient norm is checked: NaN or ±inf (from a non-finite loss,
      an overflow…) raises `NonFiniteTrainingError`, so the weights and the checkpoints never hold NaN.
    - When the trainer is built, ``checkpoint-N`` folders of ``output_dir`` whose save was interrupted
      (a kill while writing) are renamed (`set_aside_incomplete_checkpoints`), so that
      ``resume_from_checkpoint=True`` resumes from the last complete one.

    `FlowMatchingTrainer` and `FlowGRPOTrainer` add it themselves; pass it to a standard `Trainer`
    (stage III) with ``callbacks=[TrainingSafetyCallback()]``.

    Example:
        >>> trainer = Trainer(model, args, train_dataset=rows, data_collator=collator, callbacks=[TrainingSafetyCallback()])
        >>> trainer.train(resume_from_checkpoint=True)
    """

    def on_init_end(self, args, state, control, **kwargs):
        from accelerate import PartialState

        if args.should_save:
            set_aside_incomplete_checkpoints(args.output_dir)
        if PartialState().num_processes > 1:
            PartialState().wait_for_everyone()  # no rank looks for checkpoints before they are set aside

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        norm = gradient_norm(model)
        if not math.isfinite(norm):
            raise NonFiniteTrainingError(
                f"Non-finite gradient norm ({norm}) at step {state.global_step + 1}; " + _NON_FINITE_ADVICE
            )
