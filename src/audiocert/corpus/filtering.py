"""Time-varying filtering in the STFT domain (weighted overlap-add), and the cascade of formant resonators."""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy import signal


class _Stft:
    """Weighted overlap-add filtering with a time-varying frequency response."""

    def __init__(self, sample_rate: int):
        self.n_win = 1 << int(math.ceil(math.log2(0.032 * sample_rate)))
        self.hop = self.n_win // 4
        self.n_fft = 2 * self.n_win  # zero padding: the filters' tails do not wrap around
        self.window = signal.get_window("hann", self.n_win)
        self.freqs = np.fft.rfftfreq(self.n_fft, 1.0 / sample_rate)

    def num_frames(self, n: int) -> int:
        return n // self.hop + 2

    def analyze(self, x: np.ndarray) -> np.ndarray:
        half = self.n_win // 2
        frames_n = self.num_frames(x.size)
        xp = np.pad(x, (half, frames_n * self.hop + self.n_win))
        frames = np.lib.stride_tricks.sliding_window_view(xp, self.n_win)[:: self.hop][:frames_n]
        return sfft.rfft((frames * self.window).astype(np.float32), n=self.n_fft, axis=1)

    def synthesize(self, spec: np.ndarray, n: int) -> np.ndarray:
        frames = sfft.irfft(spec, n=self.n_fft, axis=1).astype(np.float64)
        t = frames.shape[0]
        per = self.n_fft // self.hop
        blocks = np.zeros((t + per, self.hop))
        for j in range(per):
            blocks[j:j + t] += frames[:, j * self.hop:(j + 1) * self.hop]
        out = blocks.reshape(-1) / (self.window.sum() / self.hop)
        half = self.n_win // 2
        return out[half:half + n]

    def resonators(self, freqs: np.ndarray, bws: np.ndarray, sample_rate: int) -> np.ndarray:
        """Cascade of Klatt digital resonators (unity gain at DC); freqs, bws: (frames, K).

        The K second-order denominators are multiplied into one polynomial per frame, whose frequency
        response is a single zero-padded FFT.
        """
        freqs = np.minimum(freqs, 0.47 * sample_rate)
        r = np.exp(-np.pi * bws / sample_rate)
        c = -(r * r)
        b = 2.0 * r * np.cos(2.0 * np.pi * freqs / sample_rate)
        gain = np.prod(1.0 - b - c, axis=1)
        frames, k_count = freqs.shape
        poly = np.zeros((frames, 2 * k_count + 1))
        poly[:, 0] = 1.0
        for k in range(k_count):  # poly *= (1 - b z^-1 - c z^-2)
            nxt = poly.copy()
            nxt[:, 1:] -= b[:, k:k + 1] * poly[:, :-1]
            nxt[:, 2:] -= c[:, k:k + 1] * poly[:, :-2]
            poly = nxt
        return (gain[:, None] / np.fft.rfft(poly, n=self.n_fft, axis=1)).astype(np.complex64)
