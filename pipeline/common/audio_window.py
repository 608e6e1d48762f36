"""The per-frame audio window's settings and spectrogram sizes (SPEC §1.3), without torch: the
configuration and `avfix status` read them; `pipeline.common.audio_features` computes the windows."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.common.settings import output_setting

SAMPLE_RATE = 16000
N_FFT = 512
NOVERLAP = 353
HOP = N_FFT - NOVERLAP  # 159
LOG_EPS = 1e-7
STD_EPS = 1e-9


@dataclass(frozen=True)
class AudioWindowConfig:
    """Window length in seconds (SPEC §1.3 uses 0.5 s, i.e. 8000 samples at 16 kHz)."""

    seconds: float = output_setting(0.5)

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * SAMPLE_RATE))

    @property
    def n_time(self) -> int:
        return (self.n_samples - NOVERLAP) // HOP

    @property
    def shape(self) -> tuple[int, int]:
        return N_FFT // 2 + 1, self.n_time
