"""TaylorSeer feature caching for the denoising loop, as the official BAGEL ``enable_taylorseer=True``.

TaylorSeer ("From Reusing to Forecasting", Liu et al. 2025) skips the decoder layers at most
denoising steps and extrapolates their output from the last full steps with a Taylor polynomial in
the step index. BAGEL's inferencer applies it per CFG branch (gen / cfg_text / cfg_img), each with its
own call counter and cache. The rules implemented here are the official code's (ByteDance-Seed/Bagel,
``modeling/cache_utils/taylorseer.py`` with its ``cache_init`` defaults), stated in
``tests/fixtures/bagel-tiny/README.md`` (section "TaylorSeer edit case"):

* Call ``s`` of a branch (its own counter, +1 per call of that branch) is *full* while
  ``s < first_enhance``, then once every ``fresh_threshold`` calls; the others are *Taylor* calls.
* A full call runs the decoder layers and caches the last layer's output ``f`` (before the final
  norms) for all query tokens. Its Taylor factors become ``d_0 = f`` and, once
  ``s >= first_enhance - 1``, ``d_{i+1} = (d_i - d_i^old) / (s - p)`` for as long as an old ``d_i``
  exists, up to ``max_order`` (``p`` = the previous full call).
* A Taylor call skips every decoder layer (and the embeddings, whose result would be discarded) and
  predicts the output as ``Σ_i d_i · x^i / i!`` with ``x = s - p``. The final norms, ``llm2vae`` and the
  guidance combination run as usual.

The official code caches every layer's output, but a Taylor call replaces each layer's output by its
own polynomial regardless of the layer's input, so only the last layer's cache can change a result;
it is the only one kept here. The official code also leaves its cache on the model after a call
(a later call, even without TaylorSeer, then runs through the stale schedule); here the state is a
`TaylorSeerCache` created per call and never stored on the model.

Where it is not valid: anything that differentiates through the sampler or trains on the sampled
transitions. A Taylor call's velocity does not depend on the current latent (nor on ``t``), so the
velocities of Flow-GRPO's SDE steps, whose log-probabilities the trainer recomputes with the exact
forward, would come from a different function than the one trained, and gradients cannot flow
through skipped layers. `TaylorSeerCache` therefore refuses to run with gradients enabled, and
`model.denoise` refuses it together with a stochastic step rule (Flow-GRPO's SDE window). ODE
sampling (`recover`, or a `denoise` call with the Euler rule) is where it is valid.

Example:
    >>> restored = model.recover(image, num_inference_steps=50, enable_taylorseer=True)
    >>> # other settings than the official defaults, or the loop itself:
    >>> restored = model.recover(image, enable_taylorseer=True, taylorseer_config=TaylorSeerConfig(fresh_threshold=4))
    >>> out = model.denoise(contexts, noise, RecoveryConfig(), taylorseer=TaylorSeerConfig())
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .packing import Block, RobustU1KVCache

FULL, TAYLOR = "full", "Taylor"
BRANCHES = ("gen", "cfg_text", "cfg_img")


@dataclass(frozen=True)
class TaylorSeerConfig:
    """The official ``cache_init`` settings of BAGEL's TaylorSeer (defaults unchanged).

    Args:
        fresh_threshold: after the warm-up, one full call every ``fresh_threshold`` calls (the
            others are Taylor calls); 1 makes every call full.
        first_enhance: the first ``first_enhance`` calls of a branch are full (warm-up).
        max_order: highest derivative order of the Taylor polynomial.

    Example:
        >>> TaylorSeerConfig().step_types(8)
        ['full', 'full', 'full', 'full', 'full', 'Taylor', 'Taylor', 'full']
    """

    fresh_threshold: int = 3
    first_enhance: int = 5
    max_order: int = 6

    def __post_init__(self):
        for name, minimum in (("fresh_threshold", 1), ("first_enhance", 1), ("max_order", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"TaylorSeerConfig.{name} must be an integer >= {minimum}, got {value!r}.")

    @classmethod
    def from_value(cls, value: TaylorSeerConfig | dict[str, Any] | None) -> TaylorSeerConfig:
        """A config from ``None`` (official defaults), a dict of its fields, or a config."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"fresh_threshold", "first_enhance", "max_order"})
            if unknown:
                raise ValueError(
                    f"Unknown TaylorSeer setting(s) {unknown}: use fresh_threshold, first_enhance, max_order."
                )
            return cls(**value)
        raise TypeError(f"taylorseer_config must be a TaylorSeerConfig, a dict or None, got {type(value).__name__}.")

    def step_types(self, num_calls: int) -> list[str]:
        """The step type (``"full"`` / ``"Taylor"``) of the first ``num_calls`` calls of one branch."""
        branch = BranchFeatureCache(self)
        types = []
        for _ in range(num_calls):
            types.append(branch.next_step_type())
            branch._advance(types[-1])
        return types


