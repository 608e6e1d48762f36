"""The per-workspace configuration `WS/avfix.toml`: one table per stage of the registry, every setting
spelled out.

    [run]          the inputs (training videos, videos to predict, fixations) and how work runs
    [extract]      ExtractConfig          (+ [extract.flow], [extract.audio])
    [pseudolabel]  PseudolabelConfig      (+ [pseudolabel.train])
    [train]        STATrainConfig         (+ [train.model], [train.model.audio_encoder], [train.loss], ...)
    [predict]      PredictConfig
    [evaluate]     EvaluateConfig         (+ [evaluate.density], [evaluate.baseline])

The first `avfix run` writes the file with the defaults of its preset and the options given on that
run. Later runs, `avfix status` and every stage command read it; command-line options (`--preset`,
`--device`, `-j`, `--set section.key=value`, a command's own options) override it for that run only;
the stores record what was used. TOML has no null: an unset value (no weights file, the native frame
rate, ...) is the string "none". Relative paths in the file are relative to the file's folder.

Keys are the dataclasses' field names, so the file, the Python API and `--set` use one vocabulary;
conversion in both directions is driven by the dataclasses' type hints, and which keys are paths or
devices by their fields' classification (`pipeline.common.settings`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import tomli_w

from pipeline.common.errors import BadInput
from pipeline.common.files import write_text_atomic
from pipeline.common.scheduling import SchedulerConfig
from pipeline.common.settings import Role, keys_with_role, output_setting, path_setting, run_setting
from pipeline.workspace.presets import PRESET_NAMES, PRESETS, default_preset, preset_config
from pipeline.workspace.registry import NAMES, stage

CONFIG_FILE = "avfix.toml"
NONE = "none"  # how an unset value is written (TOML has no null)
RUN = "run"
SECTIONS = (RUN,) + NAMES
# The sections a preset decides (the others have one set of defaults).
PRESET_SECTIONS = tuple(name for name in NAMES if any(name in table for table in PRESETS.values()))
# Set in [run] (it names an input), so [evaluate] leaves it out.
EVALUATE_FROM_RUN = {"layout": "fixations_layout"}

_HEADER = """\
# avfix workspace configuration, read by `avfix run`, `avfix status` and every stage command (written by
# the first `avfix run`). One table per stage; keys are the settings of the stage's configuration
# (README: "avfix run"). "none" means unset. Relative paths are relative to this file's folder.
# Options on the command line (--preset, --device, -j, --set section.key=value) override this file
# for one run; the stores record the settings each stage used.

"""


class ConfigError(BadInput, ValueError):
    """The workspace configuration or an override cannot be used; the message names the key and why."""


@dataclass(frozen=True)
class RunSettings:
    """[run]: the DAG's inputs and how per-video work is scheduled."""

    videos: str | None = path_setting(None)  # tagged training videos: <class>/<video> folder or path,label CSV
    predict_videos: str | None = path_setting(None)  # videos to predict (no tags needed); none: no predict/evaluate
    fixations: str | None = path_setting(None)  # fixations to score the predictions against; none: no evaluate
    fixations_layout: str = output_setting("auto")  # auto | stavis | csv | images
    preset: str = run_setting(default_factory=default_preset)  # the defaults the preset's tables started from
    workers: int = run_setting(1)  # local dask workers for extract and predict's decoding (-j)
    # Local workers are threads (true) or processes (false); none: each stage's choice (extract: processes,
    # predict: threads; pseudolabel's are always processes). See pipeline.common.scheduling.
    threads: bool | None = run_setting(None)
    scheduler: str | None = run_setting(None)  # address of a dask.distributed scheduler
    torch_threads: int = run_setting(0)  # torch CPU threads (0: torch's default)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESET_NAMES)}, got {self.preset!r}")
        if self.fixations_layout not in ("auto", "stavis", "csv", "images"):
            raise ValueError(f"fixations_layout must be auto, stavis, csv or images, got {self.fixations_layout!r}")
        if self.workers < 1 or self.torch_threads < 0:
            raise ValueError("workers must be >= 1 and torch_threads >= 0")


@dataclass(frozen=True)
class WorkspaceConfig:
    """The effective configuration of every stage of one workspace: `config.run`, and each stage's by
    its name (`config.extract`, `config.section("train")`)."""

    run: RunSettings
    stages: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["stages"][name]
        except KeyError:
            raise AttributeError(name) from None

    def section(self, name: str) -> Any:
        return self.run if name == RUN else self.stages[name]

    def scheduler(self, threads: bool = True) -> SchedulerConfig:
        """Where per-video work runs; `threads`: the stage's choice when `[run] threads` is unset."""
        chosen = threads if self.run.threads is None else self.run.threads
        return SchedulerConfig(self.run.workers, self.run.scheduler, chosen)

    def table(self) -> dict[str, Any]:
        """The whole configuration as TOML-ready tables."""
        return {name: section_table(self, name) for name in SECTIONS}


