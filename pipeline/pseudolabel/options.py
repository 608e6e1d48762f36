"""Building a PseudolabelConfig from a preset and command-line overrides (keeps cli.py thin)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.pseudolabel.config import PseudolabelConfig

_TRAIN_OPTIONS = {"epochs": "epochs", "steps": "max_steps", "batch_size": "batch_size", "lr": "lr", "optimizer": "optimizer"}
_PATH_OPTIONS = ("weights", "vggsound", "vggsound_classes")


def pseudolabel_config(preset: str, options: dict[str, Any]) -> PseudolabelConfig:
    """`preset` "paper" or "cpu"; `options` maps option names to values, None meaning "not given"."""
    if preset not in ("paper", "cpu"):
        raise ValueError(f"unknown preset {preset!r}; use paper or cpu")
    base = PseudolabelConfig() if preset == "paper" else PseudolabelConfig.cpu_demo()
    given = {name: value for name, value in options.items() if value is not None and value is not False}
    train = replace(base.train, **{field: given.pop(name) for name, field in _TRAIN_OPTIONS.items() if name in given})
    if given.pop("no_fine", False):
        given["fine_stage"] = False
    for name in _PATH_OPTIONS:
        if name in given:
            given[name] = str(given[name])
    if "weights" in given and "random_init" not in given:
        given["random_init"] = False  # a weights file replaces the preset's random initialisation
    return replace(base, train=train, **given)
