"""Run under `torchrun` by test_train.py: `avfix train` (the arguments are the CLI's) whose second
process fails its first training step, as a damaged chunk only it reads would make it fail."""

from __future__ import annotations

import os
from typing import Any

import pipeline.train.run as train_run
from cli import main

_train_step = train_run._train_step


def failing_step(run: Any, batch: Any) -> Any:
    if os.environ["RANK"] == "1":
        raise RuntimeError("injected: the second process fails its first step")
    return _train_step(run, batch)


train_run._train_step = failing_step

if __name__ == "__main__":
    main()