@dataclass(frozen=True)
class Overrides:
    """What the command line changes for one run. None: not given."""

    videos: Path | None = None
    predict_videos: Path | None = None
    fixations: Path | None = None
    fixations_layout: str | None = None
    preset: str | None = None
    # The sections `preset` resets (empty: every section a preset decides; a stage command: its own).
    preset_sections: tuple[str, ...] = ()
    device: str | None = None
    workers: int | None = None
    settings: tuple[str, ...] = field(default_factory=tuple)  # "section.key=value", the value read as TOML
    values: tuple[tuple[str, Any], ...] = ()  # ("section.key", value): a command's own options, typed


@dataclass(frozen=True)
class LoadedConfig:
    config: WorkspaceConfig
    path: Path
    existed: bool  # False: the file did not exist (a first run writes it)


# --- defaults ------------------------------------------------------------------------------------


def section_type(name: str) -> type:
    return RunSettings if name == RUN else stage(name).config_type


def preset_defaults(preset: str) -> WorkspaceConfig:
    """Every stage's defaults under a preset (`pipeline.workspace.presets`)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; use {' or '.join(PRESET_NAMES)}")
    return WorkspaceConfig(run=RunSettings(preset=preset), stages={name: preset_config(preset, name) for name in NAMES})


def path_keys(name: str) -> list[tuple[str, ...]]:
    """Keys of a section holding file paths, resolved against the TOML file's folder when relative."""
    return keys_with_role(section_type(name), Role.PATH)


# --- dataclass <-> table -------------------------------------------------------------------------


def section_table(config: WorkspaceConfig, name: str) -> dict[str, Any]:
    """One section as a TOML-ready table (None as "none", paths as strings, tuples as lists)."""
    table = to_table(getattr(config, name))
    if name == "evaluate":
        for key in EVALUATE_FROM_RUN:
            table.pop(key)
    return table


