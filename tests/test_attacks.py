"""Attacks on the smoothed and the base classifier (audiocert.attacks): strength where the truth is known,
determinism, the ball, gradient health through the frontend, bad settings, and a waveform attack on a ResCNN."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import binom, binomtest, norm
from torch import nn

from audiocert import DeepSpeakerFrontend, ResCNN, Smooth, StagedClassifier
from audiocert.attacks import (
    AttackSettings,
    _project,
    attack_inputs,
    attack_point,
    attack_stream_samples,
    attacked_stage_inputs,
    base_pgd,
    base_predict,
    check_attack_settings,
    check_space,
    predict_attacked,
    robust_accuracy,
    smoothed_pgd,
    waveform_eps_grid,
)
from audiocert.sampler import MAX_BLOCKS, fill_noise


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are small: on a busy 2-core runner a second intra-op thread mostly spins (10x the CPU time
    measured here), so the tests run single-threaded and restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------
# (a) a linear binary classifier: the smoothed boundary is the base one, so the truth is known
# ---------------------------------------------------------------------------------------------------------
D, SIGMA, SCALE, BIAS = 64, 0.1, 4.0, 0.1
EPS = (0.3, 0.9)
GAP = 1.5 * SIGMA  # every |margin - eps| >= GAP
N_PREDICT, ALPHA = 200, 0.001


class Linear(nn.Module):
    """logits (-(w.x + b), w.x + b) * SCALE, ||w|| = 1: f and g (isotropic noise) share the boundary w.x + b = 0,
    and the margin of x for its label is its distance to it."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = (z @ self.w + BIAS) * SCALE
        return torch.stack([-s, s], dim=-1)


def linear_points() -> tuple[Linear, torch.Tensor, np.ndarray, np.ndarray]:
    """40 points, labels alternating, margins in [0.02, 1.5] outside (eps - GAP, eps + GAP) for each eps."""
    generator = torch.Generator().manual_seed(11)
    w = torch.randn(D, generator=generator, dtype=torch.float64)
    w /= w.norm()
    candidates = np.linspace(0.02, 1.5, 400)
    allowed = candidates[np.all(np.abs(candidates[:, None] - np.array(EPS)[None]) >= GAP, axis=1)]
    margins = allowed[np.linspace(0, allowed.size - 1, 40).round().astype(int)]
    labels = np.arange(40) % 2
    points = []
    for margin, label in zip(margins, labels, strict=True):
        v = torch.randn(D, generator=generator, dtype=torch.float64)
        v -= (v @ w) * w  # a random point on the boundary's parallel, then the signed margin along w
        signed = margin if label == 1 else -margin
        points.append(v + (signed - BIAS) * w)
    return Linear(w.float()).eval(), torch.stack(points).float(), margins, labels


