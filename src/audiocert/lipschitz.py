"""A proven upper bound on the Lipschitz constant (L2 -> L2) of waveform -> magnitude spectrogram.

The magnitude spectrogram of the Deep Speaker frontend (:mod:`audiocert.frontend`) is ``|A x|`` with ``A`` linear:
pre-emphasis, framing and a zero-padded rfft. ``|.|`` is 1-Lipschitz, so ``||A||_2`` bounds the Lipschitz constant of
waveform -> magspec, and a magspec certificate of radius r holds for every waveform perturbation of L2 norm < r / L
for any L >= ||A||_2. Power iteration approaches ||A|| from below, which is no proof; this module proves an upper
bound instead.

The linear map. Write F_j for column j of the (real-stacked: real rows, then imaginary rows; 2 * (nfft // 2 + 1)
rows) rfft(nfft) matrix applied to a frame, F_j = 0 outside 0 <= j < frame_length, and p for the pre-emphasis
coefficient. Frame m of a signal x (x[t] = 0 for t < 0) is then

    X_m = sum_{k} F_k (x[hop m + k] - p x[hop m + k - 1]) = sum_{j=-1}^{frame_length-1} g_j x[hop m + j],
    g_j = F_j - p F_{j+1}.

Polyphase form. With j = hop q + r (0 <= r < hop) and xi[n] = (x[hop n + r])_r in R^hop, X_m = sum_q G_q xi[m + q],
G_q the real (2 bins x hop) matrix whose column r is g_{hop q + r}. On l2(Z) this is a multichannel convolution
(hop inputs and 2 bins outputs per frame index), so its operator norm is

    L_inf = sup_theta sigma_max(H(theta)),    H(theta) = sum_q G_q e^{i q theta}.

G_q is real, so sigma(H(-theta)) = sigma(H(theta)) and theta in [0, pi] suffices. sigma_max(H)^2 is the largest
eigenvalue of the hop x hop Hermitian Gram T(theta) = H^H H = C_0 + sum_{d >= 1} (C_d e^{i d theta} + C_d^T
e^{-i d theta}), C_d = sum_q G_q^T G_{q+d}, which is evaluated in float64 with ``eigvalsh``.

Certifying the supremum (branch and bound on [0, pi]). Two bounds hold for an interval [c - h, c + h]:

- first order: theta -> sigma_max(H(theta)) is D-Lipschitz, D = sum_q |q - q0| ||G_q||_2 (||H'|| <= D, sigma_max
  is 1-Lipschitz in the operator norm; multiplying H by e^{-i q0 theta} changes no singular value, so q0 is the
  weighted median of q that makes D smallest). Bound: sigma(c) + h D.
- second order: T(c + s) = T(c) + s T'(c) + R(s) with ||R(s)|| <= s^2 / 2 * K2, K2 = sum_{d >= 1} 2 d^2 ||C_d||_2
  (Taylor with integral remainder, ||T''|| <= K2), and s -> lambda_max(T(c) + s T'(c)) is convex (a maximum of
  affine functions), so over |s| <= h it peaks at s = +-h. Bound: sqrt(max_{+-} lambda_max(T(c) +- h T'(c)) +
  h^2 K2 / 2). Its slack shrinks as h^2, which matters: near its maximum sigma is flat (at theta = 0 for the Deep
  Speaker frontend), where a first-order bound alone needs tens of thousands of evaluations for 1e-6.

An interval is closed once min(first, second) <= (best evaluated sigma) + tolerance, otherwise it is halved. The
certified bound is the largest bound of a closed interval (or the best value, if larger): within ``tolerance`` of a
value sigma(theta) actually attained. It is then raised by FP_SAFETY (1e-9) relative to cover float64 round-off in
the Grams and eigenvalues (both are accurate to ~1e-13 relative here). Should the refinement run out of its
evaluation budget, which only a nearly flat sigma (e.g. non-overlapping frames) makes it do, the open intervals are
closed with the bounds they have: the result is still proven, only looser, and says so (``tolerance_reached``).

Finite lengths. The frontend maps N samples to M = 1 + ceil((N - frame_length) / hop) frames and zero-pads the last
frame's *pre-emphasized* signal y, so y[N] = -p x[N-1] (which the infinite system keeps) is dropped from the frames
that reach past the signal (the "crossing" frames). Frames before them are exactly frames of the infinite system
applied to the zero-extended x (y[0] = x[0] matches x[-1] = 0). Hence:

- when no frame reaches past the signal ((N - frame_length) % hop == 0, e.g. 25,840 samples = 160 frames), the
  finite map is a restriction of the infinite one to the input support and to some output frames: ||A_N|| <= L_inf.
- otherwise, with q_m(x) = ||frame m||^2, ||A_N x||^2 = sum_{interior m} q_m + sum_{crossing m} q_m^fin and
  ||A_inf x||^2 >= sum_{interior m} q_m + sum_{m >= first crossing} q_m^inf, so ||A_N||^2 <= L_inf^2 + e with
  e = max(0, -lambda_min(Delta)) and Delta = sum_{m >= first crossing} Gram_m^inf - sum_{crossing m} Gram_m^fin,
  a matrix over the last <= frame_length + 1 samples (it depends on N only through (N - frame_length) % hop).
  Dropping y[N] can raise a frame's DC content, so Delta is not always PSD; for the Deep Speaker frontend
  e <= 0.293 for every N >= frame_length (<= 0.596 below) against L^2 ~ 4772: L is raised by <= 0.0022 (0.0044).

Closed form (a fallback and a sanity check, valid for every N): each sample lies in at most ceil(frame/hop) frames,
||rfft frame||^2 <= lambda_max(W^T W) ||frame||^2 and ||pre-emphasis|| <= 1 + |p|, so
||A_N|| <= (1 + |p|) sqrt(ceil(frame_length / hop) lambda_max(W^T W)); for an even nfft >= frame_length,
W^T W = (nfft / 2) I + (1 1^T + a a^T) / 2 with a_k = (-1)^k, so for an even frame_length (1 and a orthogonal)
lambda_max = nfft / 2 + frame_length / 2: 456, and the closed form is about 72.87 for the Deep Speaker frontend.
lambda_max(W^T W) is computed numerically, which covers every case. The bound returned is the smaller of the two.

Only the four frontend parameters that shape ``A`` matter (frame_length, hop_length, nfft, preemphasis);
sample_rate, num_filters, low_hz and high_hz act after the magnitude. A config with any other key, or with values
this derivation does not cover, gets no bound (None).

Power iteration on the finite map (:func:`audiocert.lipschitz_estimate.lipschitz_power_iteration`) remains as a
*lower* estimate for tests and diagnostics.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from audiocert.frontend import DeepSpeakerFrontend, num_frames

METHOD = ("polyphase symbol H(theta) of the hop-periodic linear map waveform -> real/imag rfft of pre-emphasized "
          "frames; sup over theta in [0, pi] of sigma_max(H(theta)) certified by a grid and branch-and-bound "
          "refinement (first-order Lipschitz bound D and second-order convex-linearization bound), float64 "
          "eigvalsh of the hop x hop Gram, raised by a 1e-9 relative floating-point margin; a boundary term "
          "for crop lengths whose last frame is zero-padded; never above the closed form "
          "(1 + |p|) sqrt(ceil(frame/hop) lambda_max(W^T W))")
METHOD_VERSION = 1
DEFAULT_TOLERANCE = 1e-6
FP_SAFETY = 1e-9
INITIAL_INTERVALS = 16
MAX_LEVELS = 60
MAX_HOP = 1024  # each evaluation is an O(hop^3) eigendecomposition: larger hops are not certified here
MAX_NFFT = 1 << 16
LINEAR_KEYS = ("frame_length", "hop_length", "nfft", "preemphasis")
# DeepSpeakerFrontend arguments that act after |rfft| and so do not change the linear map.
IGNORED_KEYS = ("sample_rate", "num_filters", "low_hz", "high_hz")
_BATCH = 64  # matrices per batched eigvalsh call at most (see _chunks)


@dataclass(frozen=True)
class LinearMap:
    """The parameters of waveform -> complex rfft of pre-emphasized frames (all the bound depends on)."""

    frame_length: int
    hop_length: int
    nfft: int
    preemphasis: float


@dataclass(frozen=True)
class LipschitzBound:
    """A proven upper bound ``bound`` on ||waveform -> magspec|| (L2 -> L2), and how it was obtained.

    ``num_samples`` None: the bound holds for the infinite-length operator and for every length whose last frame
    ends inside the signal ((N - frame_length) % hop == 0); otherwise it holds for waveforms of ``num_samples``.
    ``lower`` is the largest sigma_max(H(theta)) evaluated (at ``theta``): a lower bound on the infinite-length
    norm, approached by long finite waveforms, so ``bound - lower`` measures how tight the bound is.
    """

    bound: float
    num_samples: int | None
    lower: float
    theta: float
    sup_bound: float  # certified sup_theta sigma_max(H(theta)), FP margin included
    boundary_excess: float  # e: ||A_N||^2 <= sup_bound^2 + e (0 when no frame is zero-padded)
    closed_form: float
    derivative_bound: float  # D
    curvature_bound: float  # K2
    tolerance: float
    tolerance_reached: bool  # False only where refinement stopped early (evaluation budget): still proven
    evaluations: int
    method: str
    method_version: int
    params: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------
# Which frontends the derivation covers
# ----------------------------------------------------------------------------------------------------------
def _frontend_defaults() -> dict[str, Any]:
    """DeepSpeakerFrontend's own defaults, read from its signature so that the two cannot drift apart."""
    parameters = inspect.signature(DeepSpeakerFrontend.__init__).parameters
    return {name: p.default for name, p in parameters.items() if name != "self"}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def linear_map_of(frontend_cfg: Mapping[str, Any] | None) -> LinearMap | None:
    """The linear map of a frontend config (DeepSpeakerFrontend arguments), or None if the derivation does not cover it.

    None for: a key that is not a DeepSpeakerFrontend argument (another frontend: what it computes is unknown);
    non-integer or non-positive frame_length / hop_length / nfft; nfft < frame_length (the frontend refuses it);
    a non-finite or non-real preemphasis; hop_length > MAX_HOP or nfft > MAX_NFFT (too costly to certify here).
    """
    if frontend_cfg is not None and not isinstance(frontend_cfg, Mapping):
        return None
    cfg = dict(frontend_cfg or {})
    defaults = _frontend_defaults()
    if set(defaults) != set(LINEAR_KEYS) | set(IGNORED_KEYS):
        return None  # DeepSpeakerFrontend gained an argument this derivation has not been checked against
    if any(not isinstance(key, str) or key not in defaults for key in cfg):
        return None
    values = {key: cfg.get(key, defaults[key]) for key in LINEAR_KEYS}
    frame, hop, nfft, p = (values[key] for key in LINEAR_KEYS)
    if not (_is_int(frame) and _is_int(hop) and _is_int(nfft)):
        return None
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(float(p)):
        return None
    frame, hop, nfft = int(frame), int(hop), int(nfft)
    if frame < 1 or hop < 1 or nfft < frame or hop > MAX_HOP or nfft > MAX_NFFT:
        return None
    return LinearMap(frame, hop, nfft, float(p))


