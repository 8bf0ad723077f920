"""The upper bound on the largest imperceptible norm: per-frame Parseval identities combined by a linear programme."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from audiocert.psychoacoustics.grid import HOP, N_FFT, NUM_BINS, num_frames


@lru_cache(maxsize=16)
def _frame_weights(num_samples: int) -> tuple[object, np.ndarray]:
    """The (frames, n) sparse matrix W[t, n] = w^2(n - 512 t + N/2) of the padded STFT, and the frames' columns."""
    from scipy import sparse

    w2 = np.hanning(N_FFT + 1)[:-1] ** 2  # periodic Hann, squared
    rows, cols, values = [], [], []
    for t in range(num_frames(num_samples)):  # once per length (cached)
        start = t * HOP - N_FFT // 2
        n = np.arange(max(0, start), min(num_samples, start + N_FFT))
        rows.append(np.full(n.size, t))
        cols.append(n)
        values.append(w2[n - start])
    matrix = sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(num_frames(num_samples), num_samples))
    return matrix, np.asarray(matrix.sum(axis=0)).ravel()


def _upper_bound(allowed: torch.Tensor, num_samples: int) -> torch.Tensor:
    """An upper bound on ||delta|| over all delta with |STFT(delta)| <= A, per row of ``allowed`` (B, frames, 1025).

    Parseval per frame: sum_n W[t, n] delta_n^2 = (1/N) sum_k m_k |D(t, k)|^2 <= E_t := (1/N) sum_k m_k A(t, k)^2
    (m_k = 1 at k = 0 and N/2, else 2). For any lambda >= 0 with g = W^T lambda >= 1 at every sample,
    ||delta||^2 <= sum_n g_n delta_n^2 = sum_t lambda_t sum_n W[t, n] delta_n^2 <= sum_t lambda_t E_t. lambda is the
    dual linear programme's solution on every 4th sample, then divided by min_n g_n so that it holds at all samples.
    """
    from scipy.optimize import linprog

    weights = torch.full((NUM_BINS,), 2.0, dtype=torch.float64, device=allowed.device)
    weights[0] = weights[-1] = 1.0
    energy = ((allowed.square() * weights).sum(-1) / N_FFT).cpu().numpy()       # (B, frames)
    matrix, envelope = _frame_weights(num_samples)
    sampled = matrix[:, ::4].T.tocsr()
    bounds = []
    for e in energy:
        lam = np.full(e.shape, 1.0 / envelope.min())   # uniform lambda: the plain Parseval bound
        if e.any():  # solved on e / max(e), so that a gain on the signal leaves the programme unchanged
            solution = linprog(e / e.max(), A_ub=-sampled, b_ub=-np.ones(sampled.shape[0]), bounds=(0, None),
                               method="highs")
            if solution.status == 0:
                lam = solution.x
        lam = lam / (matrix.T @ lam).min()
        bounds.append(math.sqrt(max(min(float(lam @ e), float(e.sum()) / envelope.min()), 0.0)))
    return torch.tensor(bounds, dtype=torch.float64, device=allowed.device)
