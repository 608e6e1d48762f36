"""Per-frame audio windows as in SPEC §1.3: 16 kHz mono, 0.5 s, 257×48 log spectrogram, z-scored.

The spectrogram equals `scipy.signal.spectrogram(x, fs=16000, nperseg=512, noverlap=353)` (Tukey 0.25
window, per-segment mean removal, one-sided PSD density), computed batched with torchaudio. torchaudio
has no per-segment detrend, but removing a segment's mean before windowing only subtracts
`mean · FFT(window)` from that segment's spectrum, which is what `_detrended_stft` does.
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


@lru_cache(maxsize=1)
def _tukey() -> torch.Tensor:
    return tukey_window(N_FFT, 0.25)


def _tukey_window_fn(length: int, **_: object) -> torch.Tensor:
    return _tukey()[:length]


@lru_cache(maxsize=8)
def _stft(device: torch.device, dtype: torch.dtype) -> torchaudio.transforms.Spectrogram:
    # One transform per device and precision: `.to` converts a module in place, so one shared transform
    # used in float32 first would keep a float32-rounded window when later asked for float64.
    return torchaudio.transforms.Spectrogram(
        n_fft=N_FFT, hop_length=HOP, window_fn=_tukey_window_fn, power=None, center=False, normalized=False
    ).to(device, dtype)


def _detrended_stft(windows: torch.Tensor) -> torch.Tensor:
    """Complex STFT (B, 257, T) of each window with every 512-sample segment's mean removed."""
    spec = _stft(windows.device, windows.dtype)(windows)
    seg_means = torch.nn.functional.avg_pool1d(windows.unsqueeze(1), N_FFT, HOP).squeeze(1)  # (B, T)
    window_fft = torch.fft.rfft(_tukey().to(windows.device, windows.dtype))  # (257,)
    return spec - window_fft[None, :, None] * seg_means[:, None, :]


def psd_spectrogram(windows: torch.Tensor) -> torch.Tensor:
    """One-sided PSD (B, 257, T) in the units of scipy.signal.spectrogram (scaling='density').

    Computed in the input's precision: float64 reproduces scipy to 1e-9; extract passes float32, about
    twice as fast and still far finer than the float16 its features are stored in.
    """
    dtype = windows.dtype if windows.dtype in (torch.float32, torch.float64) else torch.float32
    spec = _detrended_stft(windows.to(dtype))
    window = _tukey().to(spec.device, dtype)
    psd = (spec.real.square() + spec.imag.square()) / (SAMPLE_RATE * window.square().sum())  # |spec|², no sqrt
    psd[:, 1:-1, :] *= 2.0  # one-sided: fold negative frequencies (not DC, not Nyquist for even N)
    return psd


def log_spectrogram_windows(windows: torch.Tensor) -> torch.Tensor:
    """(B, n_samples) waveforms → (B, 257, T) float32 log spectrograms, each z-scored on its own."""
    clipped = windows.clamp(-1.0, 1.0)
    # The log and the z-scoring stay in float64 whatever the input: a near-silent window's log spectrum
    # varies by ~1e-5 around log(LOG_EPS), below float32's resolution there, and z-scoring blows that up.
    log_spec = torch.log(psd_spectrogram(clipped).to(torch.float64) + LOG_EPS)
    centred = log_spec - log_spec.mean(dim=(1, 2), keepdim=True)
    std = centred.square().mean(dim=(1, 2), keepdim=True).sqrt()  # numpy's two-pass std, as the original
    return (centred / (std + STD_EPS)).to(torch.float32)


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
