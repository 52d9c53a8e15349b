"""Training phases and the switch between them: a reward-plateau monitor and a phase schedule.

Critique-Coder trains with a 16k response length and a CRL reward scale of 0.8, then switches to 32k
"once the rewards have stabilized". :class:`PlateauMonitor` (:mod:`crlab.train.grpo.plateau`) turns that
sentence into a rule over plain numbers; :class:`PhaseSchedule` applies the rule (or a fixed step, or
never) to a list of phases and reports each switch as a :class:`SwitchEvent` for the registry and W&B.

The switch policies (``switch.policy``) and the plateau rules (``switch.rule``) are registered by name, as
the advantage estimators are (:mod:`crlab.train.grpo.strategies`): a new policy is one function decorated
with ``@register_switch_policy("name")``, a new rule one with ``@register_plateau_rule("name")``.

Pure Python: no torch, no config objects (phases and the switch are duck-typed: any object with the
attribute names below works, e.g. the config dataclasses or a ``SimpleNamespace``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from crlab.train.grpo.plateau import (  # noqa: F401  (the monitor and its rules: this module's API too)
    PLATEAU_RULES,
    PlateauMonitor,
    PlateauRule,
    register_plateau_rule,
    weighted_slope,
)
from crlab.train.grpo.strategies import Registry

if TYPE_CHECKING:
    from crlab.config import SwitchConfig


@dataclass
class SwitchEvent:
    """One phase switch, as recorded in the registry and logged to W&B."""

    step: int
    from_phase: str
    to_phase: str
    policy: str
    metric: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)


# A switch policy, called as each phase begins, gives the phase's decider (None: the run stays in this
# phase): called with each step's number and metrics, it gives (the metric it watched or None, the details
# to record) when the run should move to the next phase, else None. A decider with ``state_dict`` and
# ``load_state_dict`` is saved with the schedule.
SwitchDecider = Callable[[int, Mapping[str, float]], tuple[str | None, dict[str, Any]] | None]
SWITCH_POLICIES: Registry[Callable[[PhaseSchedule], SwitchDecider | None]] = Registry("switch.policy")
register_switch_policy = SWITCH_POLICIES.register


class SwitchPolicy(StrEnum):
    """The built-in policies' names."""

    PLATEAU = "plateau"
    FIXED = "fixed"
    NEVER = "never"


class SwitchRestart(StrEnum):
    """How the next phase begins (``switch.restart``)."""

    KEEP = "keep"  # optimizer, warm-up and data go on
    FRESH = "fresh"  # as a new run from the weights (the authors' 32k run): fresh AdamW, warm-up, data pass


