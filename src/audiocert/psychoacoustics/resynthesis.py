"""Resynthesis of a (perturbed) Deep Speaker magnitude spectrogram to a waveform, with the clean phase."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from audiocert.psychoacoustics.grid import Array
from audiocert.psychoacoustics.inputs import _as_batch

if TYPE_CHECKING:
    from audiocert.frontend import DeepSpeakerFrontend


def _deemphasize(y: torch.Tensor, coefficient: float, block: int = 256) -> torch.Tensor:
    """Invert pre-emphasis: x[t] = y[t] + p x[t-1], x[-1] = 0, for (B, n) float64, in blocks (no loop over samples).

    Within a block x = L y with L[j, i] = p^(j - i) (i <= j); the blocks' last samples obey
    x_b = sum_{c <= b} p^(block (b - c)) local_c, and each block adds p^(j + 1) times the previous block's last.
    """
    batch, n = y.shape
    blocks = -(-n // block)
    padded = torch.nn.functional.pad(y, (0, blocks * block - n)).reshape(batch, blocks, block)
    j = torch.arange(block, dtype=torch.float64, device=y.device)
    lags = j[:, None] - j[None, :]
    within = torch.where(lags >= 0, coefficient ** lags.clamp_min(0), 0.0)           # (block, block)
    local = padded @ within.T                                                          # (B, blocks, block)
    b = torch.arange(blocks, dtype=torch.float64, device=y.device)
    block_lags = b[:, None] - b[None, :]
    across = torch.where(block_lags >= 0, coefficient ** (block * block_lags.clamp_min(0)), 0.0)
    last = local[..., -1] @ across.T                                                   # x at each block's end
    previous = torch.nn.functional.pad(last[:, :-1], (1, 0))                           # x before each block
    x = local + previous[..., None] * coefficient ** (j + 1)
    return x.reshape(batch, -1)[:, :n]


def magspec_to_waveform(magspec: Array, clean_waveform: Array, frontend: DeepSpeakerFrontend) -> torch.Tensor:
    """Resynthesise a (perturbed) Deep Speaker magnitude spectrogram (..., frames, 257) to a waveform (..., n).

    With the clean utterance's phase phi (pre-emphasis 0.97, rectangular 400-sample frames every 160, zero-padded
    last frame, rfft(512)): Y = |M| e^(i phi); each frame is the first 400 samples of irfft(Y, 512) (the
    least-squares inverse of zero-padding + DFT); overlapping frames are averaged per sample (the least-squares
    inverse of the framing); then pre-emphasis is inverted, x[t] = y[t] + 0.97 x[t-1]. In float64 throughout: the
    inverse pre-emphasis amplifies errors by up to 1 / (1 - 0.97) = 33. The result's magspec equals M only when M is
    a consistent magnitude spectrogram (e.g. the clean one); otherwise it is the least-squares compromise.
    Returned in the clean waveform's dtype, on its device.
    """
    x, lead, dtype = _as_batch(clean_waveform, "clean_waveform", min_samples=1)
    m = torch.as_tensor(magspec).to(device=x.device, dtype=torch.float64)
    frames_clean = frontend.frame(frontend.preemphasize(x))                            # (B, F, L)
    spectrum = torch.fft.rfft(frames_clean, n=frontend.nfft)
    expected = (*lead, *spectrum.shape[-2:])
    if tuple(m.shape) != expected:
        raise ValueError(f"magspec has shape {tuple(m.shape)}; the clean waveform's is {expected}")
    if not bool(torch.isfinite(m).all()):
        raise ValueError("magspec has non-finite values")
    magnitude = spectrum.abs()
    phase = torch.where(magnitude > 0, spectrum / magnitude.clamp_min(1e-300), 1.0 + 0j)
    frames = torch.fft.irfft(m.reshape(spectrum.shape) * phase, n=frontend.nfft)[..., :frontend.frame_length]
    length = (frames.shape[-2] - 1) * frontend.hop_length + frontend.frame_length   # the zero-padded signal
    fold = torch.nn.functional.fold
    kernel, stride = (1, frontend.frame_length), (1, frontend.hop_length)
    summed = fold(frames.transpose(-1, -2), (1, length), kernel, stride=stride)       # (B, 1, 1, length)
    covers = fold(torch.ones_like(frames[:1]).transpose(-1, -2), (1, length), kernel, stride=stride)
    y = (summed / covers).reshape(x.shape[0], length)[:, :x.shape[-1]]
    return _deemphasize(y, frontend.preemphasis).reshape(*lead, x.shape[-1]).to(dtype)