class BranchFeatureCache:
    """TaylorSeer state of one guidance branch: call counter, last full call, Taylor factors.

    After each call, ``last_counter`` / ``last_step_type`` / ``last_x`` / ``last_hidden`` describe it
    (``last_hidden`` = the last decoder layer's output, computed or predicted, before the final norms)
    and ``order`` is the highest derivative order held by the cache.
    """

    def __init__(self, config: TaylorSeerConfig):
        self.config = config
        self.counter = 0  # index of the next call of this branch
        self.calls_since_full = 0  # the official cache_counter
        self.last_full = 0  # the official activated_steps[-1] (starts at 0)
        self.factors: list[torch.Tensor] = []
        self.full_calls = 0
        self.query_lengths: list[int] | None = None
        self.gen_mask: torch.Tensor | None = None
        self.last_counter = self.last_x = -1
        self.last_step_type: str | None = None
        self.last_hidden: torch.Tensor | None = None

    @property
    def order(self) -> int:
        """K: highest derivative order held (the polynomial has K + 1 terms); -1 before the first call."""
        return len(self.factors) - 1

    def next_step_type(self) -> str:
        """Whether the next call of this branch runs the decoder layers (``full``) or extrapolates."""
        if self.counter < self.config.first_enhance or self.calls_since_full == self.config.fresh_threshold - 1:
            return FULL
        return TAYLOR

    def store(self, feature: torch.Tensor, query_lengths: list[int], gen_mask: torch.Tensor) -> None:
        """A full call: ``feature`` (last layer output) becomes d_0, finite differences give d_1.. d_K."""
        step, old = self.counter, self.factors
        distance = step - self.last_full
        factors = [feature]
        if step > self.config.first_enhance - 2:
            for i in range(self.config.max_order):
                if i >= len(old):
                    break
                factors.append((factors[i] - old[i]) / distance)
        self.factors, self.full_calls = factors, self.full_calls + 1
        self.query_lengths, self.gen_mask = list(query_lengths), gen_mask
        self._record(FULL, 0, feature)

    def predict(self, query_lengths: list[int]) -> torch.Tensor:
        """A Taylor call: ``Σ_i d_i · x^i / i!`` with ``x`` = calls since the last full call."""
        if list(query_lengths) != self.query_lengths:
            raise ValueError(
                f"TaylorSeer cache holds queries of {self.query_lengths} tokens but this call has {list(query_lengths)}: "
                "a TaylorSeerCache belongs to one denoising run (same images); create a new one per run."
            )
        x = self.counter - self.last_full
        output: Any = 0
        for i, factor in enumerate(self.factors):  # the official evaluation order, in float32
            output = output + (1 / math.factorial(i)) * factor * (x**i)
        self._record(TAYLOR, x, output)
        return output

    def _record(self, step_type: str, x: int, hidden: torch.Tensor) -> None:
        self.last_counter, self.last_step_type, self.last_x, self.last_hidden = self.counter, step_type, x, hidden
        self._advance(step_type)

    def _advance(self, step_type: str) -> None:
        self.calls_since_full = 0 if step_type == FULL else self.calls_since_full + 1
        if step_type == FULL:
            self.last_full = self.counter
        self.counter += 1


