"""`avfix synth`: generated tagged audio-visual sets with known truth (tests, demo, benchmarks)."""