def test_predict_error_rate_of_the_linear_test():
    """The error rate the linear test states: PREDICT(200, 0.001) decides wrongly (abstains or names the other
    class) at |margin after attack| >= 1.5 sigma with probability < 1e-37 per decision."""
    k = min(c for c in range(N_PREDICT // 2, N_PREDICT + 1) if binomtest(c, N_PREDICT, 0.5).pvalue <= ALPHA)
    p = norm.cdf(GAP / SIGMA)
    assert binom.cdf(k - 1, N_PREDICT, p) < 1e-37  # a robust point not PREDICTed as y
    assert binom.sf(k - 1, N_PREDICT, 1 - p) < 1e-37  # a broken point PREDICTed as y


def test_smoothed_attack_reaches_the_true_robust_accuracy():
    """g's robust accuracy at eps is the fraction with margin > eps; the attack must reach it and never beat it.

    The attack moves each point by eps towards the boundary (exact for a linear f: every noisy copy's gradient is
    along w), so after it the margin is margin - eps, at least GAP = 1.5 sigma from 0 either way. PREDICT then errs
    with probability < 1e-37 per decision (test above), < 1e-35 over the 80 decisions: the counts must match exactly.
    """
    classifier, points, margins, labels = linear_points()
    smooth = Smooth(classifier, 2, SIGMA, seed=5)
    predictions, base_classes = [], []
    for index, (x, y) in enumerate(zip(points, labels, strict=True)):
        result = smoothed_pgd(classifier, x, int(y), EPS, sigma=SIGMA, steps=8, samples=16, restarts=2, seed=5,
                              example=index)
        assert np.all(result.l2 <= np.array(EPS) * (1 + 1e-12))
        z = attacked_stage_inputs(x, result.delta)
        moved = (z.double() @ classifier.w.double() + BIAS).numpy() * (1 if y == 1 else -1)
        np.testing.assert_allclose(moved, margins[index] - np.array(EPS), atol=1e-5)
        predictions.append(predict_attacked(smooth, z, N_PREDICT, ALPHA, 256, index))
        base = base_pgd(classifier, x, int(y), EPS, steps=8, restarts=1)
        z_base = attacked_stage_inputs(x, base.delta)
        moved_base = (z_base.double() @ classifier.w.double() + BIAS).numpy() * (1 if y == 1 else -1)
        np.testing.assert_allclose(moved_base, margins[index] - np.array(EPS), atol=1e-5)  # f: exactly the margin
        base_classes.append(base_predict(classifier, z_base))
    predictions, base_classes = np.array(predictions), np.array(base_classes)
    truth = margins[:, None] > np.array(EPS)[None]
    assert 0 < truth[:, 0].sum() < len(margins) and 0 < truth[:, 1].sum() < len(margins)  # both outcomes occur
    np.testing.assert_array_equal(robust_accuracy(predictions, labels), truth.mean(axis=0))
    np.testing.assert_array_equal(predictions == labels[:, None], truth)  # point by point: never beyond the margin
    np.testing.assert_array_equal(base_classes == labels[:, None], truth)


# ---------------------------------------------------------------------------------------------------------
# A small nonlinear classifier for the noise-dependent properties
# ---------------------------------------------------------------------------------------------------------
def mlp(d: int = 16, classes: int = 3) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, classes)).eval()


def test_same_call_same_deltas_other_example_other_noise():
    classifier = mlp()
    x = torch.randn(16, generator=torch.Generator().manual_seed(0))
    kwargs = dict(sigma=0.5, steps=4, samples=8, restarts=3, seed=9)
    first = smoothed_pgd(classifier, x, 0, (0.5, 1.0), example=4, **kwargs)
    again = smoothed_pgd(classifier, x, 0, (0.5, 1.0), example=4, **kwargs)
    other = smoothed_pgd(classifier, x, 0, (0.5, 1.0), example=5, **kwargs)
    assert torch.equal(first.delta, again.delta) and np.array_equal(first.loss, again.loss)
    assert not torch.allclose(first.delta, other.delta)


def test_first_step_uses_the_documented_noise_samples():
    """One step, one restart: delta = eps * grad / ||grad|| of the loss on samples m .. 2m - 1 of the attack
    stream (index (1 + r T + t) m + i with r = t = 0); 2 eps / T > eps, so the step ends on the sphere."""
    classifier, m, sigma, eps, y = mlp(), 6, 0.4, 0.7, 2
    x = torch.randn(16, generator=torch.Generator().manual_seed(1))
    result = smoothed_pgd(classifier, x, y, eps, sigma=sigma, steps=1, samples=m, restarts=1, seed=3, example=7)
    noise = fill_noise(torch.empty(m, 16), 3, 7, "attack", m, m) * sigma
    delta = torch.zeros(16, requires_grad=True)
    loss = -torch.log(torch.softmax(classifier(x + delta + noise), dim=-1)[:, y].mean())
    (grad,) = torch.autograd.grad(loss, delta)
    torch.testing.assert_close(result.delta[0], eps * grad / grad.norm(), rtol=1e-5, atol=1e-6)
    assert attack_stream_samples(steps=1, samples=m, restarts=1) == 2 * m


