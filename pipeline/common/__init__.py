"""Helpers every stage shares: decoding (PyAV), optical flow (OpenCV), audio features (torchaudio),
input discovery, progress bars, dask scheduling, read-ahead threads and settings comparison."""
