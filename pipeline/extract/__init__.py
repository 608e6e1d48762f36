"""The extract stage: tagged videos -> WS/features.zarr (frames, optical flow, audio windows)."""
