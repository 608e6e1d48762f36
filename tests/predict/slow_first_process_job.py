"""Run under `torchrun` by test_predict_fanout.py: `avfix predict` (the arguments are the CLI's) whose
first process prepares its inputs for longer than torch's default collective timeout, shortened here to
2 s. A large folder takes the first process hours to decode while the others wait for its plan."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import torch.distributed.distributed_c10d as c10d

import pipeline.predict.run as predict_run
from cli import main

c10d.default_pg_timeout = timedelta(seconds=2)
_prepare = predict_run._prepare


def slow_prepare(*args: Any, **kwargs: Any) -> Any:
    time.sleep(5)
    return _prepare(*args, **kwargs)


predict_run._prepare = slow_prepare

if __name__ == "__main__":
    main()
