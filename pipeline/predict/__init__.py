"""The predict stage: saliency maps for new videos -> WS/predictions.zarr (+ overlay MP4s)."""
