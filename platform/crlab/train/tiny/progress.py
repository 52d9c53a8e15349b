"""How a tiny-coder build shows its progress: a rich bar on a terminal, plain lines otherwise.

:func:`crlab.train.tiny.model.build_tiny` feeds it the events its build process prints (``start``, then one
``step`` per warm-start step). A ``log`` of None shows nothing.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_EVERY = 50  # off a terminal, one line per this many warm-start steps (and the last)


class BuildProgress:
    """``with BuildProgress(log, bar) as shown: shown.event(e)``; ``bar`` None: "if the console is a terminal".

    The bar draws on ``console`` (default: stderr).
    """

    def __init__(self, log: Any, bar: bool | None = None, console: Console | None = None) -> None:
        self.log = log
        self.console = console or Console(stderr=True)
        self.bar = bool(log) and (self.console.is_terminal if bar is None else bar)
        self.steps = 0
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> BuildProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def event(self, event: dict[str, Any]) -> None:
        if not self.log:
            return
        if event["kind"] == "start":
            self.steps = event["steps"]
            self.log(f"tiny coder: {event['examples']} warm-start examples, {event['parameters']} parameters")
            if self.bar:
                self._start_bar()
        elif event["kind"] == "step":
            step, loss = event["step"], event["loss"]
            if self._progress is not None:
                self._progress.update(self._task, completed=step, loss=f"{loss:.3f}")
            elif (step - 1) % PLAIN_EVERY == 0 or step == self.steps:
                self.log(f"warm start step {step}/{self.steps}: loss {loss:.3f}")

    def _start_bar(self) -> None:
        self._progress = Progress(
            TextColumn("warm start"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=self.console,
        )  # fmt: skip
        self._task = self._progress.add_task("warm start", total=self.steps, loss="-")
        self._progress.start()
