"""The pseudolabel stage: SCAM classifiers from tags, CAMs, selection, fusion, smoothing -> WS/pseudo.zarr."""
