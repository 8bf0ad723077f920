"""A lower estimate of the Lipschitz constant of waveform -> magnitude spectrogram: power iteration on the finite map.

For tests and diagnostics only: the Rayleigh quotient approaches ||A_N|| from below, so a certificate must use the
proven bound of :func:`audiocert.lipschitz.waveform_lipschitz_bound`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from audiocert.frontend import DeepSpeakerFrontend


def stft_linear(frontend: DeepSpeakerFrontend, waveform: torch.Tensor) -> torch.Tensor:
    """The linear part of waveform -> magspec: complex rfft of the pre-emphasized, framed waveform."""
    return torch.fft.rfft(frontend.frame(frontend.preemphasize(waveform)), n=frontend.nfft)


def _normal_operator(frontend: DeepSpeakerFrontend, v: torch.Tensor) -> torch.Tensor:
    """A^T A v for A = waveform -> (real, imag) of the framed rfft, with the adjoint from autograd (a vjp)."""
    with torch.inference_mode(False), torch.enable_grad():
        v = v.detach().clone().requires_grad_(True)
        y = torch.view_as_real(stft_linear(frontend, v))
        (g,) = torch.autograd.grad(y, v, grad_outputs=y.detach())
    return g.detach()


def lipschitz_power_iteration(
    frontend: DeepSpeakerFrontend, num_samples: int, iterations: int = 20000, tol: float = 1e-6, seed: int = 0,
) -> dict[str, Any]:
    """Power iteration for ||A_N||_2 on the frontend's own ops: {"lipschitz", "iterations", "converged", "last_change"}.

    A *lower* estimate (the Rayleigh quotient approaches the norm from below), for tests and diagnostics: a
    certificate must use :func:`waveform_lipschitz_bound`. Stops when the estimate changes by at most ``tol``
    relative. The start vector is a sine-enveloped mix of the DC and Nyquist patterns (where the top singular
    vectors of this map lie) plus 1% seeded Gaussian noise, so that no direction is missed; from a white start
    the near-degenerate top of the spectrum takes thousands of iterations.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be positive")
    n = torch.arange(num_samples, dtype=torch.float64)
    envelope = torch.sin(math.pi * (n + 0.5) / num_samples)
    structured = envelope * (1.0 + torch.cos(math.pi * n))  # DC + Nyquist (alternating signs)
    noise = torch.randn(num_samples, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    v = structured / structured.norm() + 0.01 * noise / noise.norm()
    v = v / v.norm()
    frontend = frontend.to(torch.device("cpu"))
    estimate, previous, change = 0.0, None, math.inf
    for iteration in range(1, int(iterations) + 1):
        w = _normal_operator(frontend, v)
        estimate = math.sqrt(max(float(v @ w), 0.0))
        norm = float(w.norm())
        if norm == 0.0:
            return {"lipschitz": 0.0, "iterations": iteration, "converged": True, "last_change": 0.0}
        v = w / norm
        if previous is not None:
            change = abs(estimate - previous) / max(estimate, 1e-300)
            if change <= tol:
                return {"lipschitz": estimate, "iterations": iteration, "converged": True, "last_change": change}
        previous = estimate
    return {"lipschitz": estimate, "iterations": int(iterations), "converged": False, "last_change": change}
