"""The per-frame audio windows against scipy's spectrogram and the placement rule."""

import numpy as np
import pytest
import scipy.signal
import torch

from pipeline.common.audio_features import (
    AudioWindowConfig, cut_windows, frame_audio_features, log_spectrogram_windows, psd_spectrogram, resample_to_16k,
    tukey_window,
)  # fmt: skip


def scipy_features(window: np.ndarray) -> np.ndarray:
    """SPEC §1.3 steps 5-7 written with scipy/numpy, as the original code did."""
    x = np.clip(window, -1, 1)
    _, _, spec = scipy.signal.spectrogram(x, fs=16000, nperseg=512, noverlap=353)
    spec = np.log(spec + 1e-7)
    return (spec - spec.mean()) / (spec.std() + 1e-9)


@pytest.mark.parametrize("n,alpha", [(512, 0.25), (101, 0.5), (8, 0.25)])
def test_tukey_window_equals_scipy(n, alpha):
    expected = scipy.signal.get_window(("tukey", alpha), n)
    np.testing.assert_allclose(tukey_window(n, alpha).numpy(), expected, atol=1e-12)


def test_psd_equals_scipy_spectrogram_on_the_same_samples():
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    batch = np.stack([0.2 * rng.standard_normal(8000) + 0.3, 0.5 * np.sin(2 * np.pi * 440 * t), np.zeros(8000)])
    _, _, expected = scipy.signal.spectrogram(batch, fs=16000, nperseg=512, noverlap=353)
    got = psd_spectrogram(torch.from_numpy(batch)).numpy()
    assert got.shape == expected.shape == (3, 257, 48)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-18)


def test_log_standardised_windows_equal_the_original_recipe():
    rng = np.random.default_rng(1)
    batch = rng.uniform(-1.5, 1.5, size=(4, 8000))  # some samples beyond ±1 exercise the clipping
    got = log_spectrogram_windows(torch.from_numpy(batch))
    assert got.dtype == torch.float32 and got.shape == (4, 257, 48)
    for i in range(4):
        np.testing.assert_allclose(got[i].numpy(), scipy_features(batch[i]), rtol=1e-4, atol=1e-4)


def test_float32_windows_match_the_float64_recipe_within_float16_storage_precision():
    rng = np.random.default_rng(2)
    t = np.arange(8000) / 16000
    batch = np.stack([
        rng.uniform(-1.5, 1.5, 8000), 0.5 * np.sin(2 * np.pi * 440 * t) + 0.3, 1e-4 * rng.standard_normal(8000),
        # near-silent: the log spectrum sits within ~1e-5 of log(1e-7), below float32's resolution there
        1e-6 * rng.standard_normal(8000), 3e-7 * np.sin(2 * np.pi * 1000 * t),
    ])  # fmt: skip
    got = log_spectrogram_windows(torch.from_numpy(batch.astype(np.float32)))
    assert got.dtype == torch.float32
    for i in range(len(batch)):
        expected = scipy_features(batch[i].astype(np.float32).astype(np.float64))
        # float16 keeps 11 significant bits: an error below 2**-11 of the value range is invisible in the store
        np.testing.assert_allclose(got[i].numpy(), expected, rtol=0, atol=2e-4 * np.abs(expected).max())


def test_window_shape_follows_the_configured_length():
    assert AudioWindowConfig(0.5).shape == (257, 48)
    assert AudioWindowConfig(1.0).shape == (257, (16000 - 353) // 159)


def test_windows_start_at_frame_times_and_pad_with_silence():
    signal = np.arange(1, 101, dtype=np.float32)  # 100 samples
    starts = np.array([-5, 0, 95])
    windows = cut_windows(signal, starts, 10).numpy()
    np.testing.assert_array_equal(windows[0], [0, 0, 0, 0, 0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(windows[1], np.arange(1, 11))
    np.testing.assert_array_equal(windows[2], [96, 97, 98, 99, 100, 0, 0, 0, 0, 0])


def test_tone_onset_shows_in_the_window_of_its_frame():
    fps, onset_frame = 10, 7
    t = np.arange(16000 * 2) / 16000
    signal = np.where(t >= onset_frame / fps, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)
    frame_times = np.arange(20) / fps
    feats = frame_audio_features(signal, 0.0, frame_times, AudioWindowConfig())
    band = feats[:, 32, :].mean(axis=1)  # bin 32 = 1000 Hz
    assert band[onset_frame] > 1.0
    assert np.all(band[: onset_frame - 5] < 0.5)  # windows that end before the onset are silent


def test_resample_to_16k_keeps_a_tone_frequency():
    rate = 44100
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 1500 * t).astype(np.float32)
    out = resample_to_16k(tone, rate)
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) - 1500) <= 1
