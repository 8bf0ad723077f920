"""A sequential config against its Cohen twin (README, "Which algorithm"): the Cohen config certifying the same
points on the same noise streams, the difference in certified accuracy, and how much smaller sequential's radii
are (both median radii and their ratio)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from audiocert.reporting.names import cell, fmt_float
from audiocert.reporting.results import ConfigResult
from audiocert.statistics import REPORT_RADII, certified_accuracy


def cohen_twin(r: ConfigResult, results: Sequence[ConfigResult]) -> ConfigResult | None:
    """The Cohen (fixed-n) config certifying the same points (same audio) with the same classifier, settings and
    noise streams as ``r`` (all its certified quantities but the algorithm's); None for a Cohen config, an
    incomplete one, or one without such a twin in ``results``."""
    if r.algorithm == "cohen" or not r.complete:
        return None
    same = [c for c in results if c.complete and c.algorithm == "cohen" and c.counted_inputs == r.counted_inputs]
    return same[0] if same else None


def cohen_difference(r: ConfigResult, results: Sequence[ConfigResult], radii: Sequence[float]) -> float | None:
    """Certified accuracy of ``r`` minus that of its Cohen twin (:func:`cohen_twin`) at the grid radius where they
    differ most; None without such a pair."""
    twin = cohen_twin(r, results)
    if twin is None:
        return None
    ours = [certified_accuracy(r.radii, r.correct, x) for x in radii]
    theirs = [certified_accuracy(twin.radii, twin.correct, x) for x in radii]
    return max((a - b for a, b in zip(ours, theirs, strict=True)), key=abs)


def table_radius(radii: np.ndarray, table: Sequence[float]) -> np.ndarray:
    """Each radius rounded down to the grid {0} ∪ ``table``: the largest r with R >= r, the answer a sequential
    config gives to "R >= r?" at its table radii."""
    grid = np.concatenate([[0.0], np.sort(np.asarray(table, dtype=float))])
    return grid[np.searchsorted(grid, radii, side="right") - 1]


@dataclass
class RadiusComparison:
    """The radii of a sequential config against its Cohen twin's (same points, same noise streams).

    Medians run over each config's certified points (correct, radius > 0), as the reducer's; ``per_point`` is the
    median of R_sequential / R_cohen over the points both certify; ``table_*`` are the medians of each certified
    radius rounded down to the sequential config's table radii (what it answers).
    """

    sequential: ConfigResult
    cohen: ConfigResult
    certified: tuple[int, int]  # points certified (sequential, cohen)
    median: tuple[float | None, float | None]
    ratio: float | None  # median sequential / median cohen
    per_point: float | None  # median of the per-point ratios over points both certify
    both: int  # points both certify
    table_median: tuple[float | None, float | None]


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def compare_radii(seq: ConfigResult, cohen: ConfigResult) -> RadiusComparison:
    """How much smaller a sequential config's radii are than its Cohen twin's (see RadiusComparison)."""
    table = seq.table_radii or REPORT_RADII
    med = (_median(seq.radii[seq.certified]), _median(cohen.radii[cohen.certified]))
    ratio = med[0] / med[1] if med[0] is not None and med[1] else None
    # The same points in both (the same audio, checked by counted_inputs), matched by their dataset index.
    index = {int(i): k for k, i in enumerate(_indices(cohen))}
    pairs = [(k, index[int(i)]) for k, i in enumerate(_indices(seq)) if int(i) in index]
    ratios = np.array([seq.radii[a] / cohen.radii[b] for a, b in pairs if seq.certified[a] and cohen.certified[b]])
    return RadiusComparison(
        sequential=seq, cohen=cohen, certified=(int(seq.certified.sum()), int(cohen.certified.sum())), median=med,
        ratio=ratio, per_point=_median(ratios), both=int(ratios.size),
        table_median=(_median(table_radius(seq.radii[seq.certified], table)),
                      _median(table_radius(cohen.radii[cohen.certified], table))))


def _indices(r: ConfigResult) -> np.ndarray:
    return r.indices if r.indices.size == r.radii.size else np.arange(r.radii.size)


def sequential_radius_table(results: Sequence[ConfigResult]) -> list[str]:
    """Markdown: per sequential config with a Cohen twin in ``results``, both median radii and their ratio."""
    pairs = [(r, twin) for r in results if (twin := cohen_twin(r, results)) is not None]
    if not pairs:
        return []
    lines = ["| sequential config | Cohen config | stage | σ | certified points (seq / Cohen) | median radius "
             "(seq / Cohen) | ratio of medians | median per-point ratio (points both certify) | median table "
             "radius (seq / Cohen) |", "|---" * 9 + "|"]
    for seq, cohen in pairs:
        c = compare_radii(seq, cohen)
        if c.ratio is None:
            ratio = "n/a"
        else:
            ratio = f"{c.ratio:.3f} ({abs(1 - c.ratio) * 100:.0f}% {'smaller' if c.ratio <= 1 else 'larger'})"
        per_point = "n/a" if c.per_point is None else f"{c.per_point:.3f} ({c.both})"
        lines.append(f"| {cell(seq.name)} | {cell(cohen.name)} | {seq.stage} | {seq.sigma:g} | "
                     f"{c.certified[0]} / {c.certified[1]} | {fmt_float(c.median[0])} / {fmt_float(c.median[1])} | "
                     f"{ratio} | {per_point} | {fmt_float(c.table_median[0])} / {fmt_float(c.table_median[1])} |")
    return lines
