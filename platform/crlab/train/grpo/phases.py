"""Training phases and the switch between them: a reward-plateau monitor and a phase schedule.

Critique-Coder trains with a 16k response length and a CRL reward scale of 0.8, then switches to 32k
"once the rewards have stabilized". :class:`PlateauMonitor` turns that sentence into a rule over plain
numbers; :class:`PhaseSchedule` applies the rule (or a fixed step, or never) to a list of phases and
reports each switch as a :class:`SwitchEvent` for the registry and W&B.

Pure Python: no torch, no config objects (phases and the switch are duck-typed: any object with the
attribute names below works, e.g. the config dataclasses or a ``SimpleNamespace``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SWITCH_POLICIES = ("plateau", "fixed", "never")
PLATEAU_RULES = ("confident", "mean")


class PlateauMonitor:
    """Detect a plateau in a scalar curve (e.g. the mean RL reward), one value per step, optionally with
    the standard error of each value (a step's reward mean has one: its samples' spread).

    Exact semantics of :meth:`update`:

    1. A NaN value is ignored: not stored, not counted; ``update`` returns False.
    2. Otherwise the value is stored and counted (``n_seen``) with its ``stderr`` (None, NaN or a value
       <= 0 is stored as missing). Only the last ``2 * window`` values are kept, which is all a rule looks
       at: ``previous`` (the first ``window`` of them) and ``recent`` (the last ``window``).
    3. A check runs once ``n_seen >= max(min_steps, 2 * window)``. It gives ``upper``, a bound on the
       improvement of ``recent`` over ``previous``; the check is *flat* when ``upper < min_delta``:

       - ``rule="mean"``: ``upper`` is the improvement itself, ``mean(recent) - mean(previous)``.
       - ``rule="confident"``: a weighted least-squares line ``y = a + b x`` through the ``2 * window``
         values at ``x = 0, 1, ..., 2 * window - 1`` (their order among the values seen), with weights
         ``1 / stderr**2`` when every value of the window has a stderr, else equal weights. The fitted
         line's improvement of ``recent`` over ``previous`` is ``b * window``. Its standard error is
         ``window * sqrt(s2 / Sxx)`` with ``Sxx = sum(w (x - xbar)**2)`` (``xbar`` the weighted mean of
         ``x``) and ``s2 = sum(w r**2) / (2 * window - 2)`` over the residuals ``r``: with stderrs, ``s2``
         is at least 1 (the stderrs are a floor on the noise; more scatter than they say widens the
         bound); without, it is the residual variance alone. ``upper = (b + q * sqrt(s2 / Sxx)) * window``
         where ``q`` is the ``confidence`` quantile of Student's t with ``2 * window - 2`` degrees of
         freedom: the upper end of a one-sided ``confidence`` interval on the improvement. A flat check
         says that, with that confidence, the curve rose by less than ``min_delta`` over ``window`` steps.

       With ``mode="min"`` (a loss) the improvement is the fall: ``previous - recent``, ``-b * window``.
    4. A flat check adds one to the ``flat`` counter; any other check resets it to 0.
    5. When ``flat`` reaches ``patience`` the monitor fires: ``update`` returns True once, records
       ``last_trigger`` (step, recent/previous means, the improvement and its bound, values seen), and from
       then on returns False until :meth:`reset`.

    On a perfectly flat curve both rules therefore fire on the value number
    ``max(min_steps, 2 * window) + patience - 1`` (1-based). Counts are of values seen by this monitor,
    not of the ``step`` numbers passed in, so a fresh monitor per phase waits ``min_steps`` steps of
    that phase. ``step`` is only recorded. The confident rule needs ``window >= 2``.
    """

    def __init__(
        self,
        window: int = 10,
        min_delta: float = 0.01,
        patience: int = 3,
        min_steps: int = 20,
        mode: str = "max",
        rule: str = "confident",
        confidence: float = 0.95,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if min_steps < 0:
            raise ValueError(f"min_steps must be >= 0, got {min_steps}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if rule not in PLATEAU_RULES:
            raise ValueError(f"rule must be one of {', '.join(PLATEAU_RULES)}, got {rule!r}")
        if rule == "confident" and window < 2:
            raise ValueError(
                f"the confident rule fits a line to 2 * window values: window must be >= 2, got {window}"
            )
        if not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        self.window = int(window)
        self.min_delta = float(min_delta)
        self.patience = int(patience)
        self.min_steps = int(min_steps)
        self.mode = mode
        self.rule = rule
        self.confidence = float(confidence)
        self._q = _t_quantile(self.confidence, 2 * self.window - 2) if rule == "confident" else 0.0
        self.reset()

    def reset(self) -> None:
        """Forget everything seen (history, counters, the fired flag and ``last_trigger``)."""
        self._values: list[float] = []
        self._stderrs: list[float | None] = []
        self.n_seen = 0
        self.flat = 0
        self.fired = False
        self.last_trigger: dict[str, Any] | None = None

    def update(self, step: int, value: float, stderr: float | None = None) -> bool:
        """Add one value (and its standard error, if known); True exactly when the plateau rule fires
        (see the class docstring)."""
        value = float(value)
        if math.isnan(value):
            return False
        se = None if stderr is None else float(stderr)
        se = se if se is not None and 0 < se < math.inf else None  # NaN, 0 and inf: missing
        self._values = [*self._values, value][-2 * self.window :]
        self._stderrs = [*self._stderrs, se][-2 * self.window :]
        self.n_seen += 1
        if self.fired or self.n_seen < max(self.min_steps, 2 * self.window):
            return False
        recent = sum(self._values[-self.window :]) / self.window
        previous = sum(self._values[: self.window]) / self.window
        sign = 1.0 if self.mode == "max" else -1.0
        if self.rule == "mean":
            improvement = upper = sign * (recent - previous)
        else:
            slope, slope_se = weighted_slope(self._values, self._stderrs)
            improvement = sign * slope * self.window
            upper = (sign * slope + self._q * slope_se) * self.window
        self.flat = self.flat + 1 if upper < self.min_delta else 0
        if self.flat < self.patience:
            return False
        self.fired = True
        self.last_trigger = {
            "step": int(step),
            "rule": self.rule,
            "recent_mean": recent,
            "previous_mean": previous,
            "improvement": improvement,
            "upper": upper,
            "values_seen": self.n_seen,
            "window": self.window,
            "min_delta": self.min_delta,
            "patience": self.patience,
        }
        if self.rule == "confident":
            self.last_trigger["confidence"] = self.confidence
        return True

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state; :meth:`load_state_dict` of it resumes with identical decisions."""
        return {
            "config": {
                "window": self.window,
                "min_delta": self.min_delta,
                "patience": self.patience,
                "min_steps": self.min_steps,
                "mode": self.mode,
                "rule": self.rule,
                "confidence": self.confidence,
            },
            "values": list(self._values),
            "stderrs": list(self._stderrs),
            "n_seen": self.n_seen,
            "flat": self.flat,
            "fired": self.fired,
            "last_trigger": dict(self.last_trigger) if self.last_trigger else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore counters and history; the monitor's own settings must match the saved ones (a state
        saved before rules existed is of the mean rule)."""
        saved = {"rule": "mean", "confidence": self.confidence, **dict(state["config"])}
        mine = self.state_dict()["config"]
        if saved != mine:
            raise ValueError(
                f"plateau monitor settings differ from the checkpoint: saved {saved}, now {mine}"
                + ("; resume with switch.rule=mean" if saved["rule"] != mine["rule"] else "")
            )
        self._values = [float(v) for v in state["values"]]
        stderrs = state.get("stderrs") or [None] * len(self._values)
        self._stderrs = [None if s is None else float(s) for s in stderrs]
        self.n_seen = int(state["n_seen"])
        self.flat = int(state["flat"])
        self.fired = bool(state["fired"])
        self.last_trigger = dict(state["last_trigger"]) if state.get("last_trigger") else None


def weighted_slope(values: Sequence[float], stderrs: Sequence[float | None]) -> tuple[float, float]:
    """(slope, its standard error) of the weighted least-squares line through ``values`` at x = 0, 1, ...

    Weights ``1 / stderr**2`` when every stderr is known (the error scale then at least 1: the reduced
    chi-square when it is larger), else equal weights with the residual variance as the scale. Needs three
    values or more."""
    n = len(values)
    known = all(s is not None for s in stderrs)
    weights = [1.0 / (s * s) for s in stderrs] if known else [1.0] * n  # type: ignore[operator]
    total = sum(weights)
    x_bar = sum(w * x for x, w in enumerate(weights)) / total
    y_bar = sum(w * y for w, y in zip(weights, values, strict=True)) / total
    sxx = sum(w * (x - x_bar) ** 2 for x, w in enumerate(weights))
    slope = (
        sum(w * (x - x_bar) * (y - y_bar) for x, (w, y) in enumerate(zip(weights, values, strict=True))) / sxx
    )
    resid = [y - y_bar - slope * (x - x_bar) for x, y in enumerate(values)]
    s2 = sum(w * r * r for w, r in zip(weights, resid, strict=True)) / (n - 2)
    if known:
        s2 = max(1.0, s2)
    return slope, math.sqrt(s2 / sxx)


def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile (``scipy.special.stdtrit``: what ``scipy.stats.t.ppf`` computes, without the
    seconds that importing ``scipy.stats`` takes)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


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


class PhaseSchedule:
    """Walk through ``phases`` in order, switching when ``switch.policy`` says so.

    ``phases``: non-empty sequence of objects with ``name``, ``max_response_length``,
    ``crl_reward_scale`` and ``scale_on``. ``switch``: an object with ``policy`` ("plateau", "fixed" or
    "never"), ``metric``, ``rule``, ``confidence``, ``window``, ``min_delta``, ``patience``,
    ``min_steps``, ``at_step`` and optionally ``at_steps`` and ``mode`` ("max" by default). ``has_rl``:
    whether the run's steps have RL prompts (what ``metric: auto`` watches, see :func:`watched_metric`).

    - ``plateau``: a fresh :class:`PlateauMonitor` per phase watches ``metrics[self.metric]``, with the
      standard error ``metrics[self.metric + "_se"]`` where the step logs one; when it fires the schedule
      moves to the next phase.
    - ``fixed``: the switch out of phase ``i`` happens on the first observed step ``>= at_steps[i]``
      (``at_steps`` has one step per transition; with two phases ``at_step`` alone is enough).
    - ``never``: stay in the first phase.

    At most one switch per :meth:`observe` call; the last phase never switches.
    """

    def __init__(self, phases: Sequence[Any], switch: Any, *, has_rl: bool = True) -> None:
        if not phases:
            raise ValueError("phases must hold at least one phase")
        if switch.policy not in SWITCH_POLICIES:
            raise ValueError(
                f"switch.policy must be one of {', '.join(SWITCH_POLICIES)}, got {switch.policy!r}"
            )
        self.phases = list(phases)
        self.switch = switch
        self.metric = watched_metric(switch.metric, has_rl)
        self.index = 0
        self._at_steps = transition_steps(switch, len(self.phases)) if switch.policy == "fixed" else []
        self._monitor = self._new_monitor()

    @property
    def current(self) -> Any:
        """The phase object in force now."""
        return self.phases[self.index]

    @property
    def is_last(self) -> bool:
        return self.index == len(self.phases) - 1

    def _new_monitor(self) -> PlateauMonitor | None:
        if self.switch.policy != "plateau":
            return None
        s = self.switch
        mode = getattr(s, "mode", "max")
        return PlateauMonitor(
            s.window, s.min_delta, s.patience, s.min_steps, mode=mode, rule=s.rule, confidence=s.confidence
        )

    def observe(self, step: int, metrics: Mapping[str, float]) -> SwitchEvent | None:
        """Feed one step's metrics; returns the switch made at this step, or None."""
        policy = self.switch.policy
        if policy == "never":
            return None
        if policy == "plateau":
            metric = self.metric
            if metric not in metrics:
                raise KeyError(
                    f"switch metric {metric!r} is not in this step's metrics; available: {sorted(metrics)}"
                )
            if self.is_last:
                return None
            if not self._monitor.update(step, metrics[metric], metrics.get(f"{metric}_se")):
                return None
            return self._advance(step, metric, dict(self._monitor.last_trigger))
        if self.is_last or step < self._at_steps[self.index]:
            return None
        return self._advance(step, None, {"at_step": self._at_steps[self.index]})

    def end_of_pass(self, step: int, batches: int) -> SwitchEvent | None:
        """The phase's data pass is over (``switch.restart=fresh``: each phase is a run of one pass): move to
        the next phase, before the policy would; None in the last phase and under ``never``."""
        if self.is_last or self.switch.policy == "never":
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
        self._monitor = self._new_monitor()
        return event

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: the phase index and the current monitor's state."""
        return {
            "index": self.index,
            "phase": self.current.name,
            "policy": self.switch.policy,
            "monitor": self._monitor.state_dict() if self._monitor else None,
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
        self._monitor = self._new_monitor()
        if self._monitor is not None and state.get("monitor"):
            self._monitor.load_state_dict(state["monitor"])


def watched_metric(metric: str, has_rl: bool) -> str:
    """The metric a plateau monitor watches: ``metric``, or for ``auto`` the mean RL reward when the steps
    have RL prompts and the mean CRL reward when every prompt is a critique."""
    if metric != "auto":
        return metric
    return "reward/rl_mean" if has_rl else "reward/crl_mean"


def transition_steps(switch: Any, n_phases: int) -> list[int]:
    """The fixed policy's switch steps, one per transition, from ``at_steps`` or ``at_step``."""
    if n_phases == 1:
        return []
    at_steps = getattr(switch, "at_steps", None)
    if at_steps:
        steps = [int(s) for s in at_steps]
    elif getattr(switch, "at_step", None) is not None:
        steps = [int(switch.at_step)]
    else:
        raise ValueError("switch.policy 'fixed' needs switch.at_step (two phases) or switch.at_steps")
    if len(steps) != n_phases - 1:
        raise ValueError(
            f"switch.at_steps needs one step per transition: {n_phases} phases need {n_phases - 1}, got {steps}"
        )
    if steps != sorted(steps):
        raise ValueError(f"switch.at_steps must be increasing, got {steps}")
    return steps
