"""Faults injected on purpose, to test what the platform does when a run breaks (never set in real runs).

``CRLAB_FAULT=step:N`` makes a training process raise :class:`InjectedFault` as step ``N`` begins, after
``N - 1`` good steps (and their checkpoints): a crash in the middle of a run, as a bug or a lost device
would cause, that a sweep must retry from the checkpoint and then give up on. ``CRLAB_FAULT=sleep:S``
makes every step last ``S`` seconds longer: a slow run, for tests that must act while it still trains.
``CRLAB_FAULT=kill:N`` makes the training process SIGKILL itself as step ``N`` begins: a death that leaves
no word (out of memory, a node lost), which whoever watches the run must settle.
"""

from __future__ import annotations

import os
import signal
import time
from enum import StrEnum


class FaultKind(StrEnum):
    """What ``CRLAB_FAULT=KIND:VALUE`` injects (see above)."""

    STEP = "step"  # raise InjectedFault as step VALUE begins
    KILL = "kill"  # SIGKILL this process as step VALUE begins
    SLEEP = "sleep"  # every step lasts VALUE seconds longer


class InjectedFault(RuntimeError):
    """The fault that ``CRLAB_FAULT`` asked for."""


def at_step(step: int) -> None:
    """Raise if ``CRLAB_FAULT`` asks for a fault at this step."""
    kind, _, value = os.environ.get("CRLAB_FAULT", "").partition(":")
    if kind == FaultKind.STEP and value.strip() == str(step):
        raise InjectedFault(f"fault injected at step {step} (CRLAB_FAULT=step:{step})")
    if kind == FaultKind.KILL and value.strip() == str(step):
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == FaultKind.SLEEP:
        time.sleep(float(value))
