"""Orchestration: one module per stage, plus decoding, flow, audio features, config and scheduling."""

__version__ = "0.1.0"
