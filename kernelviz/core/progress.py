"""The one progress protocol of the package: every long computation (an optimization, a scan, the stages of
finding concepts, a job that writes files) reports by calling ``progress(Progress(...))``.

A front-end writes one function of this type and gets every computation's progress: the CLI draws a bar per
stage, the explorer turns each report into a server-sent event, a notebook prints a line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

__all__ = ["OnProgress", "Progress", "renamed", "report"]


@dataclass(frozen=True)
class Progress:
    """One report of a long computation's progress.

    Attributes:
        stage: what is running: ``"optimize"`` (gradient ascent: ``done`` steps of ``total``), ``"scan"`` (images
            of a collection), ``"sampling"``, ``"coding"``, ``"importance"`` (the stages of finding concepts), or
            the name a job gives its own stage.
        done: how much of the stage is done (steps, images), ``0 <= done <= total``.
        total: how much there is; a stage that restarts (the next batch of an optimization) starts again at 0.
        value: the objective reached, for an optimization; ``None`` otherwise.
    """

    stage: str
    done: int
    total: int
    value: float | None = None


#: A function that receives progress reports (never required: ``None`` means nobody listens).
OnProgress = Callable[[Progress], None]


def report(progress: OnProgress | None, stage: str, done: int, total: int, value: float | None = None) -> None:
    """Call ``progress`` with a :class:`Progress` report, if anyone listens."""
    if progress is not None:
        progress(Progress(stage, done, total, value))


def renamed(progress: OnProgress | None, stage: str) -> OnProgress | None:
    """``progress`` with every report's stage renamed ``stage``: a job names the stages it runs (the optimization of
    a concept's picture reports ``"pictures"``, the scan of its codes ``"coding"``)."""
    if progress is None:
        return None
    listener = progress
    return lambda p: listener(replace(p, stage=stage))
