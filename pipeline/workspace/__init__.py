"""The workspace: `avfix run` (the DAG), `avfix status`, the TOML configuration and `avfix demo`."""
