"""Event-related audio per frame (SPEC §1.4): does a frame's sound belong to the video's tag?

Two ways to decide it, both giving P(event-related) per frame:
- default: an audio-only classifier trained on the same tags (`AudioEventClassifier`); the probability
  is its softmax probability of the video's tag;
- with a VGGSound checkpoint and its class names: the keyword match of SPEC §1.4(a), as the summed
  probability of the VGGSound classes whose name contains the tag's keyword (`KeywordEventScorer`).
A frame is event-related when the probability reaches the stage's `event_threshold`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from models.audio_encoder import AudioEncoder, AudioEncoderConfig, KeywordEventScorer, load_vggsound_checkpoint
from models.device import autocast
from stores.features import VideoReader

VGGSOUND_WIDTH = 64


class EventScorer(Protocol):
    def event_probability(self, spectrogram: Tensor, class_index: Tensor) -> Tensor: ...

    def eval(self) -> "EventScorer": ...


def read_class_names(path: str | Path) -> list[str]:
    """Class names of a pretrained audio classifier: the first column of a CSV (or one name per line),
    sorted, which is how VGGSound orders its 309 outputs (sorted first column of `stat.csv`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-name list not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        names = sorted({row[0].strip() for row in csv.reader(handle) if row and row[0].strip()})
    if not names:
        raise ValueError(f"{path}: no class names found")
    return names


def load_vggsound_scorer(checkpoint: str | Path, class_names: str | Path, tags: list[str]) -> KeywordEventScorer:
    names = read_class_names(class_names)
    encoder = AudioEncoder(AudioEncoderConfig(width=VGGSOUND_WIDTH, pooling="netvlad"))
    head = load_vggsound_checkpoint(encoder, checkpoint)
    if head is None:
        raise ValueError(f"{checkpoint}: the checkpoint has no classifier head (fc_), so it cannot name sounds")
    return KeywordEventScorer(encoder, head, names, tags)


@torch.no_grad()
def video_event_probabilities(scorer: EventScorer | None, reader: VideoReader, class_index: int, has_audio: bool,
                              device: torch.device, batch: int) -> np.ndarray:  # fmt: skip
    """(T,) float32 P(event-related audio) of every frame; zeros for a video without audio."""
    probs = np.zeros(reader.n_frames, dtype=np.float32)
    if scorer is None or not has_audio:
        return probs
    scorer.eval()
    for start in range(0, reader.n_frames, batch):
        stop = min(start + batch, reader.n_frames)
        spectrogram = torch.from_numpy(reader.read("audio", start, stop).astype(np.float32)).to(device).unsqueeze(1)
        labels = torch.full((stop - start,), class_index, device=device)
        with autocast(device):
            probs[start:stop] = scorer.event_probability(spectrogram, labels).float().cpu().numpy()
    return probs
