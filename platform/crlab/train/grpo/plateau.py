"""The plateau monitor of the phase switch, and its rules, registered by name (``switch.rule``).

Critique-Coder switches "once the rewards have stabilized": :class:`PlateauMonitor` turns that sentence
into a rule over plain numbers. A new rule is one function decorated with ``@register_plateau_rule("name")``.
Pure Python: no torch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol

from crlab.train.grpo.strategies import Registry


class PlateauRuleFn(Protocol):
    def __call__(
        self, values: Sequence[float], stderrs: Sequence[float | None], window: int, confidence: float
    ) -> tuple[float, float]: ...


# A rule takes the last ``2 * window`` values (and their stderrs) and gives (the rise of ``recent`` over
# ``previous``, the half-width to add to the signed rise for a one-sided bound on it).
PLATEAU_RULES: Registry[PlateauRuleFn] = Registry("switch.rule")
register_plateau_rule = PLATEAU_RULES.register


class PlateauRule(StrEnum):
    """The built-in rules' names."""

    CONFIDENT = "confident"
    MEAN = "mean"


@register_plateau_rule(PlateauRule.CONFIDENT)
def confident_rule(
    values: Sequence[float], stderrs: Sequence[float | None], window: int, confidence: float
) -> tuple[float, float]:
    """The weighted least-squares line's rise over ``window`` steps, and its one-sided ``confidence``
    half-width (Student's t with ``2 * window - 2`` degrees of freedom)."""
    slope, slope_se = weighted_slope(values, stderrs)
    return slope * window, _t_quantile(confidence, 2 * window - 2) * slope_se * window


@register_plateau_rule(PlateauRule.MEAN)
def mean_rule(
    values: Sequence[float], stderrs: Sequence[float | None], window: int, confidence: float
) -> tuple[float, float]:
    """The improvement itself: ``mean(recent) - mean(previous)``, no width."""
    return sum(values[-window:]) / window - sum(values[:window]) / window, 0.0


class Direction(StrEnum):
    """Which way a watched metric improves: a reward rises (max), a loss falls (min)."""

    MAX = "max"
    MIN = "min"


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
        mode: str = Direction.MAX,
        rule: str = PlateauRule.CONFIDENT,
        confidence: float = 0.95,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if min_steps < 0:
            raise ValueError(f"min_steps must be >= 0, got {min_steps}")
        if mode not in set(Direction):
            raise ValueError(f"mode must be one of {', '.join(Direction)}, got {mode!r}")
        self._rule = PLATEAU_RULES.get(rule)
        if rule == PlateauRule.CONFIDENT and window < 2:
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
        self.rule = str(rule)
        self.confidence = float(confidence)
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
        sign = 1.0 if self.mode == Direction.MAX else -1.0
        rise, width = self._rule(self._values, self._stderrs, self.window, self.confidence)
        improvement = sign * rise
        upper = improvement + width
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
        if self.rule == PlateauRule.CONFIDENT:
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
        saved = {"rule": PlateauRule.MEAN.value, "confidence": self.confidence, **dict(state["config"])}
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


@functools.lru_cache(maxsize=64)
def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile (``scipy.special.stdtrit``: what ``scipy.stats.t.ppf`` computes, without the
    seconds that importing ``scipy.stats`` takes)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))
