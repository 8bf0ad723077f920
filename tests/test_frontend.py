"""The torch frontend against python_speech_features (the oracle) plus Deep Speaker's normalization."""

import numpy as np
import pytest
import torch
from python_speech_features import fbank
from python_speech_features.base import get_filterbanks

from audiocert.frontend import DeepSpeakerFrontend, mel_filterbank, num_frames, samples_for_frames


def oracle(signal: np.ndarray) -> np.ndarray:
    energies, _ = fbank(signal.astype(np.float64), samplerate=16000, nfilt=64)
    return np.array([(v - v.mean()) / max(v.std(), 1e-12) for v in energies])


def speech_like(n: int, seed: int) -> np.ndarray:
    """Harmonics with a moving pitch, amplitude envelope and a stretch of silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    f0 = 120 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x[n // 3 : n // 3 + 2000] = 0.0
    return (0.3 * x / np.abs(x).max() + 0.001 * rng.standard_normal(n)).astype(np.float32)


def test_filterbank_equals_oracle():
    assert np.array_equal(mel_filterbank(64, 512, 16000, 0, 8000), get_filterbanks(64, 512, 16000, 0, 8000))
    assert np.array_equal(mel_filterbank(26, 512, 16000), get_filterbanks(26, 512, 16000))


def test_frame_counts():
    assert num_frames(25840) == 160 and samples_for_frames(160) == 25840
    assert num_frames(25000) == 155 and num_frames(100) == 1 and num_frames(401) == 2


# Tolerance: float32 torch vs float64 numpy; normalized features agree to 1e-4 absolute (observed ~1e-6).
@pytest.mark.parametrize("kind,seed", [("random", 0), ("random", 1), ("speech", 2), ("speech", 3)])
def test_frontend_matches_python_speech_features(kind, seed):
    n = 25840
    signal = (np.random.default_rng(seed).uniform(-0.5, 0.5, n).astype(np.float32) if kind == "random"
              else speech_like(n, seed))
    ours = DeepSpeakerFrontend()(torch.from_numpy(signal)[None])
    assert ours.shape == (1, 1, 160, 64)
    np.testing.assert_allclose(ours[0, 0].numpy(), oracle(signal), atol=1e-4)


def test_odd_length_and_batching():
    frontend = DeepSpeakerFrontend()
    signals = np.stack([speech_like(25000, s) for s in range(3)])
    batched = frontend(torch.from_numpy(signals))
    assert batched.shape == (3, 1, 155, 64)
    for i in range(3):
        np.testing.assert_allclose(batched[i, 0].numpy(), oracle(signals[i]), atol=1e-4)


def test_stages_compose_and_shapes():
    frontend = DeepSpeakerFrontend()
    waveform = torch.from_numpy(np.stack([speech_like(25840, 5), speech_like(25840, 6)]))
    direct = frontend(waveform)
    for stage, shape in [("waveform", (25840,)), ("magspec", (160, 257)), ("mfbe", (160, 64))]:
        x = frontend.to_stage(waveform, stage)
        assert tuple(x.shape[1:]) == shape == frontend.stage_shape(stage, 25840)
        torch.testing.assert_close(frontend.from_stage(x, stage), direct)
    assert 160 * 257 == 41120 and 160 * 64 == 10240
    with pytest.raises(ValueError, match="unknown smoothing stage 'logmel'"):
        frontend.to_stage(waveform, "logmel")


def test_magspec_is_magnitude_of_rfft_of_preemphasized_frames():
    frontend = DeepSpeakerFrontend()
    x = speech_like(25840, 7)
    y = np.append(x[0], x[1:] - 0.97 * x[:-1])
    frame = y[160 * 10 : 160 * 10 + 400]
    expected = np.abs(np.fft.rfft(frame, 512))
    ours = frontend.to_stage(torch.from_numpy(x)[None], "magspec")[0, 10].numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)
