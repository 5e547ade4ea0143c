"""The step rules of the flow sampler behind one interface: the Euler ODE step, and Flow-GRPO's
stochastic steps (SDE, CPS) with the log-probability of their result.

Vocabulary (one for every rule): ``t`` is the flow time of the sample entering the step (flow_grpo's
``sigma``), ``t_next < t`` the time it leaves at, ``dt = t_next − t < 0``; the velocity points from
data to noise (``v ≈ ε − x₀``), so the ODE step is ``x' = x + v·dt``. Stochastic steps compute in
fp32, because the SDE mean overflows in bf16 (flow_grpo, official Robust-U1).

A rule is an object with ``stochastic`` (whether it draws noise) and
``step(velocity, sample, t, t_next, *, t_max=None, noise=None, generator=None, prev_sample=None) ->
StepOutput``; `RobustU1GenerationMixin.denoise` runs every step of a schedule with one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class StepOutput:
    """Result of one denoising step.

    Attributes:
        prev_sample: the next (less noisy) sample ``x'``, shape of ``sample``.
        log_prob: per-sample log-density of ``prev_sample``, averaged over all non-batch dims, shape
            ``[B]``; None for the deterministic ODE rule.
        prev_sample_mean: the Gaussian mean ``mu`` (the ODE result for `EulerStep`).
        std_dev_t: flow_grpo's ``std_dev_t``, broadcastable to ``sample``. For ``sde`` it is
            ``a * sqrt(t / (1 - t))`` (the noise actually added is ``std_dev_t * sqrt(-dt)``);
            for ``cps`` it is the full noise std ``t_next * sin(a * pi / 2)``; 0 for `EulerStep`.
            ``gaussian_kl`` expects it.
    """

    prev_sample: torch.Tensor
    log_prob: torch.Tensor | None
    prev_sample_mean: torch.Tensor
    std_dev_t: torch.Tensor | float


# flow_grpo's name for the result of a stochastic step.
SDEStepOutput = StepOutput


def euler_step(x: torch.Tensor, velocity: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """The ODE step ``x − v·(t − t_next)`` in the dtype of ``x``.

    Example:
        >>> euler_step(torch.ones(2), torch.ones(2), 1.0, 0.75)
        tensor([0.7500, 0.7500])
    """
    return x - velocity.to(x.dtype) * (t - t_next)


def _as_per_sample(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Turn a python float, a 0-d tensor or a per-sample ``[B]`` tensor into fp32 broadcastable to ``like``."""
    tensor = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if tensor.ndim == 1:
        if tensor.shape[0] not in (1, like.shape[0]):
            raise ValueError(f"per-sample t has {tensor.shape[0]} entries, batch has {like.shape[0]}")
        tensor = tensor.view(-1, *([1] * (like.ndim - 1)))
    return tensor


