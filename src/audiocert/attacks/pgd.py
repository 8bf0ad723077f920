"""L2 PGD for every eps of one point: on the smoothed classifier g (SmoothAdv) and on the base classifier f."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from audiocert.attacks.ball import _ascent_step, _clean_gradient, _start
from audiocert.attacks.objective import _log_prob, _smoothed_objective
from audiocert.attacks.settings import DEFAULT_STEP_FACTOR, _count, _positive_float, check_eps, check_stream
from audiocert.attacks.space import Classifier, StageMap, _stage_inputs
from audiocert.sampler import fill_noise


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
    0 .. m - 1. See the package docstring for the restarts.
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