class TaylorSeerCache:
    """TaylorSeer state of one denoising run: one `BranchFeatureCache` per guidance branch.

    Create one per run (``model.denoise(..., taylorseer=config)`` and ``recover(enable_taylorseer=True)``
    do) and pass it to ``model.guided_velocities(..., taylorseer=cache)`` at every step. A branch's
    cache starts at its first call, so a CFG branch that only runs inside ``cfg_interval`` counts only
    those calls.

    Example:
        >>> taylorseer = TaylorSeerCache()
        >>> for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        ...     v = model.guided_velocities(contexts, x, t, guidance, taylorseer=taylorseer)
        ...     x = [euler_step(xi, vi, t, t_next) for xi, vi in zip(x, v)]
        >>> taylorseer.branches["gen"].last_step_type
        'Taylor'
    """

    def __init__(self, config: TaylorSeerConfig | dict[str, Any] | None = None):
        self.config = TaylorSeerConfig.from_value(config)
        self.branches: dict[str, BranchFeatureCache] = {}

    def select(self, names: Sequence[str]) -> TaylorSeerStep:
        """The branches of one batched call, in the order their sequences are concatenated."""
        return TaylorSeerStep([self.branches.setdefault(name, BranchFeatureCache(self.config)) for name in names])

    @property
    def decoder_passes(self) -> int:
        """Branch calls that ran the decoder layers so far (one per branch and full call)."""
        return sum(branch.full_calls for branch in self.branches.values())


class TaylorSeerStep:
    """One velocity call over several branches: ``len(blocks) / len(branches)`` sequences each."""

    def __init__(self, branches: list[BranchFeatureCache]):
        self.branches = branches

    def decoder_outputs(self, model, cache: RobustU1KVCache, blocks: Sequence[Block]):
        """Last decoder layer outputs (before the final norms) of the noisy query ``blocks``.

        The full branches run the layers together in one forward (exactly as without TaylorSeer);
        the Taylor branches are predicted from their caches. Returns the packed hidden states of all
        sequences, their expert mask and their lengths, as ``run_blocks(..., final_norm=False)``.
        """
        if torch.is_grad_enabled():
            raise RuntimeError(
                "TaylorSeer is for inference only: a Taylor step skips the decoder layers, so no gradient can "
                "flow through it and its velocity ignores the current latent. Call it under torch.no_grad() "
                "(recover() does) and leave it off for training and Flow-GRPO rollouts."
            )
        count = len(self.branches)
        if len(blocks) % count:
            raise ValueError(f"{len(blocks)} query sequences cannot be split evenly over {count} TaylorSeer branches.")
        per_branch = len(blocks) // count
        lengths = model._block_lengths(blocks)
        branch_lengths = [lengths[i * per_branch : (i + 1) * per_branch] for i in range(count)]
        full = [i for i, branch in enumerate(self.branches) if branch.next_step_type() == FULL]
        outputs: list[torch.Tensor | None] = [None] * count
        masks: list[torch.Tensor | None] = [None] * count
        if full:
            rows = [i * per_branch + j for i in full for j in range(per_branch)]
            sub_cache = cache if len(full) == count else cache.select(rows)
            hidden, gen_mask, _ = model.run_blocks(sub_cache, [blocks[r] for r in rows], update_cache=False, final_norm=False)
            sizes = [sum(branch_lengths[i]) for i in full]
            for i, piece, mask in zip(full, hidden.split(sizes), gen_mask.split(sizes)):
                self.branches[i].store(piece, branch_lengths[i], mask)
                outputs[i], masks[i] = piece, mask
        for i, branch in enumerate(self.branches):
            if outputs[i] is None:
                outputs[i], masks[i] = branch.predict(branch_lengths[i]), branch.gen_mask
        return torch.cat(outputs), torch.cat(masks), lengths
