"""The proven Lipschitz bound of waveform -> magnitude spectrogram against the frontend's own linear map."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from audiocert.frontend import DeepSpeakerFrontend, num_frames, samples_for_frames
from audiocert.lipschitz import (
    FP_SAFETY,
    LinearMap,
    bound_for,
    closed_form_bound,
    linear_map_of,
    polyphase_symbol,
    waveform_lipschitz_bound,
)
from audiocert.lipschitz_estimate import lipschitz_power_iteration, stft_linear

SEED_CROP = 25840  # 160 frames, no zero padding


@pytest.fixture
def one_thread():
    """Small dense linear algebra runs fastest on one thread, and is not slowed down by a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dense_norm(frontend: DeepSpeakerFrontend, num_samples: int) -> float:
    """||A_N||_2 of the frontend's own linear map, from its explicitly built matrix (one column per sample)."""
    columns = stft_linear(frontend, torch.eye(num_samples, dtype=torch.float64))  # row i: A e_i
    matrix = torch.view_as_real(columns).reshape(num_samples, -1)
    return math.sqrt(float(torch.linalg.eigvalsh(matrix @ matrix.T)[-1]))


def test_deep_speaker_bound_is_tight_and_fast(one_thread):
    from audiocert import lipschitz

    lipschitz._certified_supremum.cache_clear()
    start = time.perf_counter()
    bound = waveform_lipschitz_bound(None)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"{elapsed:.1f} s"  # about 0.3 s on an idle machine
    assert bound.tolerance_reached and bound.tolerance == 1e-6
    assert bound.lower <= bound.bound <= bound.lower + 2e-6
    assert bound.bound == pytest.approx(69.07908, abs=1e-5) and bound.theta == 0.0
    assert bound.derivative_bound > 0 and bound.boundary_excess == 0.0 and bound.num_samples is None
    # The same for the conf file's values (ignored keys included) and for the seed crop length (no padding).
    from conftest import REPO
    from omegaconf import OmegaConf

    conf = OmegaConf.load(REPO / "conf" / "frontend" / "deepspeaker.yaml")
    assert waveform_lipschitz_bound(conf).bound == bound.bound
    assert waveform_lipschitz_bound(dict(conf), SEED_CROP).bound == bound.bound
    start = time.perf_counter()
    assert waveform_lipschitz_bound(None).bound == bound.bound
    assert time.perf_counter() - start < 1.0  # cached (lru_cache per linear map)


def test_power_iteration_of_the_seed_crop_lies_below_the_bound(one_thread):
    """(a) The finite map's norm (power iteration: from below) is under the bound, by its finite-length gap."""
    lower = lipschitz_power_iteration(DeepSpeakerFrontend(), SEED_CROP)
    assert lower["converged"]
    bound = waveform_lipschitz_bound(None, SEED_CROP)
    # 160 frames lose ~ c (pi / 160)^2 ~ 3e-3 against the infinite-length supremum; the bound keeps only 1e-6.
    assert lower["lipschitz"] <= bound.bound <= lower["lipschitz"] + 5e-3
    assert lower["lipschitz"] == pytest.approx(69.0759, abs=2e-4)


def test_a_long_witness_waveform_comes_within_1e_4_of_the_bound(one_thread):
    """The top singular vector of H(theta*) under a slow envelope: ||magspec(x)|| / ||x|| approaches the bound."""
    bound = waveform_lipschitz_bound(None)
    lm = linear_map_of(None)
    _, _, vh = np.linalg.svd(polyphase_symbol(lm, bound.theta))
    assert bound.theta == 0.0  # H(0) is real: so is its top right singular vector
    v = vh[0].real
    frames = 1600
    n = samples_for_frames(frames)
    blocks = math.ceil(n / lm.hop_length)
    envelope = np.sin(np.pi * (np.arange(blocks) + 0.5) / blocks)
    x = (envelope[:, None] * v[None, :]).reshape(-1)[:n]
    frontend = DeepSpeakerFrontend()
    magspec = frontend.to_stage(torch.tensor(x, dtype=torch.float64), "magspec")
    ratio = float(magspec.norm()) / float(np.linalg.norm(x))  # ||f(x) - f(0)|| / ||x - 0||, f(0) = 0
    assert bound.bound - 1e-4 <= ratio <= bound.bound


