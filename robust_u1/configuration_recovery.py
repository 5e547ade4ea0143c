"""The recovery (image-editing) settings in one object, like transformers' `GenerationConfig`.

`RecoveryConfig` holds the sampling settings of `model.recover()`: the flow schedule (number of points
and its shift) and BAGEL's three-context guidance (`GuidanceConfig`). Its defaults are the official
Robust-U1 demo's and are written only here; `recover()`, `FlowGRPOConfig` (rollouts), the CLI and the
example scripts read them from this class. A model saves its settings as ``recovery_config.json``
next to its weights and `from_pretrained` loads them as ``model.recovery_config``; keyword arguments
of `recover()` override them for one call.

Every value is checked when the object is built (`validate`), so a bad setting fails with one line
before any model computation, never as a black image.

This module imports neither torch nor transformers at import time: the CLI builds its flags from
these dataclasses before loading anything heavy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

RECOVERY_CONFIG_NAME = "recovery_config.json"
RENORM_TYPES = ("global", "channel", "text_channel")
RenormType = Literal["global", "channel", "text_channel"]


def _check_number(name: str, value: Any, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
    """A finite real number within bounds, else one ValueError/TypeError line naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}.")
    if low is not None and (number <= low if low_open else number < low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ValueError(f"{name} must be {bound}, got {number:g}.")
    if high is not None and number > high:
        raise ValueError(f"{name} must be <= {high:g}, got {number:g}.")
    return number


@dataclass
class GuidanceConfig:
    """BAGEL's image-editing guidance (Robust-U1 demo defaults).

    Args:
        cfg_text_scale: strength of the text condition (gen vs cfg_text context); finite, ≥ 0;
            ≤ 1 disables guidance (only the gen context runs), as in the official code.
        cfg_img_scale: strength of the image condition (text-guided vs cfg_img context); finite, ≥ 0;
            ≤ 1 skips the cfg_img context.
        cfg_interval: two numbers ``(low, high)`` with ``0 ≤ low ≤ high ≤ 1``: guidance is applied
            where ``low < t ≤ high``.
        cfg_renorm_type: ``text_channel`` renormalises the text-guided velocity per token;
            ``channel`` / ``global`` renormalise the final velocity per token / over the whole image.
        cfg_renorm_min: lower clamp of the renormalisation factor, in [0, 1] (1 disables renormalisation).

    Example:
        >>> GuidanceConfig(cfg_text_scale=4.0).is_active(0.5)
        True
        >>> GuidanceConfig(cfg_text_scale=float("nan"))
        Traceback (most recent call last):
        ValueError: cfg_text_scale must be a finite number, got nan.
    """

    cfg_text_scale: float = field(default=4.0, metadata={"help": "Text guidance scale (<= 1 disables guidance)."})
    cfg_img_scale: float = field(default=2.0, metadata={"help": "Image guidance scale (<= 1 skips the cfg_img context)."})
    # A list in the annotation so that HfArgumentParser reads it as two numbers (``--cfg-interval 0.4 1``);
    # it is stored as a tuple.
    cfg_interval: list[float] = field(
        default_factory=lambda: (0.0, 1.0), metadata={"help": "Guidance interval LOW HIGH: guided where LOW < t <= HIGH."}
    )
    cfg_renorm_type: RenormType = field(default="text_channel", metadata={"help": "Guidance renormalisation."})
    cfg_renorm_min: float = field(default=0.0, metadata={"help": "Lower clamp of the renorm factor, in [0, 1]."})

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Checks every guidance setting; raises ValueError / TypeError with one line naming it."""
        self.cfg_text_scale = _check_number("cfg_text_scale", self.cfg_text_scale, low=0.0)
        self.cfg_img_scale = _check_number("cfg_img_scale", self.cfg_img_scale, low=0.0)
        self.cfg_renorm_min = _check_number("cfg_renorm_min", self.cfg_renorm_min, low=0.0, high=1.0)
        if self.cfg_renorm_type not in RENORM_TYPES:
            raise ValueError(
                f"cfg_renorm_type must be 'global', 'channel' or 'text_channel', got {self.cfg_renorm_type!r}."
            )
        interval = self.cfg_interval
        if isinstance(interval, (str, bytes)) or not hasattr(interval, "__len__") or len(interval) != 2:
            raise ValueError(f"cfg_interval must be two numbers (low, high), got {interval!r}.")
        low = _check_number("cfg_interval[0]", interval[0])
        high = _check_number("cfg_interval[1]", interval[1])
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"cfg_interval must satisfy 0 <= low <= high <= 1, got {(low, high)}.")
        self.cfg_interval = (low, high)

    def is_active(self, t: float) -> bool:
        """Whether guidance runs at flow time ``t``."""
        return self.cfg_text_scale > 1.0 and self.cfg_interval[0] < float(t) <= self.cfg_interval[1]

    @property
    def uses_image_context(self) -> bool:
        return self.cfg_img_scale > 1.0


@dataclass
class RecoveryConfig(GuidanceConfig):
    """Every sampling setting of `recover()`: the flow schedule and the guidance.

    Args:
        num_inference_steps: points of the flow schedule including t = 1 and t = 0, as the official
            ``num_timesteps`` (50 → 49 denoising steps); an int ≥ 2.
        sampling_shift: shift ``s`` of the sampling schedule ``t' = s·t / (1 + (s − 1)·t)``, finite and
            > 0 (the official inference ``timestep_shift``; `recover(timestep_shift=...)` still sets it).
            Not the *training* shift of stage I (`FlowMatchingConfig.timestep_shift`, the model
            config's ``timestep_shift``).
        cfg_text_scale, cfg_img_scale, cfg_interval, cfg_renorm_type, cfg_renorm_min: see `GuidanceConfig`.

    Saved with a model as ``recovery_config.json`` (`save_pretrained`) and loaded as
    ``model.recovery_config`` by `from_pretrained`; `recover()` keyword arguments override it per call.

    Example:
        >>> config = RecoveryConfig(num_inference_steps=30)
        >>> config.replace(cfg_text_scale=3.0).cfg_text_scale
        3.0
        >>> model.recovery_config = config            # the defaults of model.recover()
        >>> model.save_pretrained("my-model")         # writes my-model/recovery_config.json too
    """

    num_inference_steps: int = field(
        default=50, metadata={"help": "Flow schedule points incl. t=1 and t=0 (official num_timesteps).", "aliases": ["--steps"]}
    )
    sampling_shift: float = field(
        default=3.0, metadata={"help": "Shift of the sampling schedule (official timestep_shift).", "aliases": ["--timestep-shift"]}
    )

    def validate(self) -> None:
        """Checks every setting (schedule and guidance); raises ValueError / TypeError with one line."""
        super().validate()
        steps = self.num_inference_steps
        if isinstance(steps, bool) or not isinstance(steps, int):
            if isinstance(steps, float) and steps.is_integer():
                steps = int(steps)
            else:
                raise TypeError(f"num_inference_steps must be an int, got {type(steps).__name__} {steps!r}.")
        if steps < 2:
            raise ValueError(f"num_inference_steps must be an int >= 2, got {steps} (the schedule points, t = 1 and t = 0 included).")
        self.num_inference_steps = steps
        self.sampling_shift = _check_number("sampling_shift (timestep_shift)", self.sampling_shift, low=0.0, low_open=True)

    @property
    def timestep_shift(self) -> float:
        """The official inference name of `sampling_shift`."""
        return self.sampling_shift

    @property
    def guidance(self) -> GuidanceConfig:
        """The guidance part alone."""
        return GuidanceConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GuidanceConfig)})

    # -- overrides and (de)serialisation -----------------------------------------------------------

    def replace(self, **overrides: Any) -> RecoveryConfig:
        """A validated copy with some settings changed (``timestep_shift`` is accepted for ``sampling_shift``).

        Unknown names raise a TypeError listing the valid ones.
        """
        if "timestep_shift" in overrides:
            if "sampling_shift" in overrides:
                raise TypeError("Pass either timestep_shift or sampling_shift (the same setting), not both.")
            overrides["sampling_shift"] = overrides.pop("timestep_shift")
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"Unknown recovery settings {unknown}; valid ones: {sorted(names)}.")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["cfg_interval"] = list(values["cfg_interval"])
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RecoveryConfig:
        return cls().replace(**values)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Writes ``recovery_config.json`` in ``save_directory`` (to a temporary name, then renamed)."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / RECOVERY_CONFIG_NAME
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temporary.write_text(self.to_json_string())
        os.replace(temporary, path)
        return path

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **hub_kwargs: Any) -> RecoveryConfig:
        """Reads ``recovery_config.json`` from a folder or Hub repository (or a given JSON file); the
        defaults when a model has none.

        ``hub_kwargs`` (``revision``, ``token``, ``cache_dir``, ``local_files_only``…) go to
        transformers' `cached_file`.
        """
        local = Path(pretrained_model_name_or_path)
        if local.is_file():
            path = local
        elif local.is_dir():
            path = local / RECOVERY_CONFIG_NAME
            path = path if path.is_file() else None
        else:
            from transformers.utils import cached_file

            path = cached_file(
                str(pretrained_model_name_or_path), RECOVERY_CONFIG_NAME, _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False, **hub_kwargs,
            )  # fmt: skip
        if path is None:
            return cls()
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{path}: {error}") from None


def resolve_recovery_config(base: RecoveryConfig | dict | str | os.PathLike | None, **overrides: Any) -> RecoveryConfig:
    """``base`` (a config, a dict, a JSON file / model folder, or None for the defaults) with the non-None
    ``overrides`` applied, validated.

    Example:
        >>> resolve_recovery_config({"num_inference_steps": 30}, cfg_text_scale=3.0, cfg_img_scale=None).cfg_text_scale
        3.0
    """
    if base is None:
        base = RecoveryConfig()
    elif isinstance(base, dict):
        base = RecoveryConfig.from_dict(base)
    elif isinstance(base, (str, os.PathLike)):
        base = RecoveryConfig.from_pretrained(base)
    elif not isinstance(base, RecoveryConfig):
        raise TypeError(f"recovery_config must be a RecoveryConfig, a dict or a path, got {type(base).__name__}.")
    return base.replace(**{name: value for name, value in overrides.items() if value is not None})


def _override_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    hints = typing.get_type_hints(RecoveryConfig)
    defaults = RecoveryConfig()
    overrides = []
    for item in dataclasses.fields(RecoveryConfig):
        default = getattr(defaults, item.name)
        default = " ".join(map(str, default)) if isinstance(default, tuple) else default
        metadata = {**item.metadata, "help": f"{item.metadata['help']} Default: the recovery config's ({default} in RecoveryConfig)."}
        overrides.append((item.name, Optional[hints[item.name]], field(default=None, metadata=metadata)))
    return overrides


# The fields of RecoveryConfig, each None by default: per-call / per-run overrides of a recovery config.
# Generated, so that a setting and its default are written once (in RecoveryConfig); `FlowGRPOConfig`
# and the CLI's `recover` / `ask` flags (through transformers' HfArgumentParser) are built from it.
RecoveryOverrides = dataclasses.make_dataclass("RecoveryOverrides", _override_fields())
RecoveryOverrides.__module__ = __name__
RecoveryOverrides.__doc__ = """Every `RecoveryConfig` field as an optional override (None: keep the recovery config's value).

Example:
    >>> from transformers import HfArgumentParser
    >>> (overrides,) = HfArgumentParser(RecoveryOverrides).parse_args_into_dataclasses(["--steps", "30"])
    >>> resolve_recovery_config(None, **dataclasses.asdict(overrides)).num_inference_steps
    30
"""


__all__ = ["GuidanceConfig", "RecoveryConfig", "RecoveryOverrides", "RECOVERY_CONFIG_NAME", "resolve_recovery_config"]