class PhaseSchedule:
    """Walk through ``phases`` in order, switching when the policy registered as ``switch.policy`` says so.

    ``phases``: non-empty sequence of objects with ``name``, ``max_response_length``,
    ``crl_reward_scale`` and ``scale_on``. ``switch``: an object with ``policy`` ("plateau", "fixed",
    "never" or another registered name), ``metric``, ``rule``, ``confidence``, ``window``, ``min_delta``,
    ``patience``, ``min_steps`` and ``at_steps`` (a :class:`~crlab.config.SwitchConfig`).
    ``has_rl``: whether the run's steps have RL prompts (what ``metric: auto`` watches, see
    :func:`watched_metric`).

    - ``plateau``: a fresh :class:`PlateauMonitor` per phase watches ``metrics[self.metric]``, with the
      standard error ``metrics[self.metric + "_se"]`` where the step logs one; when it fires the schedule
      moves to the next phase.
    - ``fixed``: the switch out of phase ``i`` happens on the first observed step ``>= at_steps[i]``
      (``at_steps`` has one step per transition).
    - ``never``: stay in the first phase.

    At most one switch per :meth:`observe` call; the last phase never switches.
    """

    def __init__(self, phases: Sequence[Any], switch: SwitchConfig, *, has_rl: bool = True) -> None:
        if not phases:
            raise ValueError("phases must hold at least one phase")
        self._policy = SWITCH_POLICIES.get(switch.policy)
        self.phases = list(phases)
        self.switch = switch
        self.metric = watched_metric(switch.metric, has_rl)
        self.index = 0
        self._decider = self._policy(self)

    @property
    def current(self) -> Any:
        """The phase object in force now."""
        return self.phases[self.index]

    @property
    def is_last(self) -> bool:
        return self.index == len(self.phases) - 1

    def observe(self, step: int, metrics: Mapping[str, float]) -> SwitchEvent | None:
        """Feed one step's metrics; returns the switch made at this step, or None."""
        found = self._decider(step, metrics) if self._decider is not None else None
        if found is None or self.is_last:
            return None
        return self._advance(step, *found)

    def end_of_pass(self, step: int, batches: int) -> SwitchEvent | None:
        """The phase's data pass is over (``switch.restart=fresh``: each phase is a run of one pass): move to
        the next phase, before the policy would; None in the last phase and where the policy never moves
        (``never``)."""
        if self.is_last or self._decider is None:
            return None
        return self._advance(step, None, {"data_pass_complete": int(batches)})

    def _advance(self, step: int, metric: str | None, details: dict[str, Any]) -> SwitchEvent:
        event = SwitchEvent(
            step=int(step),
            from_phase=self.current.name,
            to_phase=self.phases[self.index + 1].name,
            policy=self.switch.policy,
            metric=metric,
            details=details,
        )
        self.index += 1
        self._decider = self._policy(self)
        return event

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: the phase index and the current decider's state (a plateau monitor's)."""
        saves = self._decider is not None and hasattr(self._decider, "state_dict")
        return {
            "index": self.index,
            "phase": self.current.name,
            "policy": self.switch.policy,
            "monitor": self._decider.state_dict() if saves else None,  # type: ignore[union-attr]
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        index = int(state["index"])
        if not 0 <= index < len(self.phases):
            raise ValueError(f"saved phase index {index} is out of range for {len(self.phases)} phases")
        if state.get("phase") not in (None, self.phases[index].name):
            raise ValueError(
                f"saved phase {state['phase']!r} does not match phase {index} ({self.phases[index].name!r})"
            )
        self.index = index
        self._decider = self._policy(self)
        if hasattr(self._decider, "load_state_dict") and state.get("monitor"):
            self._decider.load_state_dict(state["monitor"])  # type: ignore[union-attr]


class _PlateauDecider:
    """The plateau policy's decider for one phase: a fresh :class:`PlateauMonitor` on the watched metric."""

    def __init__(self, schedule: PhaseSchedule) -> None:
        s = schedule.switch
        self.schedule, self.metric = schedule, schedule.metric
        self.monitor = PlateauMonitor(
            s.window, s.min_delta, s.patience, s.min_steps, rule=s.rule,
            confidence=s.confidence,
        )  # fmt: skip

    def __call__(self, step: int, metrics: Mapping[str, float]) -> tuple[str, dict[str, Any]] | None:
        metric = self.metric
        if metric not in metrics:
            raise KeyError(
                f"switch metric {metric!r} is not in this step's metrics; available: {sorted(metrics)}"
            )
        if self.schedule.is_last or not self.monitor.update(
            step, metrics[metric], metrics.get(f"{metric}_se")
        ):
            return None
        return metric, dict(self.monitor.last_trigger or {})

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.monitor.load_state_dict(state)


@register_switch_policy(SwitchPolicy.PLATEAU)
def plateau_policy(schedule: PhaseSchedule) -> SwitchDecider:
    """Switch when the watched metric stops rising (:class:`PlateauMonitor`, fresh in each phase)."""
    return _PlateauDecider(schedule)


@register_switch_policy(SwitchPolicy.FIXED)
def fixed_policy(schedule: PhaseSchedule) -> SwitchDecider:
    """Switch out of phase ``i`` on the first step ``>= at_steps[i]`` (:func:`transition_steps`)."""
    steps, index = transition_steps(schedule.switch, len(schedule.phases)), schedule.index

    def decide(step: int, metrics: Mapping[str, float]) -> tuple[None, dict[str, Any]] | None:
        if index >= len(steps) or step < steps[index]:
            return None
        return None, {"at_step": steps[index]}

    return decide


@register_switch_policy(SwitchPolicy.NEVER)
def never_policy(schedule: PhaseSchedule) -> None:
    """Stay in the first phase."""
    return None


def watched_metric(metric: str, has_rl: bool) -> str:
    """The metric a plateau monitor watches: ``metric``, or for ``auto`` the mean RL reward when the steps
    have RL prompts and the mean CRL reward when every prompt is a critique."""
    if metric != "auto":
        return metric
    return "reward/rl_mean" if has_rl else "reward/crl_mean"


def transition_steps(switch: SwitchConfig, n_phases: int) -> list[int]:
    """The fixed policy's switch steps, one per transition (``at_steps``)."""
    if n_phases == 1:
        return []
    if switch.at_steps:
        steps = [int(s) for s in switch.at_steps]
    else:
        raise ValueError("switch.policy 'fixed' needs switch.at_steps (one step per phase transition)")
    if len(steps) != n_phases - 1:
        raise ValueError(
            f"switch.at_steps needs one step per transition: {n_phases} phases need {n_phases - 1}, got {steps}"
        )
    if steps != sorted(steps):
        raise ValueError(f"switch.at_steps must be increasing, got {steps}")
    return steps