@pytest.mark.parametrize("batch_size", [5, 13, 24])
def test_chunking_does_not_change_the_attack(batch_size):
    """The loss of a mean is combined exactly across chunks (log space): batch 5 (parts of an eps, some chunks
    straddling two), 13 (rounded down to 12: one whole eps per chunk), 24 (two eps per chunk) against one batch
    of all E x m = 36 copies."""
    classifier = mlp()
    x = torch.randn(16, generator=torch.Generator().manual_seed(2))
    kwargs = dict(sigma=0.5, steps=3, samples=12, restarts=1, seed=1, example=0)
    whole = smoothed_pgd(classifier, x, 1, (0.3, 0.6, 1.2), batch_size=1000, **kwargs)
    chunked = smoothed_pgd(classifier, x, 1, (0.3, 0.6, 1.2), batch_size=batch_size, **kwargs)
    torch.testing.assert_close(chunked.delta, whole.delta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(chunked.loss, whole.loss, rtol=1e-5)


def test_restarts_skip_flipped_eps_and_count_passes():
    classifier = mlp()
    x = torch.randn(16, generator=torch.Generator().manual_seed(4))
    y = int(classifier(x[None]).argmax())
    result = smoothed_pgd(classifier, x, y, (0.01, 20.0), sigma=0.1, steps=5, samples=4, restarts=3, seed=0,
                          example=0)
    assert result.flipped.tolist() == [False, True]  # a tiny budget cannot flip it; a huge one does at once
    assert result.restarts.tolist() == [3, 1]
    assert result.passes.tolist() == [3 * 5 * 4, 1 * 5 * 4] and result.eval_passes.tolist() == [12, 4]


def test_bf16_autocast_keeps_delta_float32():
    classifier = mlp()
    x = torch.randn(16, generator=torch.Generator().manual_seed(5))
    result = smoothed_pgd(classifier, x, 0, 0.5, sigma=0.5, steps=2, samples=4, restarts=1, seed=0, example=0,
                          autocast_bf16=True)
    assert result.delta.dtype == torch.float32 and np.all(result.l2 <= 0.5 * (1 + 1e-12))


# ---------------------------------------------------------------------------------------------------------
# (c) the ball
# ---------------------------------------------------------------------------------------------------------
def test_projection_never_leaves_the_ball():
    """_project promises an exact float norm <= eps; the float64 norm of a float32 row of d entries is exact to
    a relative d * 2^-53 (< 1e-11 here), hence the 1e-12-sized tolerance at d = 41,120 (a magspec crop)."""
    generator = torch.Generator().manual_seed(0)
    for d in (3, 64, 41_120):
        delta = torch.randn(200, d, generator=generator) * torch.logspace(-3, 3, 200)[:, None]
        eps = torch.logspace(-4, 2, 200, dtype=torch.float64)
        # Every third row lies inside its ball (twice its norm as the budget), one on its surface.
        own = torch.linalg.vector_norm(delta.double(), dim=1)
        eps[::3] = 2 * own[::3]
        eps[1] = own[1]
        projected = _project(delta.clone(), eps)
        norms = torch.linalg.vector_norm(projected.double(), dim=1)
        assert torch.all(norms <= eps * (1 + d * 2.0**-53))
        inside = own <= eps
        assert inside.sum() >= 67 and not inside.all()
        assert torch.equal(projected[inside], delta[inside])  # rows inside the ball are untouched


# ---------------------------------------------------------------------------------------------------------
# (d) gradients through the frontend
# ---------------------------------------------------------------------------------------------------------
def tiny_rescnn(classes: int = 4) -> ResCNN:
    torch.manual_seed(0)
    return ResCNN(classes, widths=[4, 8, 8, 16], embedding_dim=16).eval()


def test_silent_frames_through_mfbe_give_finite_gradients():
    """Waveform space at mfbe: the first 8,000 samples are exactly silent. |rfft| at 0 and the float-eps energies
    give gradient 0 on wholly silent frames, so one step from delta = 0 leaves every sample before the first frame
    that reaches the signal (frame 48 starts at 7,680; pre-emphasis adds sample 7,679) alone. The per-frame
    normalisation of the near-silent frames that later steps and random restarts create gives no inf/NaN; every
    delta stays finite and in the ball."""
    frontend, model = DeepSpeakerFrontend(), tiny_rescnn()
    staged = StagedClassifier(frontend, "mfbe", model).eval()
    waveform = torch.zeros(25_840)
    waveform[8_000:] = 0.1 * torch.randn(17_840, generator=torch.Generator().manual_seed(0))
    x, to_stage = attack_inputs(staged, waveform, "waveform")
    kwargs = dict(sigma=0.25, samples=2, seed=0, example=0, to_stage=to_stage)
    first = smoothed_pgd(staged, x, 1, 0.01, steps=1, restarts=1, **kwargs)
    assert first.nonfinite.tolist() == [0] and first.zero_steps.tolist() == [0]
    assert torch.all(first.delta[0, :7_679] == 0) and torch.all(first.delta[0, 7_679:7_700] != 0)
    restarted = smoothed_pgd(staged, x, 1, 0.01, steps=3, restarts=2, **kwargs)
    assert restarted.nonfinite.tolist() == [0] and restarted.zero_steps.tolist() == [0]
    assert torch.isfinite(restarted.delta).all() and np.all(restarted.l2 <= 0.01 * (1 + 1e-12))
    assert restarted.delta[0, :7_679].abs().max() > 0  # later steps reach into the silence


def test_nonfinite_gradients_are_counted_and_zeroed():
    """A stage map with an infinite derivative at 0 (sqrt |w|): the NaN entries it gives at delta = 0 are counted
    and replaced by 0, so the step stays defined and the delta finite."""
    classifier = mlp()
    x = torch.randn(16, generator=torch.Generator().manual_seed(6))
    x[:5] = 0.0
    result = base_pgd(classifier, x, 0, 0.5, steps=3, restarts=1, to_stage=lambda w: w.abs().sqrt())
    assert result.nonfinite[0] >= 5  # the 5 zero entries at the first step
    assert torch.isfinite(result.delta).all() and np.all(result.l2 <= 0.5 * (1 + 1e-12))


# ---------------------------------------------------------------------------------------------------------
# (e) bad settings name the field
# ---------------------------------------------------------------------------------------------------------
GOOD = dict(eps=[0.1, 0.5], steps=4, samples=8, restarts=2, space="stage", n=100, alpha=0.001, batch_size=64)


@pytest.mark.parametrize(("change", "field"), [
    ({"eps": 0.0}, "attack.eps[0]"), ({"eps": [0.1, -1]}, "attack.eps[1]"), ({"eps": [math.inf]}, "attack.eps[0]"),
    ({"eps": [math.nan]}, "attack.eps[0]"), ({"eps": []}, "attack.eps"), ({"eps": [0.1, 0.1]}, "attack.eps"),
    ({"steps": 0}, "attack.steps"), ({"steps": 2.5}, "attack.steps"), ({"samples": 0}, "attack.samples"),
    ({"restarts": 0}, "attack.restarts"), ({"space": "mel"}, "attack.space"), ({"alpha": 0.7}, "attack.alpha"),
    ({"n": 0}, "attack.n"), ({"batch_size": 0}, "attack.batch_size"), ({"step_factor": math.inf},
                                                                        "attack.step_factor"),
    ({"step_factor": 0}, "attack.step_factor"), ({"bf16": "yes"}, "attack.bf16"), ({"steps": None}, "attack.steps"),
    ({"restarts": MAX_BLOCKS, "steps": 2}, "attack.restarts"),
])
def test_bad_settings_name_the_field(change, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        check_attack_settings({**GOOD, **change})


def test_good_settings_and_spaces():
    settings = check_attack_settings({**GOOD, "extra": "left to the caller"})
    assert settings == AttackSettings(eps=(0.1, 0.5), steps=4, samples=8, restarts=2, space="stage", n=100,
                                      alpha=0.001, batch_size=64)
    assert check_attack_settings(OmegaConf.create({**GOOD, "base": False})) == replace(settings, base=False)
    assert check_space("waveform", "mfbe", ("waveform", "magspec", "mfbe")) == "waveform"
    with pytest.raises(ValueError, match="attack.space='waveform' cannot reach smoothing stage 'mfbe'"):
        check_space("waveform", "mfbe", ("waveform", "magspec"))
    with pytest.raises(ValueError, match="unknown smoothing stage"):
        check_space("stage", "cepstrum")
    np.testing.assert_allclose(waveform_eps_grid([0.69, 1.38], 69.0), [0.01, 0.02])


def test_bad_arguments_of_the_attacks():
    classifier, x = mlp(), torch.zeros(16)
    kwargs = dict(sigma=0.5, steps=2, samples=2, restarts=1, seed=0, example=0)
    for change, field in (({"steps": 0}, "attack.steps"), ({"samples": 0}, "attack.samples"),
                          ({"restarts": 0}, "attack.restarts"), ({"sigma": -1.0}, "smoothing.sigma")):
        with pytest.raises(ValueError, match=field):
            smoothed_pgd(classifier, x, 0, 0.5, **{**kwargs, **change})
    with pytest.raises(ValueError, match=r"attack.eps\[0\]"):
        smoothed_pgd(classifier, x, 0, -0.5, **kwargs)
    with pytest.raises(ValueError, match=r"attack.eps\[0\]"):
        base_pgd(classifier, x, 0, 0.0, steps=2, restarts=1)
    with pytest.raises(ValueError, match="label y=5"):
        base_pgd(classifier, x, 5, 0.5, steps=2, restarts=1)
    with pytest.raises(ValueError, match="training mode"):
        base_pgd(classifier.train(), x, 0, 0.5, steps=2, restarts=1)
    staged = StagedClassifier(DeepSpeakerFrontend(), "magspec", tiny_rescnn()).eval()
    smooth = Smooth(staged, 4, 0.25)
    settings = check_attack_settings({**GOOD, "space": "waveform"})
    with pytest.raises(ValueError, match="attack.space='waveform' needs"):
        attack_point(smooth, torch.zeros(25_840), 0, settings, example=0)


def test_robust_accuracy_and_smallest_success():
    assert robust_accuracy([[1, -1, 0], [2, 2, -1]], [1, 2]).tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="points, eps"):
        robust_accuracy([1, 2], [1, 2])


# ---------------------------------------------------------------------------------------------------------
# (f) a waveform attack on a ResCNN through the frontend at magspec
# ---------------------------------------------------------------------------------------------------------
def test_waveform_attack_on_rescnn_at_magspec():
    staged = StagedClassifier(DeepSpeakerFrontend(), "magspec", tiny_rescnn()).eval()
    smooth = Smooth(staged, 4, 0.25, seed=2)
    t = torch.arange(25_840) / 16_000
    waveform = 0.3 * torch.sin(2 * torch.pi * 180 * t) + 0.01 * torch.randn(25_840, generator=torch.Generator()
                                                                              .manual_seed(0))
    x, to_stage = attack_inputs(staged, waveform, "waveform")
    y = int(staged(staged.clean(waveform[None])).argmax())
    settings = check_attack_settings({**GOOD, "space": "waveform", "eps": [0.005, 0.02], "steps": 2, "samples": 4,
                                      "restarts": 2, "n": 20, "batch_size": 16},
                                     stage="magspec", stages=staged.frontend.stages)
    point = attack_point(smooth, x, y, settings, example=3, to_stage=to_stage)
    assert point.smoothed.delta.shape == (2, 25_840) and point.base.delta.shape == (2, 25_840)
    for result in (point.smoothed, point.base):
        assert np.all(result.l2 <= np.array(settings.eps) * (1 + 1e-12)) and np.all(result.linf > 0)
        assert result.nonfinite.tolist() == [0, 0] and np.all(np.isfinite(result.loss))
    assert point.predict.shape == (2,) and set(point.predict.tolist()) <= {-1, 0, 1, 2, 3}
    assert point.predict_passes == 2 * 20 and np.all(point.smoothed.passes == point.smoothed.restarts * 2 * 4)
    record = point.to_record()
    assert record["eps"] == [0.005, 0.02] and len(record["smoothed"]["l2"]) == 2 and "base_class" in record
    assert json.loads(json.dumps(record)) == record  # a shard can write it as it is
    again = attack_point(smooth, x, y, settings, example=3, to_stage=to_stage)
    assert torch.equal(again.smoothed.delta, point.smoothed.delta) and np.array_equal(again.predict, point.predict)


def test_a_subnormal_gradient_gives_a_finite_full_step():
    """Saturated logits make the float32 gradient subnormal: a / ||grad|| overflows float32, and inf x 0 was NaN
    (the row became [inf, nan, nan, nan]). The step must be finite, of length a, along the gradient."""
    from audiocert.attacks.ball import _ascent_step

    delta, flat = _ascent_step(torch.zeros(1, 4), torch.tensor([[1e-41, 0.0, 0.0, 0.0]]), torch.tensor([1.0]),
                               2.5, 10)
    assert torch.isfinite(delta).all() and not flat.any()
    assert torch.equal(delta, torch.tensor([[0.25, 0.0, 0.0, 0.0]]))


def test_a_saturated_model_is_attacked_with_finite_perturbations():
    """The linear classifier with logits scaled by 1000, at a point whose logit gap is about 102 and with almost no
    noise: softmax saturates and the float32 gradient is subnormal (about e^-102). Every budget's perturbation must
    be finite and inside its ball (the old step made it NaN), and the budget beyond the margin reaches the boundary."""
    classifier, points, margins, labels = linear_points()

    class Saturated(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return classifier(z) * 1000.0

    k = 1  # label 1: the margin is w.x + b
    target = 102.0 / (2 * 1000.0 * SCALE)  # logit gap 2 * 1000 * SCALE * margin = 102
    x = points[k] + (target - float(margins[k])) * classifier.w
    result = smoothed_pgd(Saturated().eval(), x, int(labels[k]), (0.25 * target, 4 * target), sigma=1e-4, steps=8,
                          samples=4, restarts=1, seed=5, example=k)
    assert torch.isfinite(result.delta).all(), result.delta
    assert np.all(result.l2 <= np.array([0.25, 4.0]) * target * (1 + 1e-12)) and result.l2[1] > target


# ---------------------------------------------------------------------------------------------------------
# (g) an attacked input that is not finite is never judged (issue 21, item 4)
# ---------------------------------------------------------------------------------------------------------
def test_judges_never_judge_a_row_that_is_not_finite():
    """PREDICT of g and f's argmax skip a row holding inf or NaN: class UNJUDGED (-2), no sample drawn for it."""
    from audiocert.attacks import UNJUDGED, judge_attacked

    classifier, points, margins, labels = linear_points()
    smooth = Smooth(classifier, 2, SIGMA, seed=5)
    k = int(np.argmax(margins))  # 1.5 = 15 sigma from the boundary: PREDICT names its label
    z = torch.stack([points[k], points[k], points[k]]).clone()
    z[1, 3], z[2, 0] = math.inf, math.nan
    classes, drawn = judge_attacked(smooth, z, N_PREDICT, ALPHA, 256, k)
    assert classes.tolist() == [int(labels[k]), UNJUDGED, UNJUDGED] and drawn.tolist() == [N_PREDICT, 0, 0]
    assert base_predict(classifier, z).tolist() == [int(labels[k]), UNJUDGED, UNJUDGED]


def test_an_attacked_input_that_overflows_is_counted_not_judged():
    """A stage map that overflows beyond distance 0.5 from x (as a frontend could), before a classifier that clamps
    its input (so its loss stays finite and the attack keeps that delta): the budget 0.9 attack leaves the region
    at its second step, so its attacked input is inf. That budget is UNJUDGED for g and f, its perturbation stays
    finite, the record is one a shard can write (strict JSON), and the reducer's outcomes call it unjudged: not
    flipped, inside the upper bound."""
    from audiocert.attacks import UNJUDGED
    from audiocert.kinds.attack.reduce import not_broken, outcomes

    linear, points, margins, labels = linear_points()

    class Clamped(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return linear(z.clamp(-10.0, 10.0))

    classifier = Clamped().eval()
    smooth = Smooth(classifier, 2, SIGMA, seed=5)
    k = int(np.argmax(margins))  # margin 1.5: still 1.4 = 14 sigma after the budget 0.1
    x, y = points[k], int(labels[k])

    def overflowing(w: torch.Tensor) -> torch.Tensor:
        far = (w - x).norm(dim=1, keepdim=True) > 0.5
        return torch.where(far, torch.full_like(w, math.inf), w)

    settings = check_attack_settings({**GOOD, "eps": [0.1, 0.9], "space": "waveform", "steps": 4, "samples": 4,
                                      "restarts": 1, "n": N_PREDICT})
    point = attack_point(smooth, x, y, settings, example=k, to_stage=overflowing)
    assert point.predict[0] == y and point.predict[1] == UNJUDGED
    assert point.base_class[1] == UNJUDGED and point.smoothed.zero_steps[1] > 0  # no gradient out there
    assert torch.isfinite(point.smoothed.delta).all() and point.smoothed.l2[1] <= 0.9 * (1 + 1e-12)
    record = point.to_record()
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    g = outcomes(point.predict[None], np.array([y]))
    assert g["unjudged"].tolist() == [[False, True]] and not g["flipped"].any()
    assert not_broken(g).tolist() == [[True, True]]
