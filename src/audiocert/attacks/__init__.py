"""Attacks on the smoothed classifier g and on the base classifier f: what a certificate's radius leaves open.

Certification lower-bounds robustness; an attack upper-bounds it. This package is the algorithmic core: per test
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
produce them, are counted, replaced by 0 so the step stays defined, and reported (``PGDResult.nonfinite``); a
finite gradient gives a finite step (the step is formed in float64 where float32 would overflow). An attacked input
that is not finite anyway is never judged: its class is ``UNJUDGED`` (-2) and the reducer reports it.

x + delta is not clipped to [-1, 1] in the waveform space (the smoothing noise is not either); ||delta||_inf <=
||delta||_2 <= eps, so at the waveform budgets of the report's grid (r / L <= 0.022) only samples above 0.978 in
magnitude could leave the range.

bf16: ``autocast_bf16`` covers only the base classifier; noise, delta, the stage map and the loss stay float32.
The classifier must be in eval mode (dropout would randomise f; batch norm would update its statistics).

Modules, each one job (a module imports only those above it; none imports this package's ``__init__``)::

    space      the attack spaces and the map s(x + delta) to the smoothing stage (attack_inputs)
    settings   the ``attack`` config section (check_attack_settings), the attack stream's size, eps grids
    ball       the L2 ball: projection, random starts, normalised ascent steps
    objective  the attack losses (log softmax of f, the SmoothAdv surrogate over noisy copies)
    pgd        the restart/step loop, smoothed_pgd and base_pgd (PGDResult)
    judge      PREDICT of g on attacked inputs, f's argmax, robust accuracy
    point      one point attacked and judged at every eps (attack_point, PointAttack)
"""

from audiocert.attacks.ball import _project as _project  # tested directly
from audiocert.attacks.judge import (
    UNJUDGED,
    base_predict,
    judge_attacked,
    judge_looks,
    predict_attacked,
    robust_accuracy,
    sequential_predict,
)
from audiocert.attacks.pgd import PGDResult, base_pgd, smoothed_pgd
from audiocert.attacks.point import PointAttack, attack_point
from audiocert.attacks.settings import (
    AttackSettings,
    attack_stream_blocks,
    attack_stream_samples,
    check_attack_settings,
    check_eps,
    check_stream,
    waveform_eps_grid,
)
from audiocert.attacks.space import SPACES, attack_inputs, attacked_stage_inputs, check_space
from audiocert.statistics import ABSTAIN

__all__ = [
    "ABSTAIN", "AttackSettings", "PGDResult", "PointAttack", "SPACES", "UNJUDGED", "attack_inputs", "attack_point",
    "attack_stream_blocks", "attack_stream_samples", "attacked_stage_inputs", "base_pgd", "base_predict",
    "check_attack_settings", "check_eps", "check_space", "check_stream", "judge_attacked", "judge_looks",
    "predict_attacked", "robust_accuracy", "sequential_predict", "smoothed_pgd", "waveform_eps_grid",
]
