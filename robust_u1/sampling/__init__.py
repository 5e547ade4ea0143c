"""The flow sampler of BAGEL's image generation, in one place: the schedule (`schedule`), the
three-context guidance (`guidance`) and the step rules (`steps`: Euler ODE, Flow-GRPO SDE / CPS with
log-probs). The denoising loop that runs them is `RobustU1GenerationMixin.denoise`, used by
`recover()` and by `FlowGRPOTrainer`'s rollouts alike; the settings are `RecoveryConfig`.

Example:
    >>> from robust_u1.sampling import flow_timesteps, EulerStep
    >>> out = model.denoise(contexts, latents, RecoveryConfig(num_inference_steps=30), step_rule=EulerStep())
"""

from ..configuration_recovery import GuidanceConfig, RecoveryConfig, RenormType
from .guidance import guided_velocity
from .schedule import flow_timesteps, shift_timesteps
from .steps import (
    EulerStep,
    SDEStep,
    SDEStepOutput,
    StepOutput,
    StepRule,
    euler_step,
    sample_sde_window,
    sde_step_with_logprob,
)

__all__ = [
    "EulerStep",
    "GuidanceConfig",
    "RecoveryConfig",
    "RenormType",
    "SDEStep",
    "SDEStepOutput",
    "StepOutput",
    "StepRule",
    "euler_step",
    "flow_timesteps",
    "guided_velocity",
    "sample_sde_window",
    "sde_step_with_logprob",
    "shift_timesteps",
]
