"""Orchestration: one subpackage per stage (extract, pseudolabel, train, predict, evaluate, synth), the
workspace (DAG runner, status, TOML configuration, demo) and the helpers they share (common)."""

__version__ = "0.1.0"
