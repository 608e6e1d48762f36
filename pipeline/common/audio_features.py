"""Per-frame audio windows as in SPEC §1.3: 16 kHz mono, 0.5 s, 257×48 log spectrogram, z-scored.

The spectrogram equals `scipy.signal.spectrogram(x, fs=16000, nperseg=512, noverlap=353)` (Tukey 0.25
window, per-segment mean removal, one-sided PSD density), computed batched with torch: every window's
segments are a strided view of it, detrended and windowed in one pass, then one batched real FFT.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torchaudio

# The window's settings and sizes live in a torch-free module (read at start-up); re-exported here.
from pipeline.common.audio_window import (  # noqa: F401
    HOP, LOG_EPS, N_FFT, NOVERLAP, SAMPLE_RATE, STD_EPS, AudioWindowConfig,
)  # fmt: skip


def tukey_window(length: int, alpha: float = 0.25, periodic: bool = True) -> torch.Tensor:
    """Tukey (tapered cosine) window; periodic by default, as scipy's spectrogram uses it.

    Written here rather than imported because importing scipy.signal costs over a second per process.
    """
    m = length + 1 if periodic else length
    n = torch.arange(m, dtype=torch.float64)
    width = int(np.floor(alpha * (m - 1) / 2.0))
    window = torch.ones(m, dtype=torch.float64)
    rise = n[: width + 1]
    window[: width + 1] = 0.5 * (1 + torch.cos(np.pi * (-1 + 2.0 * rise / alpha / (m - 1))))
    fall = n[m - width - 1 :]
    window[m - width - 1 :] = 0.5 * (1 + torch.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * fall / alpha / (m - 1))))
    return window[:length]


@lru_cache(maxsize=8)
def _window_and_scale(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The Tukey window, and per frequency bin the factor from |FFT|² to a one-sided PSD density."""
    window = tukey_window(N_FFT, 0.25)
    scale = torch.full((N_FFT // 2 + 1,), 1.0 / (SAMPLE_RATE * float(window.square().sum())), dtype=torch.float64)
    scale[1:-1] *= 2.0  # one-sided: fold negative frequencies (not DC, not Nyquist for even N)
    return window.to(device, dtype), scale.to(device, dtype)


def _psd_segments(windows: torch.Tensor) -> torch.Tensor:
    """(B, T, 257) one-sided PSD of each window's T segments, each with its own mean removed."""
    window, scale = _window_and_scale(windows.device, windows.dtype)
    segments = windows.unfold(1, N_FFT, HOP)  # (B, T, 512), a view
    spec = torch.fft.rfft((segments - segments.mean(dim=-1, keepdim=True)) * window)
    # |spec|² as re² + im²: `abs().square()` takes a square root, `view_as_real(...).square().sum(-1)`
    # reduces over a length-2 axis; either costs several times this.
    psd = spec.real * spec.real
    psd.addcmul_(spec.imag, spec.imag)
    return psd.mul_(scale)


def psd_spectrogram(windows: torch.Tensor) -> torch.Tensor:
    """One-sided PSD (B, 257, T) in the units of scipy.signal.spectrogram (scaling='density').

    Computed in the input's precision: float64 reproduces scipy to 1e-9; extract passes float32, about
    twice as fast and still far finer than the float16 its features are stored in.
    """
    dtype = windows.dtype if windows.dtype in (torch.float32, torch.float64) else torch.float32
    return _psd_segments(windows.to(dtype)).transpose(1, 2)


def log_spectrogram_windows(windows: torch.Tensor) -> torch.Tensor:
    """(B, n_samples) waveforms → (B, 257, T) float32 log spectrograms, each z-scored on its own.

    log(psd + ε) is computed as log1p(psd / ε), which differs by the constant log(ε) that z-scoring
    removes. The difference matters in float32: a near-silent window's log spectrum varies by ~1e-5
    around log(ε) ≈ -16, below float32's resolution there (z-scoring would blow that rounding up),
    while log1p keeps those small values to float32's relative precision. So float32 input keeps
    float32 throughout and still matches the float64 recipe far within the float16 the store keeps.
    """
    dtype = windows.dtype if windows.dtype in (torch.float32, torch.float64) else torch.float32
    logs = torch.log1p_(_psd_segments(windows.to(dtype).clamp(-1.0, 1.0)).mul_(1.0 / LOG_EPS))  # (B, T, 257)
    logs -= logs.mean(dim=(1, 2), keepdim=True)
    std = logs.square().mean(dim=(1, 2), keepdim=True).sqrt_()  # numpy's two-pass std, as the original
    return logs.div_(std + STD_EPS).transpose(1, 2).to(torch.float32).contiguous()


def resample_to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return samples.astype(np.float32, copy=False)
    tensor = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return torchaudio.functional.resample(tensor, rate, SAMPLE_RATE).numpy()


def window_starts(frame_times: np.ndarray, audio_start_time: float) -> np.ndarray:
    """Sample index (at 16 kHz, in a buffer starting at `audio_start_time`) where each window begins.

    Decision: the window of frame k starts at frame k's own timestamp. SPEC §1.3 spreads T windows
    evenly between the first and last sample, which matches frame 0 exactly but drifts by up to half a
    window in mid-video and ignores variable frame rates; starting at the frame time keeps frame 0's
    convention without the drift.
    """
    return np.round((frame_times - audio_start_time) * SAMPLE_RATE).astype(np.int64)


def cut_windows(signal: np.ndarray, starts: np.ndarray, n_samples: int) -> torch.Tensor:
    """(len(starts), n_samples) windows of `signal`, silent (zero) where they run past its ends."""
    pad = n_samples
    padded = np.zeros(signal.size + 2 * pad, dtype=np.float32)
    padded[pad : pad + signal.size] = signal
    idx = np.clip(starts, -pad, signal.size + pad - n_samples) + pad
    gather = idx[:, None] + np.arange(n_samples)[None, :]
    return torch.from_numpy(padded[gather])


def frame_audio_features(
    signal_16k: np.ndarray, signal_start_time: float, frame_times: np.ndarray, config: AudioWindowConfig
) -> np.ndarray:
    """(len(frame_times), 257, T) float32 features for frames at absolute `frame_times`."""
    starts = window_starts(frame_times, signal_start_time)
    windows = cut_windows(signal_16k, starts, config.n_samples)
    return log_spectrogram_windows(windows).numpy()
