"""The one list of stages, in the order they run. `avfix run`, `avfix status`, the CLI and the workspace
configuration all iterate it; a stage's own code lives in its subpackage (pipeline/<stage>/stage.py)."""

from __future__ import annotations

from pipeline.evaluate.stage import EvaluateStage
from pipeline.extract.stage import ExtractStage
from pipeline.predict.stage import PredictStage
from pipeline.pseudolabel.stage import PseudolabelStage
from pipeline.stage import Stage
from pipeline.train.stage import TrainStage

STAGES: tuple[Stage, ...] = (ExtractStage(), PseudolabelStage(), TrainStage(), PredictStage(), EvaluateStage())
NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)


def stage(name: str) -> Stage:
    for candidate in STAGES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no stage {name!r}; the stages are {', '.join(NAMES)}")