def to_table(obj: Any) -> dict[str, Any]:
    return {f.name: _to_toml(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _to_toml(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_table(value)
    if value is None:
        return NONE
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_to_toml(item) for item in value]
    return value


def from_table(cls: type, table: dict[str, Any], where: str) -> Any:
    """Build dataclass `cls` from a complete table (unknown keys are an error; the caller fills defaults)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:
            raise ConfigError(f"[{where}] has no setting {key!r}{_did_you_mean(key, names)}")
    values = {name: _coerce(hints[name], table[name], f"{where}.{name}") for name in table}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{where}] {exc}") from exc


def _did_you_mean(key: str, names: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if type(None) in args and isinstance(value, str) and value.strip().lower() == NONE:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of its types")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_table(hint, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], item, where) for item in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(a, item, where) for a, item in zip(args, value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    return value


def _merge(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` over `base`, table by table (keys `base` lacks are kept, so they are reported as unknown)."""
    merged = dict(base)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


def config_from_tables(tables: dict[str, Any]) -> WorkspaceConfig:
    """The configuration from (possibly partial) tables: keys left out take their preset's defaults."""
    for name in tables:
        if name not in SECTIONS:
            raise ConfigError(f"no section [{name}]{_did_you_mean(name, SECTIONS)}")
    run_table = tables.get(RUN, {})
    preset = run_table.get("preset", default_preset()) if isinstance(run_table, dict) else default_preset()
    defaults = preset_defaults(preset if preset in PRESETS else default_preset()).table()
    sections = {}
    for name in SECTIONS:
        given = tables.get(name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"[{name}] must be a table")
        sections[name] = _merge(defaults[name], given)
    for key in EVALUATE_FROM_RUN:
        if key in sections["evaluate"]:
            raise ConfigError(f"[evaluate] {key} is set in [run] as {EVALUATE_FROM_RUN[key]}")
    run = from_table(RunSettings, sections[RUN], RUN)
    sections["evaluate"].update({key: getattr(run, source) for key, source in EVALUATE_FROM_RUN.items()})
    return WorkspaceConfig(run=run, stages={name: from_table(section_type(name), sections[name], name) for name in NAMES})


# --- overrides -------------------------------------------------------------------------------------


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """"section.key=value" -> (["section", "key"], value). The value is read as TOML (numbers, true/false,
    [lists], "strings"); anything else is taken as a bare string (`--set pseudolabel.smoothing=plain`)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    keys = [part.strip() for part in dotted.split(".")]
    if len(keys) < 2 or not all(keys):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. pseudolabel.smoothing=plain")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return keys, value


def _assign(tables: dict[str, Any], keys: list[str], value: Any, text: str) -> None:
    defaults = preset_defaults(default_preset()).table()
    known: Any = defaults
    target = tables
    for depth, key in enumerate(keys):
        if not isinstance(known, dict) or key not in known:
            where = ".".join(keys[:depth]) or "the configuration"
            options = known.keys() if isinstance(known, dict) else ()
            raise ConfigError(f"{text}: {where} has no {key!r}{_did_you_mean(key, options)}")
        known = known[key]
        if depth == len(keys) - 1:
            if isinstance(known, dict):
                raise ConfigError(f"{text}: {'.'.join(keys)} is a table; set one of its keys")
            target[key] = value
        else:
            target = target.setdefault(key, {})


def apply_overrides(tables: dict[str, Any], overrides: Overrides, base_dir: Path) -> dict[str, Any]:
    """The tables with the command line's changes (a new dict; `tables` is left as it was)."""
    tables = copy.deepcopy(tables)
    run = tables.setdefault(RUN, {})
    if overrides.preset is not None:
        fresh = preset_defaults(overrides.preset).table()
        for name in overrides.preset_sections or PRESET_SECTIONS:
            tables[name] = fresh[name]
        run["preset"] = overrides.preset
    for key in ("videos", "predict_videos", "fixations"):
        value = getattr(overrides, key)
        if value is not None:
            run[key] = str(_absolute(Path(value), base_dir))
    if overrides.fixations_layout is not None:
        run["fixations_layout"] = overrides.fixations_layout
    if overrides.workers is not None:
        run["workers"] = overrides.workers
    if overrides.device is not None:
        for name in NAMES:
            for keys in keys_with_role(section_type(name), Role.DEVICE):
                _set(tables.setdefault(name, {}), keys, overrides.device)
    assignments = [(*parse_assignment(text), f"--set {text!r}") for text in overrides.settings]
    assignments += [(dotted.split("."), _to_toml(value), f"option {dotted}={value!r}") for dotted, value in overrides.values]
    for keys, value, where in assignments:
        if keys[0] in SECTIONS and tuple(keys[1:]) in path_keys(keys[0]):
            value = _absolute_paths(value, base_dir)
        _assign(tables, keys, value, where)
    return tables


def _set(table: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        table = table.setdefault(key, {})
    table[keys[-1]] = value


def _absolute(path: Path, base_dir: Path) -> Path:
    return path if path.is_absolute() else (base_dir / path).resolve()


def _absolute_paths(value: Any, base_dir: Path) -> Any:
    if isinstance(value, list):
        return [_absolute_paths(item, base_dir) for item in value]
    if isinstance(value, str) and value.strip().lower() != NONE and value:
        return str(_absolute(Path(value), base_dir))
    return value


def _resolve_file_paths(tables: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Relative paths written in the file are relative to the file's folder."""
    for section in SECTIONS:
        for keys in path_keys(section):
            table = tables.get(section)
            for key in keys[:-1]:
                table = table.get(key) if isinstance(table, dict) else None
            if isinstance(table, dict) and keys[-1] in table:
                table[keys[-1]] = _absolute_paths(table[keys[-1]], folder)
    return tables


# --- the file ---------------------------------------------------------------------------------------


def config_path(workspace: str | Path) -> Path:
    return Path(workspace) / CONFIG_FILE


def read_tables(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            tables = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    return _resolve_file_paths(tables, path.parent.resolve())


def write_config(path: Path, config: WorkspaceConfig) -> None:
    """Every setting of every stage, written atomically."""
    write_text_atomic(path, _HEADER + tomli_w.dumps(config.table()))


def load_config(workspace: str | Path, overrides: Overrides | None = None, cwd: Path | None = None) -> LoadedConfig:
    """The workspace's effective configuration: WS/avfix.toml (or the preset's defaults when there is
    none yet) with `overrides`. Nothing is written here; `ensure_config_file` writes a first run's file."""
    path = config_path(workspace)
    overrides = overrides or Overrides()
    base_dir = (cwd or Path.cwd()).resolve()
    existed = path.is_file()
    if existed:
        tables = read_tables(path)
        where = str(path)
    else:
        tables = preset_defaults(overrides.preset or default_preset()).table()
        where = "the defaults"
    tables = apply_overrides(tables, overrides, base_dir)
    if overrides != Overrides():
        where += " with the command-line options"
    try:
        return LoadedConfig(config_from_tables(tables), path, existed)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def ensure_config_file(loaded: LoadedConfig) -> bool:
    """Write the file of a first run (its effective configuration, every default spelled out)."""
    if loaded.existed:
        return False
    write_config(loaded.path, loaded.config)
    return True