def sde_step_with_logprob(
    velocity: torch.Tensor,
    sample: torch.Tensor,
    t: float | torch.Tensor,
    t_next: float | torch.Tensor,
    noise_level: float = 0.7,
    sde_type: Literal["sde", "cps"] = "sde",
    generator: torch.Generator | None = None,
    prev_sample: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    t_max: float | None = None,
    cps_log_prob: Literal["gaussian", "squared_error"] = "gaussian",
) -> StepOutput:
    """One Flow-GRPO stochastic step from ``t`` to ``t_next`` and the log-probability of its result.

    ``sde`` (Flow-GRPO): ``std = a * sqrt(t / (1 - t))``,
    ``mu = x * (1 + std^2 / (2 t) * dt) + v * (1 + std^2 (1 - t) / (2 t)) * dt``,
    ``x' = mu + std * sqrt(-dt) * eps``. At ``t == 1`` the ``1 - t`` in the std is replaced by
    ``1 - t_max``, where ``t_max`` is the schedule's second point (flow_grpo's ``sigma_max``, its
    ``sigmas[1]``); it must then be given, otherwise a ``ValueError`` is raised.

    ``cps`` (coefficient-preserving sampling): ``std = t_next * sin(a * pi / 2)``, ``x0 = x - t v``,
    ``x1 = x + (1 - t) v``, ``mu = x0 (1 - t_next) + x1 * sqrt(t_next^2 - std^2)``, ``x' = mu + std * eps``.

    ``log_prob`` is the exact Gaussian log-density ``log N(x'; mu, s^2)`` (``s`` = the noise std actually
    used), averaged over all non-batch dims. flow_grpo's CPS instead uses ``-(x' - mu)^2`` averaged over
    dims (no ``1 / (2 s^2)`` scale, no constants); select it with ``cps_log_prob="squared_error"`` to
    reproduce flow_grpo CPS ratios. When a step is deterministic (``noise_level = 0``, or CPS at
    ``t_next = 0``) the step equals the Euler ODE step, the density is a Dirac and ``log_prob`` is
    defined as 0 for it: such steps carry no policy gradient and should not be trained on.

    Args:
        velocity: model output ``v`` (data -> noise), ``[B, ...]``, any float dtype.
        sample: current latents ``x`` at ``t``, same shape.
        t, t_next: current / next flow time, python floats or per-sample ``[B]`` tensors.
        noise_level: ``a``; 0.7 is the Flow-GRPO and official Robust-U1 default.
        generator: RNG for the injected noise (ignored when ``noise`` or ``prev_sample`` is given).
        prev_sample: score this given sample instead of drawing one (training-time recomputation).
        noise: explicit standard-normal noise ``eps`` to use instead of drawing it.
        t_max: the schedule's second point, needed for ``sde`` when ``t == 1``.

    Example:
        >>> v, x = torch.randn(2, 16, 64), torch.randn(2, 16, 64)
        >>> out = sde_step_with_logprob(v, x, t=0.8, t_next=0.7)
        >>> out.prev_sample.shape, out.log_prob.shape
        (torch.Size([2, 16, 64]), torch.Size([2]))
    """
    if sde_type not in ("sde", "cps"):
        raise ValueError(f"sde_type must be 'sde' or 'cps', got {sde_type!r}")
    if cps_log_prob not in ("gaussian", "squared_error"):
        raise ValueError(f"cps_log_prob must be 'gaussian' or 'squared_error', got {cps_log_prob!r}")
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    if prev_sample is not None and noise is not None:
        raise ValueError("pass either prev_sample (to score it) or noise (to draw with it), not both")

    velocity = velocity.float()
    sample = sample.float()
    t = _as_per_sample(t, sample)
    t_next = _as_per_sample(t_next, sample)
    dt = t_next - t

    if sde_type == "sde":
        at_pure_noise = t == 1
        if t_max is None and bool(at_pure_noise.any()):
            raise ValueError(
                "t == 1 makes sqrt(t / (1 - t)) infinite: pass t_max (flow_grpo's sigma_max: the schedule's "
                "second point, sigmas[1])"
            )
        # Without t_max no t is 1 here, so the fill value is never selected.
        t_max_filled = torch.full_like(t, t_max if t_max is not None else 0.0)
        denominator_t = torch.where(at_pure_noise, t_max_filled, t)
        std_dev_t = noise_level * torch.sqrt(t / (1 - denominator_t))
        prev_sample_mean = sample * (1 + std_dev_t**2 / (2 * t) * dt) + velocity * (1 + std_dev_t**2 * (1 - t) / (2 * t)) * dt
        noise_std = std_dev_t * torch.sqrt(-dt)
    else:
        std_dev_t = t_next * math.sin(noise_level * math.pi / 2)
        predicted_data = sample - t * velocity
        predicted_noise = sample + (1 - t) * velocity
        prev_sample_mean = predicted_data * (1 - t_next) + predicted_noise * torch.sqrt(t_next**2 - std_dev_t**2)
        noise_std = std_dev_t

    if prev_sample is None:
        if noise is None:
            noise = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=torch.float32)
        prev_sample = prev_sample_mean + noise_std * noise.float()
    else:
        prev_sample = prev_sample.float()

    # The rollout sample is data, not a function of the current parameters.
    squared_error = (prev_sample.detach() - prev_sample_mean) ** 2
    if sde_type == "cps" and cps_log_prob == "squared_error":
        log_prob = -squared_error
    else:
        # A zero std would give 0/0; the safe std keeps values and gradients finite, the where() sets 0.
        deterministic = noise_std == 0
        safe_std = torch.where(deterministic, torch.ones_like(noise_std), noise_std)
        gaussian = -squared_error / (2 * safe_std**2) - torch.log(safe_std) - _LOG_SQRT_2PI
        log_prob = torch.where(deterministic, torch.zeros_like(gaussian), gaussian)
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))

    return StepOutput(prev_sample=prev_sample, log_prob=log_prob, prev_sample_mean=prev_sample_mean, std_dev_t=std_dev_t)


