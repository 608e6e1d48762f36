"""The sounds of the generated classes, and a video's soundtrack with its silent stretches.

Every sound keeps its energy inside its class's `band_hz` (synth_classes) and differs from the others in
time too (steady, pulsed, swept, clicking, tremolo). Small per-video variations (frequency, rate, phase)
stay inside the band. Waveforms are normalised to the same RMS, so no class is louder than another.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.synth.classes import ClassSpec

SOUND_RMS = 0.1  # peak stays well below 1 for every sound, so nothing clips
BACKGROUND_RMS = 0.002  # the "little background noise" that is all a silent stretch holds (−34 dB)
RAMP_S = 0.01  # fades at the edges of a silent stretch, inside it, so `audible` frames sound fully

SoundFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _band_noise(n: int, rate: int, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    """White noise with every FFT bin outside [low, high] Hz removed."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    return np.fft.irfft(spectrum, n)


def _periodic_bursts(t: np.ndarray, rate_hz: float, width_s: float, phase: float) -> np.ndarray:
    """Hann-shaped bursts of `width_s` seconds, `rate_hz` times a second."""
    period = 1.0 / rate_hz
    local = np.mod(t + phase * period, period)
    inside = local < width_s
    return np.where(inside, 0.5 - 0.5 * np.cos(2 * np.pi * np.minimum(local, width_s) / width_s), 0.0)


def _tone(t: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    hz = 440.0 * (1 + rng.uniform(-0.02, 0.02))
    return np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))


def _noise(t: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    return _band_noise(t.size, rate, 2050.0, 2950.0, rng)


def _pulses(t: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    # 50 ms Hann bursts (main lobe ±40 Hz) at least 10 times a second: every 0.1 s holds a burst.
    bursts = _periodic_bursts(t, rng.uniform(10.0, 12.0), 0.05, rng.uniform())
    return bursts * np.sin(2 * np.pi * 1000.0 * t)


def _chirp(t: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    sweep_s = rng.uniform(0.4, 0.6)
    hz = 4100.0 + 800.0 * np.mod(t / sweep_s + rng.uniform(), 1.0)
    return np.sin(2 * np.pi * np.cumsum(hz) / rate)


def _whistle(t: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    hz = 6500.0 + 15.0 * np.sin(2 * np.pi * rng.uniform(4.0, 6.0) * t)  # a little vibrato
    return np.sin(2 * np.pi * np.cumsum(hz) / rate)


def _clicks(t: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    bursts = _periodic_bursts(t, rng.uniform(11.0, 13.0), 0.015, rng.uniform())
    return bursts * _band_noise(t.size, rate, 3350.0, 3850.0, rng)


def _chord(t: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    phase = rng.uniform(0, 2 * np.pi, size=2)
    return np.sin(2 * np.pi * 700.0 * t + phase[0]) + 0.3 * np.sin(2 * np.pi * 1600.0 * t + phase[1])


def _tremolo(t: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    depth = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 2 * np.pi))
    return depth * _band_noise(t.size, rate, 5450.0, 5950.0, rng)


SOUNDS: dict[str, SoundFn] = {
    "tone": _tone,
    "noise": _noise,
    "pulses": _pulses,
    "chirp": _chirp,
    "whistle": _whistle,
    "clicks": _clicks,
    "chord": _chord,
    "tremolo": _tremolo,
}


def class_sound(spec: ClassSpec, n_samples: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """`n_samples` of the class's sound at `rate` Hz, float64 with RMS `SOUND_RMS`."""
    t = np.arange(n_samples) / rate
    wave = SOUNDS[spec.sound](t, rate, rng)
    rms = float(np.sqrt(np.mean(np.square(wave)))) or 1.0
    return wave * (SOUND_RMS / rms)


def audible_envelope(audible: np.ndarray, fps: float, n_samples: int, rate: int) -> np.ndarray:
    """Gain per sample: 1 during frames marked audible, 0 in silent ones, with short fades that lie
    inside the silent frames (so an audible frame always hears the full sound)."""
    frame_of_sample = np.minimum((np.arange(n_samples) * fps / rate).astype(np.int64), audible.size - 1)
    gain = audible[frame_of_sample].astype(np.float64)
    ramp = max(1, int(round(RAMP_S * rate)))
    # Distance (in samples) from each silent sample to the nearest audible one, found by two passes of
    # a running minimum; gains inside the ramp follow a raised cosine.
    idx = np.arange(n_samples)
    last_audible = np.maximum.accumulate(np.where(gain > 0, idx, -(10**12)))
    next_audible = np.minimum.accumulate(np.where(gain > 0, idx, 10**12)[::-1])[::-1]
    distance = np.minimum(idx - last_audible, next_audible - idx)
    fade = np.where(distance < ramp, 0.5 + 0.5 * np.cos(np.pi * np.clip(distance, 0, ramp) / ramp), 0.0)
    return np.where(gain > 0, 1.0, fade)


def soundtrack(
    spec: ClassSpec, audible: np.ndarray, fps: float, rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Mono float32 audio of a whole video: the class's sound where `audible` (per frame), background
    noise everywhere."""
    n_samples = int(round(audible.size / fps * rate))
    sound = class_sound(spec, n_samples, rate, rng)
    background = rng.standard_normal(n_samples) * BACKGROUND_RMS
    envelope = audible_envelope(audible, fps, n_samples, rate)
    return (sound * envelope + background).astype(np.float32)
