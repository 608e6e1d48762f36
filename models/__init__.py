"""Pure torch: backbones, audio encoder, S/ST/SA classifiers, CAMs, selection/fusion ops, STA, metrics.

No file I/O beyond loading weights; no knowledge of Zarr or of the stores.
"""