@pytest.mark.parametrize("exact_eigenvalues", [False, True], ids=["eigvalsh", "exact"])
def test_closed_form_of_the_deep_speaker_frontend(exact_eigenvalues, monkeypatch):
    """(1 + |p|) sqrt(ceil(frame / hop) lambda_max(W^T W)) (1 + FP_SAFETY): FP_SAFETY (1e-9) covers eigvalsh's
    ~1e-13 relative error, so the result lies above the exact value by less than twice that factor, whatever the
    last bits of eigvalsh. ``exact``: an eigvalsh that returns the exact eigenvalues (all integers here), as some
    machines' LAPACK does; there the closed form exceeds the exact value by the factor alone."""
    from audiocert import lipschitz

    if exact_eigenvalues:
        monkeypatch.setattr(lipschitz, "eigvalsh", lambda matrix: np.round(np.linalg.eigvalsh(matrix), 6))
    # even nfft >= frame: W^T W = 256 I + (1 1^T + a a^T) / 2, lambda_max = 256 + 200 = 456
    exact = 1.97 * math.sqrt(3 * 456)
    assert exact < closed_form_bound(linear_map_of(None)) <= exact * (1 + 2 * FP_SAFETY)


def test_bound_is_below_the_closed_form():
    """(b) The polyphase supremum beats (1 + |p|) sqrt(ceil(frame / hop) lambda_max(W^T W))."""
    bound = waveform_lipschitz_bound(None)
    exact = 1.97 * math.sqrt(3 * 456)  # the closed form above, as the bound reports it
    assert exact < bound.closed_form <= exact * (1 + 2 * FP_SAFETY)
    assert bound.sup_bound < bound.closed_form and bound.bound == bound.sup_bound
    for cfg in ({"preemphasis": 0.0}, {"frame_length": 256, "hop_length": 100, "nfft": 256},
                {"frame_length": 512, "hop_length": 128, "nfft": 512}, {"preemphasis": -0.5, "nfft": 1024}):
        b = waveform_lipschitz_bound(cfg)
        # a value attained is never above the closed form; the certified sup only by its tolerance (the two
        # coincide where frame = nfft and hop divides it: all frames then contribute alike)
        assert b.lower <= b.closed_form and b.sup_bound <= b.closed_form + b.tolerance + 1e-8 * b.closed_form
        assert b.bound <= b.closed_form


def random_linear_maps(count: int, seed: int) -> list[LinearMap]:
    rng = np.random.default_rng(seed)
    maps = [LinearMap(12, 5, 16, float(rng.uniform(-1.0, 1.0))) for _ in range(count)]
    for _ in range(count):  # other shapes: hop > frame, hop = 1, odd nfft, |p| > 1
        frame = int(rng.integers(2, 14))
        maps.append(LinearMap(frame, int(rng.integers(1, frame + 3)), int(rng.integers(frame, 21)),
                              float(rng.uniform(-1.2, 1.2))))
    return maps


