"""PGD in the L2 ball: projection onto it, random starts inside it, normalised ascent steps."""

from __future__ import annotations

import torch

from audiocert.sampler import MAX_BLOCKS, block_seed


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
    """delta <- Proj(delta + a grad / ||grad||), a = step_factor * eps / T, per row; zero-gradient rows stay.

    Promise: a finite gradient gives a finite step. The norm is taken in float64; where a / ||grad|| does not fit
    the gradient's dtype (a subnormal float32 gradient of saturated logits), the step is formed in float64."""
    norms = torch.linalg.vector_norm(grad.double().flatten(1), dim=1)
    scale = torch.where(norms > 0, step_factor * eps / steps / norms.clamp_min(1e-300), torch.zeros_like(norms))
    narrow = scale.to(grad.dtype)
    if bool(torch.isfinite(narrow).all()):
        delta.add_(grad * _per_row(narrow, grad))
    else:  # a tiny (e.g. subnormal) gradient of a saturated model: its scale overflows the gradient's dtype
        delta.add_((grad.double() * _per_row(scale, grad)).to(delta.dtype))
    return _project(delta, eps), norms == 0
