"""The attack losses: log softmax of f for the label, and the SmoothAdv surrogate over noisy copies (chunked)."""

from __future__ import annotations

import math

import torch

from audiocert.attacks.ball import _per_row
from audiocert.attacks.space import Classifier
from audiocert.settings import require


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
    require(votes is not None)
    others = votes.clone()
    others[:, y] = -1
    return log_mean, total_g, torch.stack([votes[:, y], others.amax(dim=1).clamp_min(0)], dim=1)