# ----------------------------------------------------------------------------------------------------------
# The matrices
# ----------------------------------------------------------------------------------------------------------
def rfft_rows(frame_length: int, nfft: int) -> np.ndarray:
    """W: the real-stacked one-sided rfft(nfft) of a frame, (2 * (nfft // 2 + 1), frame_length), float64."""
    bins = np.arange(nfft // 2 + 1)[:, None]
    k = np.arange(frame_length)[None, :]
    angle = 2.0 * np.pi * ((bins * k) % nfft) / nfft  # reduced mod nfft: exact integer phase, accurate cos/sin
    return np.vstack([np.cos(angle), -np.sin(angle)])


def taps(lm: LinearMap) -> np.ndarray:
    """g_j = F_j - p F_{j+1} for j = -1 .. frame_length - 1, as the columns of a (2 bins, frame_length + 1) matrix."""
    w = rfft_rows(lm.frame_length, lm.nfft)
    padded = np.zeros((w.shape[0], lm.frame_length + 2))
    padded[:, 1:-1] = w  # column c holds F_{c-1}
    return padded[:, :-1] - lm.preemphasis * padded[:, 1:]


def polyphase_blocks(lm: LinearMap) -> dict[int, np.ndarray]:
    """{q: G_q}: G_q is (2 bins, hop) with column r = g_{hop q + r} (zero where hop q + r is outside -1..frame-1)."""
    g = taps(lm)
    j = np.arange(-1, lm.frame_length)
    q, r = np.divmod(j, lm.hop_length)
    blocks = {}
    for block in range(int(q.min()), int(q.max()) + 1):
        matrix = np.zeros((g.shape[0], lm.hop_length))
        matrix[:, r[q == block]] = g[:, q == block]
        blocks[block] = matrix
    return blocks


def polyphase_symbol(lm: LinearMap, theta: float) -> np.ndarray:
    """H(theta) = sum_q G_q e^{i q theta}: frame m of the input xi[n] = e^{i n theta} v is e^{i m theta} H(theta) v."""
    return sum(block * np.exp(1j * q * theta) for q, block in polyphase_blocks(lm).items())


def _gram_coefficients(blocks: Mapping[int, np.ndarray]) -> list[np.ndarray]:
    """[C_0, C_1, ...], C_d = sum_q G_q^T G_{q+d}: T(theta) = H^H H = C_0 + sum_{d>=1} (C_d e^{id theta} + h.c.)."""
    qs = sorted(blocks)
    return [sum(blocks[q].T @ blocks[q + d] for q in qs if q + d in blocks) for d in range(qs[-1] - qs[0] + 1)]


def _symbol_gram(coefficients: list[np.ndarray], theta: np.ndarray, derivative: bool = False) -> np.ndarray:
    """T(theta) (or T'(theta)) for a batch of theta: (len(theta), hop, hop) complex Hermitian."""
    theta = np.asarray(theta, dtype=np.float64)
    out = np.zeros((theta.size, *coefficients[0].shape), dtype=np.complex128)
    if not derivative:
        out += coefficients[0]
    for d, c in enumerate(coefficients[1:], start=1):
        phase = np.exp(1j * d * theta)[:, None, None]
        if derivative:
            out += 1j * d * (phase * c - np.conj(phase) * c.T)
        else:
            out += phase * c + np.conj(phase) * c.T
    return out


def eigvalsh(matrices: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of a symmetric / Hermitian matrix or batch, float64 LAPACK, on one thread.

    LAPACK through torch (MKL) with the intra-op thread count at 1 for the call: these matrices are small
    (hop x hop, frame x frame), and a multithreaded BLAS on a busy machine made the whole bound 30 times slower.
    The numbers are those of numpy.linalg.eigvalsh (the same LAPACK driver family, float64 throughout).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigvalsh(torch.from_numpy(np.ascontiguousarray(matrices))).numpy()
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------------
# The certified supremum over theta
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Supremum:
    bound: float
    lower: float
    theta: float
    derivative_bound: float
    curvature_bound: float
    evaluations: int
    tolerance_reached: bool


def _spectral_norm(matrix: np.ndarray) -> float:
    """||M||_2 as sqrt(lambda_max(M^T M)) on the smaller side: much cheaper than an SVD, as accurate at the top."""
    small = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
    return math.sqrt(max(float(eigvalsh(small)[-1]), 0.0))


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


@functools.lru_cache(maxsize=32)
def _certified_supremum(lm: LinearMap, tolerance: float) -> _Supremum:
    """sup_{theta in [0, pi]} sigma_max(H(theta)) to within ``tolerance``, proven (see the module docstring)."""
    blocks = polyphase_blocks(lm)
    qs = np.array(sorted(blocks), dtype=np.float64)
    norms = np.array([_spectral_norm(blocks[int(q)]) for q in qs])
    q0 = _weighted_median(qs, norms)  # H e^{-i q0 theta} has the same singular values and the smallest D
    derivative_bound = float(np.sum(np.abs(qs - q0) * norms))
    coefficients = _gram_coefficients(blocks)
    curvature_bound = float(sum(2.0 * d * d * _spectral_norm(c) for d, c in enumerate(coefficients) if d))

    # theta = 0 and pi first: for real G_q these are where DC / Nyquist patterns line up, often the maximum.
    ends = np.array([0.0, np.pi])
    values = _sigma_max(coefficients, ends)
    evaluations, budget = 2, _evaluation_budget(lm.hop_length)
    best, best_theta = float(values.max()), float(ends[values.argmax()])
    closed = -math.inf  # the largest upper bound of an interval closed so far
    edges = np.linspace(0.0, np.pi, INITIAL_INTERVALS + 1)
    lo, hi = edges[:-1], edges[1:]
    for level in range(MAX_LEVELS):
        centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        sigma = _sigma_max(coefficients, centre)
        evaluations += centre.size
        if sigma.max() > best:
            best, best_theta = float(sigma.max()), float(centre[sigma.argmax()])
        upper = sigma + half * derivative_bound
        open_ = upper > best + tolerance
        if open_.any():  # the second-order bound, only where the first-order one does not suffice
            second = _second_order_bound(coefficients, centre[open_], half[open_], curvature_bound)
            evaluations += 2 * int(open_.sum())
            upper[open_] = np.minimum(upper[open_], second)
            open_ = upper > best + tolerance
        # Refining an open interval costs 6 evaluations (2 halves x centre and 2 tangents). Past the budget, or
        # after MAX_LEVELS halvings, the open intervals are closed with the bounds they have: still proven, only
        # short of the tolerance (sigma nearly flat over a wide range, e.g. frames that do not overlap).
        last = level == MAX_LEVELS - 1 or evaluations + 6 * int(open_.sum()) > budget
        done = np.ones_like(open_) if last else ~open_
        if done.any():
            closed = max(closed, float(upper[done].max()))
        if last or not open_.any():
            break
        lo, hi = np.concatenate([lo[open_], centre[open_]]), np.concatenate([centre[open_], hi[open_]])
    bound = max(closed, best) * (1.0 + FP_SAFETY)
    return _Supremum(bound, best, best_theta, derivative_bound, curvature_bound, evaluations,
                     bound <= (best + tolerance) * (1.0 + FP_SAFETY))


def _evaluation_budget(hop: int) -> int:
    """How many hop x hop eigendecompositions the refinement may spend: O(hop^3) each, ~10 s of work at most
    (the Deep Speaker frontend needs 86 of its 4,882)."""
    return max(100, int(2e10 / hop ** 3))


def _chunks(count: int, hop: int):
    """Slices of at most ~64 MiB of complex hop x hop matrices."""
    size = max(1, min(_BATCH, (1 << 22) // (hop * hop)))
    return (slice(start, min(start + size, count)) for start in range(0, count, size))


def _sigma_max(coefficients: list[np.ndarray], theta: np.ndarray) -> np.ndarray:
    """sigma_max(H(theta)) = sqrt(lambda_max(T(theta))) for each theta."""
    out = np.empty(theta.size)
    for part in _chunks(theta.size, coefficients[0].shape[0]):
        out[part] = eigvalsh(_symbol_gram(coefficients, theta[part]))[:, -1]
    return np.sqrt(np.maximum(out, 0.0))


def _second_order_bound(coefficients: list[np.ndarray], centre: np.ndarray, half: np.ndarray,
                        curvature_bound: float) -> np.ndarray:
    """Upper bounds on sigma_max(H) over [centre - half, centre + half]: sqrt(max_{+-} lambda_max(T +- half T')
    + half^2 K2 / 2), by the convexity of s -> lambda_max(T(c) + s T'(c)) and Taylor's remainder."""
    out = np.empty(centre.size)
    for part in _chunks(centre.size, coefficients[0].shape[0]):
        gram = _symbol_gram(coefficients, centre[part])
        step = half[part][:, None, None] * _symbol_gram(coefficients, centre[part], derivative=True)
        out[part] = np.maximum(eigvalsh(gram + step)[:, -1], eigvalsh(gram - step)[:, -1])
    return np.sqrt(np.maximum(out + 0.5 * half ** 2 * curvature_bound, 0.0))


# ----------------------------------------------------------------------------------------------------------
# Closed form and the finite-length boundary term
# ----------------------------------------------------------------------------------------------------------
def closed_form_bound(lm: LinearMap) -> float:
    """(1 + |p|) sqrt(ceil(frame / hop) lambda_max(W^T W)), a proven bound for every length (see the module docs)."""
    w = rfft_rows(lm.frame_length, lm.nfft)
    lam = float(eigvalsh(w.T @ w)[-1])
    overlap = math.ceil(lm.frame_length / lm.hop_length)
    return (1.0 + abs(lm.preemphasis)) * math.sqrt(overlap * lam) * (1.0 + FP_SAFETY)


def _frame_rows(lm: LinearMap, start: int, window: int, num_samples: int, frame: int, truncate: bool) -> np.ndarray:
    """Pre-emphasized frame ``frame`` as a (frame_length, window) matrix acting on x[start : start + window].

    y[t] = x[t] - p x[t-1] with x = 0 outside [0, num_samples); ``truncate``: y[t] = 0 for t >= num_samples (the
    frontend's zero padding of the last frame) instead of y[num_samples] = -p x[num_samples - 1].
    """
    rows = np.zeros((lm.frame_length, window))
    t = lm.hop_length * frame + np.arange(lm.frame_length)
    keep = t < num_samples if truncate else t <= num_samples
    for shift, coefficient in ((0, 1.0), (1, -lm.preemphasis)):
        column = t - shift - start
        valid = keep & (t - shift >= 0) & (t - shift < num_samples) & (column >= 0) & (column < window)
        rows[np.nonzero(valid)[0], column[valid]] += coefficient
    return rows


@functools.lru_cache(maxsize=256)
def _boundary_excess(lm: LinearMap, num_samples: int) -> float:
    """e >= 0 with ||A_N||^2 <= L_inf^2 + e for N = ``num_samples`` (0 when no frame is zero-padded)."""
    n, hop, frame = num_samples, lm.hop_length, lm.frame_length
    frames = num_frames(n, frame, hop)
    interior = sum(1 for m in range(frames) if hop * m + frame <= n)
    crossing = [m for m in range(interior, frames) if hop * m < n]  # frames wholly past the signal are all zero
    if not crossing:
        return 0.0
    start = max(hop * interior - 1, 0)  # the samples that frames >= interior depend on
    window = n - start
    gram = rfft_rows(frame, lm.nfft)
    gram = gram.T @ gram
    delta = np.zeros((window, window))
    scale = 0.0
    for m in range(interior, n // hop + 1):  # infinite-length frames that see y[t], t <= n
        rows = _frame_rows(lm, start, window, n, m, truncate=False)
        term = rows.T @ gram @ rows
        delta += term
        scale += float(np.trace(term))
    for m in crossing:
        rows = _frame_rows(lm, start, window, n, m, truncate=True)
        term = rows.T @ gram @ rows
        delta -= term
        scale += float(np.trace(term))
    lam_min = float(eigvalsh(delta)[0])
    # eigvalsh and the Grams are accurate to ~n eps ||.||; FP_SAFETY * trace is far above that.
    return max(0.0, -lam_min + FP_SAFETY * max(scale, 1.0))


def _canonical_length(lm: LinearMap, num_samples: int) -> int:
    """A length with the same boundary term (it depends on N only through (N - frame) % hop once N >= frame)."""
    if num_samples < lm.frame_length:
        return num_samples
    return lm.frame_length + (num_samples - lm.frame_length) % lm.hop_length


# ----------------------------------------------------------------------------------------------------------
# The public entry point
# ----------------------------------------------------------------------------------------------------------
def bound_for(lm: LinearMap, num_samples: int | None = None, tolerance: float = DEFAULT_TOLERANCE) -> LipschitzBound:
    """The proven bound for a :class:`LinearMap` (see :func:`waveform_lipschitz_bound`)."""
    if not tolerance > 0:
        raise ValueError(f"tolerance={tolerance} must be positive")
    sup = _certified_supremum(lm, float(tolerance))
    excess = 0.0
    if num_samples is not None:
        if not _is_int(num_samples) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r} must be a positive integer")
        excess = _boundary_excess(lm, _canonical_length(lm, int(num_samples)))
    closed = closed_form_bound(lm)
    bound = min(math.sqrt(sup.bound ** 2 + excess) * (1.0 + FP_SAFETY) if excess else sup.bound, closed)
    return LipschitzBound(
        bound=bound, num_samples=None if num_samples is None else int(num_samples), lower=sup.lower,
        theta=sup.theta, sup_bound=sup.bound, boundary_excess=excess, closed_form=closed,
        derivative_bound=sup.derivative_bound, curvature_bound=sup.curvature_bound, tolerance=float(tolerance),
        tolerance_reached=sup.tolerance_reached, evaluations=sup.evaluations, method=METHOD,
        method_version=METHOD_VERSION, params=asdict(lm),
    )


def waveform_lipschitz_bound(
    frontend_cfg: Mapping[str, Any] | None, num_samples: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
) -> LipschitzBound | None:
    """A proven upper bound on the Lipschitz constant (L2 -> L2) of waveform -> magnitude spectrogram, or None.

    ``frontend_cfg`` holds DeepSpeakerFrontend arguments (missing ones take its defaults; None: all defaults).
    None is returned, meaning *no proven bound, so no waveform guarantee*, when the config has a key that is not a
    DeepSpeakerFrontend argument or values the derivation does not cover (:func:`linear_map_of`).
    With ``num_samples`` the bound holds for waveforms of that length (a boundary term covers a zero-padded last
    frame); without it, for the infinite-length map and every length with (N - frame_length) % hop == 0.
    About 69.0791 for the Deep Speaker frontend (25,840 samples: no padding, so the same value). Computed once per
    linear map (lru_cache), in about a second.
    """
    lm = linear_map_of(frontend_cfg)
    return None if lm is None else bound_for(lm, num_samples, tolerance)
