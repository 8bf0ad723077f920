"""Tables computed from the statistics alone (no sweep needed)."""

from __future__ import annotations

from collections.abc import Sequence

from audiocert.statistics import max_certifiable_radius


def radius_table(sigmas: Sequence[float], ns: Sequence[int], alpha: float) -> list[list[float]]:
    """Rows sigma, columns n: the radius certified when all n samples agree, sigma * Phi^-1(alpha^(1/n))."""
    for n in ns:
        if int(n) < 1:
            raise ValueError(f"n={n} must be a positive integer")
    for sigma in sigmas:
        if not sigma > 0:
            raise ValueError(f"sigma={sigma} must be positive")
    return [[max_certifiable_radius(sigma, int(n), alpha) for n in ns] for sigma in sigmas]


def radius_table_markdown(sigmas: Sequence[float], ns: Sequence[int], alpha: float) -> str:
    rows = radius_table(sigmas, ns, alpha)
    header = "| sigma | " + " | ".join(f"n = {n:,}" for n in ns) + " |"
    lines = [f"Maximum certifiable radius at alpha = {alpha:g} (all n samples correct)", "", header,
             "|---|" + "---|" * len(ns)]
    lines += [f"| {s:.2f} | " + " | ".join(f"{r:.3f}" for r in row) + " |" for s, row in zip(sigmas, rows,
                                                                                              strict=True)]
    return "\n".join(lines)