class StepRule(Protocol):
    """What `denoise` needs of a step rule."""

    stochastic: bool

    def step(
        self,
        velocity: torch.Tensor,
        sample: torch.Tensor,
        t: float,
        t_next: float,
        *,
        t_max: float | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        prev_sample: torch.Tensor | None = None,
    ) -> StepOutput: ...


class EulerStep:
    """The deterministic ODE step of BAGEL's sampler (`recover`), ``x' = x − v·(t − t_next)``.

    Example:
        >>> EulerStep().step(torch.ones(1, 2), torch.ones(1, 2), 1.0, 0.5).prev_sample
        tensor([[0.5000, 0.5000]])
    """

    stochastic = False

    def step(self, velocity, sample, t, t_next, *, t_max=None, noise=None, generator=None, prev_sample=None) -> StepOutput:
        next_sample = euler_step(sample, velocity, t, t_next)
        return StepOutput(prev_sample=next_sample, log_prob=None, prev_sample_mean=next_sample, std_dev_t=0.0)

    def __repr__(self) -> str:
        return "EulerStep()"


@dataclass
class SDEStep:
    """Flow-GRPO's stochastic step (`sde_step_with_logprob`) as a step rule: draws noise and records log-probs.

    Args:
        noise_level: ``a`` (official Robust-U1: 0.7); 0 makes it the Euler step with log-prob 0.
        sde_type: ``"sde"`` (Flow-GRPO) or ``"cps"`` (coefficient-preserving sampling).
        cps_log_prob: ``"gaussian"`` (exact density) or flow_grpo's ``"squared_error"`` for CPS.

    Example:
        >>> rule = SDEStep(noise_level=0.7)
        >>> out = rule.step(v[None], x[None], 0.9, 0.8, generator=torch.Generator().manual_seed(0))
        >>> out.log_prob.shape
        torch.Size([1])
    """

    noise_level: float = 0.7
    sde_type: Literal["sde", "cps"] = "sde"
    cps_log_prob: Literal["gaussian", "squared_error"] = "gaussian"
    stochastic = True

    def step(self, velocity, sample, t, t_next, *, t_max=None, noise=None, generator=None, prev_sample=None) -> StepOutput:
        return sde_step_with_logprob(
            velocity, sample, t, t_next, noise_level=self.noise_level, sde_type=self.sde_type, generator=generator,
            prev_sample=prev_sample, noise=noise, t_max=t_max, cps_log_prob=self.cps_log_prob,
        )  # fmt: skip


def sample_sde_window(
    num_steps: int,
    window_size: int = 1,
    window_range: tuple[int, int] = (0, 5),
    generator: torch.Generator | None = None,
) -> range:
    """Draw the contiguous denoising-step indices that use SDE noise (and are trained); others run the ODE.

    ``num_steps`` counts denoising steps (transitions ``t[i] -> t[i + 1]``). ``window_range`` is
    half-open ``[lo, hi)`` like flow_grpo's ``sde_window_range``: the start is uniform in
    ``[lo, hi - window_size]`` and the window is ``range(start, start + window_size)``. Defaults are the
    official Robust-U1 ones (1 step inside ``(0, 5)``); flow_grpo's BAGEL template uses 3 steps inside
    ``(0, num_steps // 2)``. ``window_size = 0`` means no window: SDE on every step but the last, which
    flow_grpo keeps deterministic because its near-data Gaussian is too sharp for stable log-probs.

    Example:
        >>> sample_sde_window(15, window_size=3, window_range=(0, 7), generator=torch.Generator().manual_seed(0))
        range(4, 7)
    """
    if window_size == 0:
        return range(0, num_steps - 1)
    low, high = window_range
    if window_size < 0 or not 0 <= low <= high - window_size:
        raise ValueError(f"a window of {window_size} steps does not fit in the range [{low}, {high})")
    if high > num_steps:
        raise ValueError(
            f"window_range {window_range} reaches past the {num_steps} denoising steps; the window would hold "
            "steps that never run"
        )
    start = int(torch.randint(low, high - window_size + 1, (1,), generator=generator))
    return range(start, start + window_size)
