"""Settings classified once, by field metadata: every config field is classified, and fingerprints,
diffs, path keys and device keys follow the classification."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace

import pytest

from pipeline.common.settings import (
    Role, describe_changes, from_settings, keys_with_role, nested_config_types, output_setting, output_settings,
    run_setting, unclassified_fields,
)  # fmt: skip
from pipeline.extract.config import ExtractConfig
from pipeline.pseudolabel.config import PseudolabelConfig
from pipeline.synth.generate import SynthConfig
from pipeline.train.config import STATrainConfig
from pipeline.workspace.config import RunSettings
from pipeline.workspace.presets import PRESET_NAMES, preset_config
from pipeline.workspace.registry import STAGES


def every_config_type() -> list[type]:
    """Every config dataclass of pipeline/ (those of models/ are pure torch: their holder classifies them)."""
    roots = [stage.config_type for stage in STAGES] + [RunSettings, SynthConfig]
    found = {cls for root in roots for cls in nested_config_types(root) if not cls.__module__.startswith("models.")}
    return sorted(found, key=lambda c: c.__qualname__)


@pytest.mark.parametrize("cls", every_config_type(), ids=lambda cls: cls.__qualname__)
def test_every_config_field_is_classified(cls):
    assert unclassified_fields(cls) == []


def test_models_dataclasses_take_their_holders_role():
    train = preset_config("cpu", "train")
    model = output_settings(train)["model"]
    assert model == dataclasses.asdict(train.model)  # STAConfig (models/) is an output table of [train]
    assert output_settings(replace(train, model=replace(train.model, width=8))) != output_settings(train)


def test_the_check_finds_an_unclassified_field_even_in_a_nested_table():
    @dataclass(frozen=True)
    class Inner:
        kept: int = output_setting(1)
        forgotten: int = 2

    @dataclass(frozen=True)
    class Outer:
        inner: Inner = output_setting(default_factory=Inner)
        also_forgotten: str = "x"

    assert unclassified_fields(Outer) == ["inner.forgotten", "also_forgotten"]


def test_fingerprinted_settings_are_the_output_and_path_fields_only():
    config = preset_config("paper", "pseudolabel")
    settings = output_settings(config)
    assert {"device", "threads", "infer_batch"}.isdisjoint(settings)  # device and run settings
    assert settings["weights"] is None and settings["smoothing"] == "flow"  # path and output settings
    # A run setting inside an output table stays out: reader workers do not change a classifier.
    assert "num_workers" not in settings["train"] and settings["train"]["epochs"] == config.train.epochs
    assert output_settings(replace(config, threads=4, device="cpu", infer_batch=7)) == settings
    assert output_settings(replace(config, smoothing="plain")) != settings


def test_scopes_split_what_a_change_invalidates():
    config = preset_config("paper", "pseudolabel")
    assert set(output_settings(config, "final")) == {"gt_factor", "smoothing", "smoothing_radius", "fine_stage"}
    assert set(output_settings(config, "maps")) == {"map_size", "box_factor", "event_threshold"}
    classifiers = output_settings(config, "classifiers")
    assert "event_threshold" in classifiers and "train" in classifiers and "smoothing" not in classifiers
    assert set(output_settings(preset_config("paper", "train"), "architecture")) == {"backbone", "input_size", "model"}


def test_path_and_device_keys_come_from_the_classification():
    assert keys_with_role(PseudolabelConfig, Role.PATH) == [("weights",), ("vggsound",), ("vggsound_classes",)]
    assert keys_with_role(STATrainConfig, Role.DEVICE) == [("device",)]
    assert keys_with_role(ExtractConfig, Role.DEVICE) == []
    assert keys_with_role(RunSettings, Role.PATH) == [("videos",), ("predict_videos",), ("fixations",)]


def test_recorded_settings_rebuild_the_config_and_diffs_name_the_key():
    for preset in PRESET_NAMES:
        config = preset_config(preset, "extract")
        rebuilt = from_settings(ExtractConfig, output_settings(config))
        assert output_settings(rebuilt) == output_settings(config)
        assert [f.name for f in dataclasses.fields(rebuilt) if getattr(rebuilt, f.name) != getattr(config, f.name)] == []
    old = output_settings(ExtractConfig())
    new = output_settings(replace(ExtractConfig(), size=128, flow=replace(ExtractConfig().flow, preset="fast")))
    assert describe_changes(old, new) == "flow.preset: 'ultrafast' -> 'fast'; size: 356 -> 128"
    assert describe_changes(old, old) == ""


def test_run_settings_classified_as_such_change_no_fingerprint():
    @dataclass(frozen=True)
    class Example:
        size: int = output_setting(3)
        workers: int = run_setting(1)
        nested: dict = field(default_factory=dict, metadata={"avfix_role": Role.OUTPUT})

    assert output_settings(Example(workers=8)) == output_settings(Example()) == {"size": 3, "nested": {}}
