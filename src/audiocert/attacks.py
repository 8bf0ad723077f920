"""Attacks on the smoothed classifier g and on the base classifier f: what a certificate's radius leaves open.

Certification lower-bounds robustness; an attack upper-bounds it. This module is the algorithmic core: per test
point, a batched L2 PGD on g (SmoothAdv, Salman et al. 2019) and on f (plain PGD), and the judgement of the
attacked input by the smoothed classifier's PREDICT. Planning, sharding and reporting live above it.

The attack on g (``smoothed_pgd``). For the label y and a budget eps, maximise over ||delta||_2 <= eps

    L(delta) = -log( (1/m) sum_{i<m} softmax(f(s(x + delta) + sigma * e_i))_y ),   e_i ~ N(0, I),

the SmoothAdv surrogate of -log P(f(s(x + delta) + noise) = y) (soft labels: a gradient exists even where every
vote is y). s is the map into the smoothing stage: the identity when delta lives at the stage (space
``"stage"``, the space of the certificate), ``frontend.to_stage(., stage)`` when delta edits the waveform (space
``"waveform"``, the realistic threat). The noise always enters at the stage, so the attacked classifier is g.
Each step is a normalised-gradient L2 step delta <- Proj_eps(delta + a * grad L / ||grad L||), a =
``step_factor`` * eps / T (2 eps / T by default: T steps can cross the ball), followed by projection onto the ball.
Several eps of one point are independent problems solved together: delta has shape (E, *x.shape), and one
forward/backward pass covers the E x m noisy copies (chunked by ``batch_size``; the chunks' gradients combine
exactly, see ``_smoothed_objective``). The noise draws are common to all eps (common random numbers).

Noise and randomness. All of it comes from the "attack" phase of the sampler's noise streams of (seed, example),
disjoint from certification's selection, estimation and prediction streams. Draw i (i < m) of step t (t < T) of
restart r, and draw i of the evaluation draws (shared by all restarts, never used for a gradient), are samples

    index(r, t, i) = (1 + r * T + t) * m + i,   index(evaluation, i) = i,

so a setting needs (1 + restarts * T) * m attack samples. With the default ``block_size = m`` the evaluation
draws and every (restart, step) are exactly one noise block each (no block is drawn in part).
Restart 0 starts at delta = 0; restart r >= 1 starts at a point drawn uniformly from the ball, from a generator
seeded with ``block_seed(seed, example, "attack", MAX_BLOCKS - r)``: the last blocks of the attack stream, which
the noise draws are refused to reach (``attack_stream_blocks``). One start direction per restart serves every
eps (scaled to each ball), so an eps's result does not depend on which other eps are attacked with it. So the
deltas are a function of (seed, example, x, y, settings, device type): a rerun of a shard gives the same deltas.

Restarts. After a restart's T steps its final delta is evaluated on the m evaluation draws: the surrogate loss,
and the m hard votes of f. Per eps, the first restart whose votes flip (some class other than y gets more votes
than y) is kept and later restarts skip that eps; otherwise the restart with the highest evaluation loss is
kept. Why: PREDICT on hard votes is the judge, so a restart whose cheap vote estimate already flips is a success
by the judge's own criterion, and further restarts cannot improve it but would cost restarts x T x m passes.
Among restarts that do not flip, the loss on draws no restart optimised on is an unbiased estimate of the
surrogate at each final delta (the loss on a restart's own draws is biased up by the optimisation), and the
draws are common to all restarts, so the comparison is not swamped by the noise of independent draws (on a
linear classifier the restart that went furthest across the boundary wins on every draw).

The judge (``predict_attacked``). PREDICT(n, alpha) of g on x + delta with the sampler's "prediction" stream of
the example (the same noise as the clean PREDICT of certification). The attack never sees that stream, so delta
is independent of the judge's noise and PREDICT keeps its guarantee: it returns a class other than g(x + delta)
with probability at most alpha. Abstain counts as not robust. Empirical robust accuracy at eps = fraction of
points whose PREDICT on the attacked input is the true label (``robust_accuracy``): an empirical upper bound (a
point counts as robust when this attack did not break it), as certified accuracy is a lower bound; abstentions
count as errors on both sides.

The base attack (``base_pgd``): the same PGD on f alone with the cross-entropy -log softmax(f(s(x + delta)))_y
(no noise, one pass per step and eps), judged by f's argmax: what smoothing buys.

Gradients through the frontend (space "waveform"). Measured on the Deep Speaker frontend: (1) at exact silence
|rfft| is 0 and its gradient is 0 (torch's |z|' at z = 0), and mel energies replaced by float eps have gradient
0, so wholly silent frames get no gradient at delta = 0; later steps reach into the silence by about a frame
(160 samples) per step, as frames next to a perturbed one stop being silent, and random restarts start inside
it; (2) on near-silent frames the
per-frame normalisation of mfbe divides by a tiny std, so the gradient there is up to ~1e5 times larger than on
speech (bounded by the std floor 1e-12): the normalised step then goes almost wholly into near-silent frames.
That is the real sensitivity of mfbe (tiny waveform edits in silence become full-scale features), not a
numerical failure; no NaN/inf was seen in float32. Non-finite gradient entries, should any model or frontend
produce them, are counted, replaced by 0 so the step stays defined, and reported (``PGDResult.nonfinite``).

x + delta is not clipped to [-1, 1] in the waveform space (the smoothing noise is not either); ||delta||_inf <=
||delta||_2 <= eps, so at the waveform budgets of the report's grid (r / L <= 0.022) only samples above 0.978 in
magnitude could leave the range.

bf16: ``autocast_bf16`` covers only the base classifier; noise, delta, the stage map and the loss stay float32.
The classifier must be in eval mode (dropout would randomise f; batch norm would update its statistics).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from audiocert.sampler import MAX_BLOCKS, Smooth, StagedClassifier, block_seed, fill_noise
from audiocert.settings import check_number
from audiocert.stages import check_stage
from audiocert.statistics import ABSTAIN, check_alpha, predict_from_counts

SPACES: tuple[str, ...] = ("stage", "waveform")
DEFAULT_STEP_FACTOR = 2.0  # step a = 2 eps / T (the choice, and SmoothAdv's 2 eps / T)

Classifier = Callable[[torch.Tensor], torch.Tensor]
StageMap = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackSettings:
    """The ``attack`` config section, checked (see :func:`check_attack_settings`).

    eps: the budgets, L2 in the units of the attack space (stage units for "stage", waveform samples for
    "waveform"); steps: T; samples: m noise draws per step; restarts: random restarts (restart 0 from delta = 0);
    space: where delta enters ("stage" or "waveform"); n, alpha: PREDICT of g on the attacked input;
    batch_size: noisy copies per forward/backward pass; step_factor: step a = step_factor * eps / T;
    base: also attack f alone; bf16: autocast the base classifier to bfloat16 on CUDA for the attack's passes
    (the judge's f is the Smooth's, with certify's bf16; set both alike to attack the f that is judged).
    """

    eps: tuple[float, ...]
    steps: int
    samples: int
    restarts: int
    space: str
    n: int
    alpha: float
    batch_size: int
    step_factor: float = DEFAULT_STEP_FACTOR
    base: bool = True
    bf16: bool = False


REQUIRED_KEYS = ("eps", "steps", "samples", "restarts", "space", "n", "alpha", "batch_size")


def _positive_float(value: Any, name: str) -> float:
    return float(check_number(value, name, above=0))


def _count(value: Any, name: str) -> int:
    return int(check_number(value, name, minimum=1, integer=True))


def check_eps(eps: Any) -> tuple[float, ...]:
    """The budgets as a tuple of finite positive floats, without repeats; ValueError naming ``attack.eps``."""
    values = [eps] if isinstance(eps, (str, bytes)) or not isinstance(eps, Iterable) else list(eps)
    if not values:
        raise ValueError("attack.eps is empty: give at least one budget > 0")
    checked = tuple(_positive_float(v, f"attack.eps[{i}]") for i, v in enumerate(values))
    if len(set(checked)) != len(checked):
        raise ValueError(f"attack.eps={list(checked)} repeats a budget: list each once")
    return checked


def check_space(space: str, stage: str | None = None, stages: Sequence[str] | None = None) -> str:
    """``space`` if delta can enter there for smoothing at ``stage``; ValueError naming ``attack.space``.

    "waveform" needs the stage to be computed from the waveform by a differentiable map, which holds for the
    stages of the frontend (``stages``, e.g. ``frontend.stages``) and for the waveform itself (then the two spaces
    are one). A stage outside ``stages`` cannot take a waveform attack.
    """
    if space not in SPACES:
        raise ValueError(f"attack.space={space!r} is not an attack space: choose one of {', '.join(SPACES)}")
    if stage is not None:
        check_stage(stage)
        if space == "waveform" and stages is not None and stage not in stages:
            raise ValueError(f"attack.space='waveform' cannot reach smoothing stage {stage!r}: the frontend computes "
                             f"only {', '.join(stages)} from the waveform; use attack.space=stage")
    return space


def attack_stream_samples(steps: int, samples: int, restarts: int) -> int:
    """Attack-stream noise samples a setting draws: (1 + restarts x T) x m (the evaluation draws, then T steps
    per restart)."""
    return (1 + restarts * steps) * samples


def attack_stream_blocks(steps: int, samples: int, restarts: int, block_size: int | None = None) -> int:
    """Noise blocks of the attack stream a setting uses: its noise blocks plus one start block per restart >= 1."""
    block_size = samples if block_size is None else block_size
    return math.ceil(attack_stream_samples(steps, samples, restarts) / block_size) + restarts - 1


def check_stream(steps: int, samples: int, restarts: int, block_size: int | None = None) -> None:
    """ValueError unless the setting fits the attack stream of an example (``MAX_BLOCKS`` blocks)."""
    used = attack_stream_blocks(steps, samples, restarts, block_size)
    if used > MAX_BLOCKS:
        raise ValueError(
            f"(1 + attack.restarts={restarts} x attack.steps={steps}) x attack.samples={samples} needs {used} noise "
            f"blocks of {block_size or samples} samples, more than the {MAX_BLOCKS} of an example's attack stream: "
            "lower attack.restarts or attack.steps")


def check_attack_settings(mapping: Mapping[str, Any], stage: str | None = None,
                          stages: Sequence[str] | None = None) -> AttackSettings:
    """Check the ``attack`` config section and return it as :class:`AttackSettings`.

    Required keys: eps (a budget or a list), steps, samples, restarts, space, n, alpha, batch_size; optional:
    step_factor (2.0), base (true), bf16 (false). Other keys are left to the caller. Every error names the field
    (``attack.eps``, ``attack.steps``, ...). With ``stage`` (and ``stages``, the stages the frontend computes) the
    space is checked against the smoothing stage too (:func:`check_space`).
    """
    missing = [k for k in REQUIRED_KEYS if k not in mapping or mapping[k] is None]
    if missing:
        raise ValueError(f"the attack config lacks {', '.join('attack.' + k for k in missing)}")
    eps = check_eps(mapping["eps"])
    steps, samples, restarts, n, batch_size = (_count(mapping[key], f"attack.{key}")
                                               for key in ("steps", "samples", "restarts", "n", "batch_size"))
    space = check_space(mapping["space"], stage, stages)
    alpha = float(check_number(mapping["alpha"], "attack.alpha", above=0, below=0.5))
    step_factor = _positive_float(mapping.get("step_factor", DEFAULT_STEP_FACTOR), "attack.step_factor")
    flags = {}
    for key, default in (("base", True), ("bf16", False)):
        value = mapping.get(key, default)
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"attack.{key}={value!r} must be true or false")
        flags[key] = bool(value)
    check_stream(steps, samples, restarts)
    return AttackSettings(eps=eps, steps=steps, samples=samples, restarts=restarts, space=space, n=n,
                          alpha=alpha, batch_size=batch_size, step_factor=step_factor, **flags)


def waveform_eps_grid(radii: Sequence[float], lipschitz_bound: float) -> tuple[float, ...]:
    """Waveform budgets r / L: the waveform-equivalent radii of magspec radii r under the proven bound L
    (``audiocert.lipschitz.waveform_lipschitz_bound(...).bound``, about 69.08 for the Deep Speaker frontend)."""
    bound = _positive_float(lipschitz_bound, "lipschitz_bound")
    return tuple(float(r) / bound for r in check_eps(radii))


def attack_inputs(staged: StagedClassifier, waveform: torch.Tensor, space: str) -> tuple[torch.Tensor, StageMap | None]:
    """(x, to_stage) for attacking ``staged`` on one ``waveform`` (N,) in ``space``.

    "stage": x = x_stage (the clean representation the noise is added to), to_stage None (delta at the stage).
    "waveform": x = the waveform, to_stage = the differentiable frontend up to the stage (None when the stage is
    the waveform, where the two spaces coincide).
    """
    check_space(space, staged.stage, staged.frontend.stages)
    if space == "stage" or staged.stage == "waveform":
        with torch.no_grad():
            return staged.clean(waveform[None])[0], None
    frontend, stage = staged.frontend, staged.stage
    return waveform, lambda w: frontend.to_stage(w, stage)


# ----------------------------------------------------------------------------------------------------------
# PGD
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PGDResult:
    """One PGD run over E budgets of one point (arrays of length E, in the order of ``eps``).

    delta: (E, *x.shape) the kept delta per eps (float32 on the input's device); loss: the attack loss of the
    kept delta (smoothed: on the kept restart's fresh evaluation draws; base: cross-entropy of f); flipped: the
    cheap estimate flips (smoothed: the m fresh votes; base: f's argmax != y); restarts: restarts run per eps;
    passes: forward+backward passes of noisy copies spent (restarts x T x m, fewer when a restart flipped early);
    eval_passes: forward-only passes of the restarts' evaluations; nonfinite: non-finite gradient entries replaced
    by 0; zero_steps: steps whose gradient was all zero (delta did not move).
    """

    eps: np.ndarray
    delta: torch.Tensor
    loss: np.ndarray
    flipped: np.ndarray
    restarts: np.ndarray
    passes: np.ndarray
    eval_passes: np.ndarray
    nonfinite: np.ndarray
    zero_steps: np.ndarray

    @property
    def l2(self) -> np.ndarray:
        return torch.linalg.vector_norm(self.delta.double().flatten(1), dim=1).cpu().numpy()

    @property
    def linf(self) -> np.ndarray:
        return self.delta.double().flatten(1).abs().amax(dim=1).cpu().numpy()


def _check_run(x: torch.Tensor, y: int, eps: Any, steps: int, restarts: int, step_factor: float,
               classifier: Classifier) -> tuple[tuple[float, ...], int, int, float]:
    """The checked (eps, steps, restarts, step_factor) of one attack call; ValueError naming the field."""
    checked = (check_eps(eps), _count(steps, "attack.steps"), _count(restarts, "attack.restarts"),
               _positive_float(step_factor, "attack.step_factor"))
    if isinstance(y, bool) or not isinstance(y, (int, np.integer)) or y < 0:
        raise ValueError(f"label y={y!r} must be a class index >= 0")
    if not torch.is_floating_point(x) or not torch.isfinite(x).all():
        raise ValueError("the attacked input x must be a finite floating-point tensor")
    if isinstance(classifier, nn.Module) and classifier.training:
        raise ValueError("the classifier is in training mode: call .eval() first (dropout would randomise f and "
                         "batch norm would update its statistics)")
    return checked


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(E,) -> (E, 1, ..., 1) broadcastable against ``like`` (E, *shape)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Project each row of ``delta`` onto its ball ||.||_2 <= eps (in place).

    Promise: afterwards the exact L2 norm of each float row is <= eps. The norm is taken in float64 and rows over
    the budget are scaled by eps / norm * (1 - 4 u) (u: the dtype's unit roundoff), which covers the two roundings
    of the scaling (factor to the dtype, then the product), each at most a factor (1 + u).
    """
    norms = torch.linalg.vector_norm(delta.double().flatten(1), dim=1)
    shrink = 1.0 - 2.0 * torch.finfo(delta.dtype).eps  # 4 u, u = eps / 2
    factor = torch.where(norms > eps, eps / norms.clamp_min(1e-300) * shrink, torch.ones_like(norms))
    return delta.mul_(_per_row(factor.to(delta.dtype), delta))


def _start(x: torch.Tensor, eps: torch.Tensor, restart: int, seed: int, example: int) -> torch.Tensor:
    """The starting delta of ``restart`` for every eps: 0 for restart 0, else uniform in each ball (one direction
    and one radius fraction per restart, from the attack stream's start block ``MAX_BLOCKS - restart``)."""
    delta = torch.zeros((eps.numel(), *x.shape), dtype=torch.float32 if x.dtype != torch.float64 else x.dtype,
                        device=x.device)
    if restart == 0:
        return delta
    generator = torch.Generator(device=x.device)
    generator.manual_seed(block_seed(seed, example, "attack", MAX_BLOCKS - restart))
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float64)
    u = torch.rand((), generator=generator, device=x.device, dtype=torch.float64)
    direction *= u ** (1.0 / max(direction.numel(), 1)) / torch.linalg.vector_norm(direction)
    delta.copy_(direction[None] * _per_row(eps, delta))
    return _project(delta, eps)


def _clean_gradient(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient with non-finite entries set to 0, count per row of those entries)."""
    bad = ~torch.isfinite(grad)
    counts = bad.flatten(1).sum(dim=1)
    return (torch.where(bad, torch.zeros_like(grad), grad) if counts.any() else grad), counts


def _ascent_step(delta: torch.Tensor, grad: torch.Tensor, eps: torch.Tensor, step_factor: float,
                 steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """delta <- Proj(delta + a grad / ||grad||), a = step_factor * eps / T, per row; zero-gradient rows stay."""
    norms = torch.linalg.vector_norm(grad.double().flatten(1), dim=1)
    scale = torch.where(norms > 0, step_factor * eps / steps / norms.clamp_min(1e-300), torch.zeros_like(norms))
    delta.add_(grad * _per_row(scale.to(grad.dtype), grad))
    return _project(delta, eps), norms == 0


def _stage_inputs(x: torch.Tensor, delta: torch.Tensor, to_stage: StageMap | None) -> torch.Tensor:
    """s(x + delta): the representation at the smoothing stage of each attacked row."""
    moved = x[None] + delta
    return moved if to_stage is None else to_stage(moved)


def _log_prob(classifier: Classifier, inputs: torch.Tensor, y: int, bf16: bool
              ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(log softmax(f(inputs))_y in float32, argmax classes, number of classes)."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = classifier(inputs)
    logits = logits.float()
    if not 0 <= y < logits.shape[-1]:
        raise ValueError(f"label y={y} is not one of the classifier's {logits.shape[-1]} classes")
    return torch.log_softmax(logits, dim=-1)[:, y], logits.argmax(dim=-1), logits.shape[-1]


def _noisy_rows(z: torch.Tensor, noise: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Rows [lo, hi) of the flattened (e, i) grid of noisy copies z[e] + noise[i], by broadcast adds."""
    m = noise.shape[0]
    first, last = lo // m, (hi - 1) // m
    if lo % m == 0 and hi % m == 0:  # whole eps: one add
        return (z[first:last + 1].unsqueeze(1) + noise.unsqueeze(0)).flatten(0, 1)
    parts = [z[e:e + 1] + noise[max(lo - e * m, 0):min(hi - e * m, m)] for e in range(first, last + 1)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _smoothed_objective(
    classifier: Classifier, z: torch.Tensor, noise: torch.Tensor, y: int, batch_size: int, bf16: bool,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """log((1/m) sum_i p_y(z_e + noise_i)) per row e of z, its gradient direction, and the votes for y / others.

    Rows (e, i) are flattened and chunked by ``batch_size`` (rounded down to whole eps, m rows each, when it is
    at least m). The log of a mean is not a sum over samples, so the chunks are combined exactly in log space:
    chunk k gives c_k = max of its l = log p_y per e, S_k = sum exp(l - c_k) and grad_z S_k; the total is
    log S = logsumexp_k(c_k + log S_k) and grad log S = sum_k exp(c_k - c) grad S_k / S (c the running max). The
    returned gradient is grad S up to a positive factor per row, which the normalised step does not see.
    Returns (log mean p (E,), gradient (E, *S) or None, votes (E, 2): [y, most votes of another class]).
    """
    rows, m = z.shape[0], noise.shape[0]
    # Whole eps per chunk where the batch allows, so a chunk is one broadcast add (a gather is ~10x slower).
    chunk = max(1, batch_size // m) * m if batch_size >= m else batch_size
    z_leaf = z.detach().requires_grad_(need_grad)
    total_c = torch.full((rows,), -math.inf, dtype=torch.float64, device=z.device)
    total_s = torch.zeros(rows, dtype=torch.float64, device=z.device)
    total_g = torch.zeros_like(z_leaf) if need_grad else None
    votes: torch.Tensor | None = None
    for lo in range(0, rows * m, chunk):
        hi = min(lo + chunk, rows * m)
        e = torch.arange(lo, hi, device=z.device) // m
        with torch.set_grad_enabled(need_grad):
            noisy = _noisy_rows(z_leaf, noise, lo, hi)
            log_p, predicted, classes = _log_prob(classifier, noisy, y, bf16)
            c = torch.full((rows,), -math.inf, dtype=log_p.dtype, device=z.device)
            c = c.scatter_reduce(0, e, log_p.detach(), "amax")
            s = torch.zeros(rows, dtype=log_p.dtype, device=z.device).index_add(0, e, torch.exp(log_p - c[e]))
            grad = torch.autograd.grad(s.sum(), z_leaf)[0] if need_grad else None
        if votes is None:
            votes = torch.zeros((rows, classes), dtype=torch.int64, device=z.device)
        votes.index_put_((e, predicted), torch.ones_like(predicted), accumulate=True)
        c, s = c.double(), s.detach().double()
        new_c = torch.maximum(total_c, c)
        keep_old = torch.where(torch.isfinite(total_c), torch.exp(total_c - new_c), torch.zeros_like(new_c))
        take_new = torch.where(torch.isfinite(c), torch.exp(c - new_c), torch.zeros_like(new_c))
        total_s = total_s * keep_old + s * take_new
        if total_g is not None and grad is not None:
            total_g.mul_(_per_row(keep_old.to(total_g.dtype), total_g))
            total_g.add_(grad * _per_row(take_new.to(grad.dtype), grad))
        total_c = new_c
    log_mean = total_c + torch.log(total_s) - math.log(m)
    assert votes is not None  # rows * m >= 1
    others = votes.clone()
    others[:, y] = -1
    return log_mean, total_g, torch.stack([votes[:, y], others.amax(dim=1).clamp_min(0)], dim=1)


def _run_pgd(
    x: torch.Tensor, eps: tuple[float, ...], steps: int, restarts: int, step_factor: float, seed: int,
    example: int, to_stage: StageMap | None,
    objective: Callable[[torch.Tensor, int, int | None, bool], tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]],
    passes_per_row: int,
) -> PGDResult:
    """The restart/step loop shared by both attacks.

    ``objective(z, restart, step, need_grad)`` -> (attack loss per row (E_active,), ascent gradient w.r.t. z or
    None, flipped per row): z = s(x + delta) of the active rows; step None asks for the evaluation.
    """
    device = x.device
    count = len(eps)
    eps_all = torch.tensor(eps, dtype=torch.float64, device=device)
    x = x.detach()
    best = torch.zeros((count, *x.shape), dtype=torch.float32 if x.dtype != torch.float64 else x.dtype,
                       device=device)
    best_loss = np.full(count, -np.inf)
    flipped = np.zeros(count, dtype=bool)
    used = np.zeros(count, dtype=np.int64)
    nonfinite = np.zeros(count, dtype=np.int64)
    zero_steps = np.zeros(count, dtype=np.int64)
    for restart in range(restarts):
        active = np.flatnonzero(~flipped)
        if active.size == 0:
            break
        rows = torch.as_tensor(active, device=device)
        radius = eps_all[rows]
        delta = _start(x, eps_all, restart, seed, example)[rows]
        used[active] += 1
        for step in range(steps):
            delta.requires_grad_(to_stage is not None)
            with torch.set_grad_enabled(to_stage is not None):
                z = _stage_inputs(x, delta, to_stage)
            _, grad_z, _ = objective(z, restart, step, True)
            grad = grad_z if to_stage is None else torch.autograd.grad(z, delta, grad_outputs=grad_z)[0]
            delta = delta.detach()
            grad, bad = _clean_gradient(grad)
            nonfinite[active] += bad.cpu().numpy()
            delta, flat = _ascent_step(delta, grad, radius, step_factor, steps)
            zero_steps[active] += flat.cpu().numpy()
        with torch.no_grad():
            loss, _, flips = objective(_stage_inputs(x, delta, to_stage), restart, None, False)
        loss, flips = loss.cpu().numpy(), flips.cpu().numpy()
        for k, e in enumerate(active):  # the first flipping restart wins, else the highest evaluation loss
            if flips[k] or loss[k] > best_loss[e]:
                best[e], best_loss[e], flipped[e] = delta[k], loss[k], bool(flips[k])
    return PGDResult(
        eps=np.asarray(eps), delta=best, loss=best_loss, flipped=flipped, restarts=used,
        passes=used * steps * passes_per_row, eval_passes=used * passes_per_row, nonfinite=nonfinite,
        zero_steps=zero_steps)


def smoothed_pgd(
    classifier: Classifier, x: torch.Tensor, y: int, eps: float | Sequence[float], *, sigma: float, steps: int,
    samples: int, restarts: int, seed: int, example: int, to_stage: StageMap | None = None,
    block_size: int | None = None, batch_size: int = 256, step_factor: float = DEFAULT_STEP_FACTOR,
    autocast_bf16: bool = False,
) -> PGDResult:
    """SmoothAdv L2 PGD on the smoothed classifier g around ``classifier`` f, for every eps of one point.

    ``classifier`` maps a batch (B, *stage shape) to logits; ``x`` is one input in the attack space (a stage
    representation, or a waveform with ``to_stage`` its differentiable map to the stage, batched). Maximises
    -log((1/m) sum_i softmax(f(s(x + delta) + sigma e_i))_y) with T normalised L2 steps of step_factor * eps / T,
    ``restarts`` restarts; the noise e_i of step t of restart r is sample (1 + r T + t) m + i of the "attack"
    stream of (seed, example) (blocks of ``block_size`` samples, default m), the evaluation draws its samples
    0 .. m - 1. See the module docstring for the restarts.
    """
    eps, steps, restarts, step_factor = _check_run(x, y, eps, steps, restarts, step_factor, classifier)
    samples = _count(samples, "attack.samples")
    sigma = _positive_float(sigma, "smoothing.sigma")
    block_size = samples if block_size is None else _count(block_size, "block_size")
    batch_size = _count(batch_size, "attack.batch_size")
    check_stream(steps, samples, restarts, block_size)
    with torch.no_grad():
        stage_shape = _stage_inputs(x.detach(), torch.zeros_like(x)[None], to_stage).shape[1:]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    noise = torch.empty((samples, *stage_shape), dtype=dtype, device=x.device)

    def objective(z: torch.Tensor, restart: int, step: int | None, need_grad: bool):
        start = 0 if step is None else (1 + restart * steps + step) * samples
        fill_noise(noise, seed, example, "attack", start, block_size).mul_(sigma)
        log_mean, grad, votes = _smoothed_objective(classifier, z, noise, int(y), batch_size, autocast_bf16,
                                                    need_grad)
        # grad is that of the mean softmax (up to a positive factor per row): the loss -log ascends along -grad
        return -log_mean, None if grad is None else grad.neg_(), votes[:, 1] > votes[:, 0]

    return _run_pgd(x, eps, steps, restarts, step_factor, seed, example, to_stage, objective, samples)


def base_pgd(
    classifier: Classifier, x: torch.Tensor, y: int, eps: float | Sequence[float], *, steps: int, restarts: int,
    seed: int = 0, example: int = 0, to_stage: StageMap | None = None, step_factor: float = DEFAULT_STEP_FACTOR,
    autocast_bf16: bool = False,
) -> PGDResult:
    """Plain L2 PGD on f alone: maximise -log softmax(f(s(x + delta)))_y, ||delta||_2 <= eps, for every eps.

    Same steps, projection, restarts and random starts as :func:`smoothed_pgd` (no noise, one pass per step and
    eps); a restart is kept when f's argmax on s(x + delta) differs from y, else the highest cross-entropy.
    """
    eps, steps, restarts, step_factor = _check_run(x, y, eps, steps, restarts, step_factor, classifier)

    def objective(z: torch.Tensor, restart: int, step: int | None, need_grad: bool):
        z_leaf = z.detach().requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            log_p, predicted, _ = _log_prob(classifier, z_leaf, int(y), autocast_bf16)
            grad = torch.autograd.grad(-log_p.sum(), z_leaf)[0] if need_grad else None
        return -log_p.detach().double(), grad, predicted != y

    return _run_pgd(x, eps, steps, restarts, step_factor, seed, example, to_stage, objective, 1)


# ----------------------------------------------------------------------------------------------------------
# Judging
# ----------------------------------------------------------------------------------------------------------
def attacked_stage_inputs(x: torch.Tensor, delta: torch.Tensor, to_stage: StageMap | None = None) -> torch.Tensor:
    """s(x + delta) for each row of ``delta`` (E, *x.shape): the attacked inputs at the smoothing stage."""
    with torch.no_grad():
        return _stage_inputs(x.detach(), delta.to(x.dtype), to_stage)


def predict_attacked(smooth: Smooth, z: torch.Tensor, n: int, alpha: float, batch_size: int,
                     example: int) -> np.ndarray:
    """PREDICT(n, alpha) of g on each attacked stage input z[e], with the "prediction" stream of ``example``
    (the noise of certification's clean PREDICT; the attack never draws from it). (E,) classes, -1 = abstain."""
    check_alpha(alpha)
    n = _count(n, "attack.n")
    return np.array([predict_from_counts(smooth.counts(row, "prediction", 0, n, batch_size, example), alpha)
                     for row in z], dtype=np.int64)


def base_predict(classifier: Classifier, z: torch.Tensor, batch_size: int = 256, autocast_bf16: bool = False
                 ) -> np.ndarray:
    """f's argmax class on each row of z (E, *stage shape)."""
    out = []
    with torch.no_grad():
        for lo in range(0, z.shape[0], batch_size):
            with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                out.append(classifier(z[lo:lo + batch_size]).float().argmax(dim=-1))
    return torch.cat(out).cpu().numpy().astype(np.int64)


def robust_accuracy(predictions: np.ndarray | Sequence[Sequence[int]], labels: np.ndarray | Sequence[int]
                    ) -> np.ndarray:
    """Empirical robust accuracy per eps: fraction of points whose PREDICT on the attacked input is the label
    (abstain, -1, counts as not robust). predictions (P, E), labels (P,) -> (E,)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 2 or predictions.shape[0] != labels.shape[0]:
        raise ValueError(f"predictions {predictions.shape} must be (points, eps) with one label per point "
                         f"({labels.shape})")
    if predictions.shape[0] == 0:
        return np.full(predictions.shape[1], np.nan)
    return (predictions == labels[:, None]).mean(axis=0)


@dataclass
class PointAttack:
    """Everything the attacks found for one test point, per eps (arrays of length E in the order of ``eps``).

    smoothed: the attack on g; predict: PREDICT of g on x + delta_g (-1 abstain); base (when run): the attack on
    f; base_class: f's class on x + delta_f; predict_passes: forward passes PREDICT spent (n per eps).
    """

    example: int
    label: int
    eps: np.ndarray
    smoothed: PGDResult
    predict: np.ndarray
    predict_passes: int
    base: PGDResult | None = None
    base_class: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def robust(self) -> np.ndarray:
        """PREDICT on the attacked input is the label (per eps)."""
        return self.predict == self.label

    def smallest_success(self) -> int | None:
        """Index of the smallest eps whose attacked input PREDICT does not give the label, or None."""
        failed = np.flatnonzero(~self.robust)
        return None if failed.size == 0 else int(failed[np.argmin(self.eps[failed])])

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready summary (no deltas): per-eps lists of norms, losses, classes and costs."""
        record: dict[str, Any] = {
            "example": self.example, "label": self.label, "eps": self.eps.tolist(),
            "smoothed": _pgd_record(self.smoothed), "predict": self.predict.tolist(),
            "predict_passes": self.predict_passes, "settings": self.settings,
        }
        if self.base is not None and self.base_class is not None:
            record["base"] = _pgd_record(self.base)
            record["base_class"] = self.base_class.tolist()
        return record


def _pgd_record(result: PGDResult) -> dict[str, Any]:
    return {"l2": result.l2.tolist(), "linf": result.linf.tolist(), "loss": result.loss.tolist(),
            "flipped": result.flipped.tolist(), "restarts": result.restarts.tolist(),
            "passes": result.passes.tolist(), "eval_passes": result.eval_passes.tolist(),
            "nonfinite": result.nonfinite.tolist(), "zero_steps": result.zero_steps.tolist()}


def attack_point(smooth: Smooth, x: torch.Tensor, y: int, settings: AttackSettings, *, example: int,
                 to_stage: StageMap | None = None) -> PointAttack:
    """Attack one test point at every eps of ``settings`` and judge it: what a shard worker calls per point.

    ``smooth`` is the config's smoothed classifier (its base classifier, sigma, seed, and the block size of the
    prediction stream are reused); ``x``, ``to_stage`` as from :func:`attack_inputs`. A waveform space needs
    ``to_stage`` unless the smoothing stage is the waveform itself.
    """
    if settings.space == "waveform" and to_stage is None and getattr(smooth.base_classifier, "stage",
                                                                      "waveform") != "waveform":
        raise ValueError("attack.space='waveform' needs the map waveform -> smoothing stage (to_stage): this "
                         "classifier's stage cannot take a waveform attack without it (see attack_inputs)")
    classifier = smooth.base_classifier
    bf16 = settings.bf16 and x.device.type == "cuda"
    smoothed = smoothed_pgd(
        classifier, x, y, settings.eps, sigma=smooth.sigma, steps=settings.steps, samples=settings.samples,
        restarts=settings.restarts, seed=smooth.seed, example=example, to_stage=to_stage,
        batch_size=settings.batch_size, step_factor=settings.step_factor, autocast_bf16=bf16)
    z = attacked_stage_inputs(x, smoothed.delta, to_stage)
    predict = predict_attacked(smooth, z, settings.n, settings.alpha, settings.batch_size, example)
    base = base_class = None
    if settings.base:
        base = base_pgd(classifier, x, y, settings.eps, steps=settings.steps, restarts=settings.restarts,
                        seed=smooth.seed, example=example, to_stage=to_stage, step_factor=settings.step_factor,
                        autocast_bf16=bf16)
        base_class = base_predict(classifier, attacked_stage_inputs(x, base.delta, to_stage), settings.batch_size,
                                  bf16)
    return PointAttack(example=int(example), label=int(y), eps=np.asarray(settings.eps), smoothed=smoothed,
                       predict=predict, predict_passes=settings.n * len(settings.eps), base=base,
                       base_class=base_class, settings={**asdict(settings), "eps": list(settings.eps)})


__all__ = [
    "ABSTAIN", "SPACES", "AttackSettings", "PGDResult", "PointAttack", "attack_inputs", "attack_point",
    "attack_stream_blocks", "attack_stream_samples", "attacked_stage_inputs", "base_pgd", "base_predict",
    "check_attack_settings", "check_eps", "check_space", "check_stream", "predict_attacked", "robust_accuracy",
    "smoothed_pgd", "waveform_eps_grid",
]
