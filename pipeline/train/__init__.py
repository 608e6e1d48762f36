"""The train stage: the STA network from features.zarr + pseudo.zarr -> WS/checkpoints/sta/."""