@pytest.mark.parametrize("lm", random_linear_maps(2, seed=7), ids=str)
def test_bound_covers_the_dense_matrix_at_every_length(lm, one_thread):
    """(c) For small frontends the bound is >= the exact norm of the explicitly built matrix, at every length
    (aligned, zero-padded last frame, shorter than a frame), and tight for a long aligned length."""
    frontend = DeepSpeakerFrontend(**{k: getattr(lm, k) for k in ("frame_length", "hop_length", "nfft",
                                                                    "preemphasis")})
    general = bound_for(lm)
    for n in range(1, 3 * lm.frame_length + 3 * lm.hop_length):
        exact = dense_norm(frontend, n)
        specific = bound_for(lm, n)
        assert exact <= specific.bound, (lm, n)
        padded = (n - lm.frame_length) % lm.hop_length != 0 or n < lm.frame_length
        if not padded:  # no zero padding: the finite map is a restriction of the infinite one
            assert specific.boundary_excess == 0.0 and specific.bound == general.bound
            assert exact <= general.sup_bound
    long = samples_for_frames(300, lm.frame_length, lm.hop_length)
    exact = dense_norm(frontend, long)
    assert exact <= general.bound <= exact * (1 + 1e-3) + 1e-6
    if general.tolerance_reached:
        assert general.sup_bound - general.lower <= general.tolerance + 1e-8 * general.lower


def test_boundary_term_depends_on_the_padding_only():
    lm = linear_map_of(None)
    for n in (SEED_CROP, 400, 560, 16000 * 2 + 400 - 160 * 2):
        assert (n - 400) % 160 == 0 and bound_for(lm, n).boundary_excess == 0.0
    excess = [bound_for(lm, n).boundary_excess for n in (4000, 4000 + 160 * 7, 25841, 25999, 300)]
    assert all(0.0 < e < 1.0 for e in excess)  # a bound of L raised by < 0.01 for a zero-padded last frame
    assert excess[0] == excess[1]  # the same padding, the same term
    assert bound_for(lm, 4000).bound < 69.082
    assert num_frames(4000) == 24  # (the report tests' crop: its last frame is zero-padded)


def test_frontends_the_derivation_does_not_cover_get_none():
    """(d) Unknown keys or values outside the derivation: no proven bound."""
    assert waveform_lipschitz_bound({"window": "hann"}) is None
    assert waveform_lipschitz_bound({"frame_length": 400, "center": True}) is None
    assert waveform_lipschitz_bound({"frame_length": 400.5}) is None
    assert waveform_lipschitz_bound({"frame_length": True}) is None
    assert waveform_lipschitz_bound({"frame_length": 600}) is None  # exceeds nfft 512
    assert waveform_lipschitz_bound({"hop_length": 0}) is None
    assert waveform_lipschitz_bound({"preemphasis": float("nan")}) is None
    assert waveform_lipschitz_bound({"preemphasis": "0.97"}) is None
    assert waveform_lipschitz_bound(["frame_length"]) is None
    # keys that act after |rfft| do not change the bound
    same = waveform_lipschitz_bound({"sample_rate": 8000, "num_filters": 40, "low_hz": 300.0, "high_hz": None})
    assert same is not None and same.bound == waveform_lipschitz_bound({}).bound
    with pytest.raises(ValueError, match="num_samples"):
        waveform_lipschitz_bound(None, 0)


def test_closed_form_matches_its_formula_for_odd_nfft():
    lm = LinearMap(7, 3, 9, 0.5)
    w = np.fft.rfft(np.eye(7), n=9, axis=0)  # column k: rfft of e_k
    stacked = np.vstack([w.real, w.imag])
    expected = 1.5 * math.sqrt(3 * np.linalg.eigvalsh(stacked.T @ stacked)[-1])
    assert expected < closed_form_bound(lm) <= expected * (1 + 2 * FP_SAFETY)  # raised by FP_SAFETY, as above


@pytest.mark.parametrize("params", [{}, {"preemphasis": 0.0}, {"frame_length": 256, "hop_length": 100,
                                                                  "nfft": 256}])
def test_lipschitz_power_iteration_matches_svd(params, one_thread):
    frontend = DeepSpeakerFrontend(**params)
    num_samples = 1000
    expected = dense_norm(frontend, num_samples)
    result = lipschitz_power_iteration(frontend, num_samples, tol=1e-6)
    assert result["converged"] and result["lipschitz"] == pytest.approx(expected, rel=1e-5)
    assert result["lipschitz"] <= waveform_lipschitz_bound(params, num_samples).bound
