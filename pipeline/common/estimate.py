"""An honest estimate before long work: the first steps of a training loop are timed (after a warm-up,
which pays for allocation and the first reads) and the command says, once, how long the rest will take;
on a CPU an estimate beyond an hour names the faster configuration."""

from __future__ import annotations

import time

import torch

WARMUP_STEPS = 2
MEASURED_STEPS = 5
HOUR = 3600.0


class StepTimer:
    """`tick()` after every step; it returns the mean seconds per step exactly once, when
    `measured` steps after the first `warmup` ones have been timed, and None otherwise."""

    def __init__(self, warmup: int = WARMUP_STEPS, measured: int = MEASURED_STEPS) -> None:
        self.warmup = warmup
        self.measured = measured
        self.steps = 0
        self.started: float | None = None
        self.done = False

    def tick(self) -> float | None:
        self.steps += 1
        if self.done:
            return None
        if self.steps == self.warmup:
            self.started = time.perf_counter()
        elif self.started is not None and self.steps == self.warmup + self.measured:
            self.done = True
            return (time.perf_counter() - self.started) / self.measured
        return None


def duration(seconds: float) -> str:
    """45 s, 12 min, 2.3 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / HOUR:.1f} h"


def slow_hint(seconds: float, device: torch.device, frozen: bool) -> str:
    """What to say after an estimate: nothing under an hour or on a GPU; else the faster way."""
    if seconds <= HOUR or device.type != "cpu":
        return ""
    if not frozen:
        return "; this CPU would be done in minutes with --preset fast (the backbone frozen, its maps cached)"
    return "; a CUDA GPU would be much faster (--device cuda)"
