"""The evaluate stage: saliency maps against human fixations -> WS/report.{md,json} + plots."""
