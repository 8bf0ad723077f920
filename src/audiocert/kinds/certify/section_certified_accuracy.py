"""The certified-accuracy tables: one per (dataset, smoothing stage), rows sigma, columns radii, recomputed from
certificates.tsv, with what sequential configs answer and, where the report has both, sequential radii beside the
Cohen radii of the same settings."""

from __future__ import annotations

from collections.abc import Sequence

from audiocert.reporting.context import ReportContext
from audiocert.reporting.names import accuracy_table, fmt_radius, stage_tables, stage_title, stage_units
from audiocert.reporting.results import ConfigResult

INTRO = (
    "Fraction of the certified test points whose smoothed prediction is correct with certified L2 radius "
    "≥ r (abstentions count as wrong), recomputed from each config's certificates.tsv. The best value of "
    "each column is in bold (all of them when tied; none when nothing is certified). *ceiling* is the "
    "largest radius n samples can certify, σ·Φ⁻¹(α^(1/n)); radii are L2 norms in the smoothing stage's "
    "own space.")

SEQUENTIAL = (
    "**Sequential configs** answer \"R ≥ r?\" at their table radii: each point stops drawing samples "
    "once those answers are settled, and its radius is σ·Φ⁻¹(pA_lower) bounded at the level α_k of the "
    "look where it stopped (Σ α_k = α). At the table radii their certified accuracy is what they were "
    "built to give (compare it with Cohen's there); between table radii their curve is conservative, "
    "and their per-point radii and medians run smaller than Cohen's. Figures draw them as steps "
    "through their table radii.")

COMPARISON = (
    "Each sequential config beside the Cohen config certifying the same points on the same noise "
    "streams (same settings but the algorithm). *median radius*: over each config's certified points "
    "(correct, radius > 0); *ratio of medians*: sequential / Cohen; *median per-point ratio*: "
    "R_sequential / R_cohen over the points both certify (their number in brackets); *median table "
    "radius*: each certified radius rounded down to the sequential config's table radii, the answer "
    "to \"R ≥ r?\" that sequential gives. Sequential's bound comes from fewer samples at a smaller "
    "level α_k, so its radii are smaller; its certified accuracy at the table radii is in the tables "
    "above (and *Δ vs cohen* in the runs table).")


def certified_accuracy_section(context: ReportContext) -> list[str]:
    """The tables, with the notes on sequential configs and the sequential-vs-Cohen radius comparison."""
    lines = ["## Certified accuracy", "", INTRO, ""]
    lines += sequential_notes(context.complete, context.radii)
    for (dataset, stage), rows in stage_tables(context.complete):
        lines += stage_table(dataset, stage, rows, context.radii)
    if context.comparison:
        lines += ["### Sequential radii against Cohen's", "", COMPARISON, "", *context.comparison, ""]
    return lines


def sequential_notes(complete: Sequence[ConfigResult], radii: Sequence[float]) -> list[str]:
    """How to read sequential configs' rows, and which of them answer other radii than the table's columns."""
    sequential = [r for r in complete if r.table_radii]
    if not sequential:
        return []
    lines = [SEQUENTIAL, ""]
    other = sorted({r.table_radii for r in sequential if r.table_radii != tuple(sorted(radii))})
    if other:
        lines += ["**Note:** some sequential configs answer other radii than this report's columns ("
                  + "; ".join(", ".join(fmt_radius(x) for x in grid) for grid in other)
                  + "): at a column radius that is not one of theirs, their value is conservative.", ""]
    return lines


def stage_table(dataset: str, stage: str, rows: Sequence[ConfigResult], radii: Sequence[float]) -> list[str]:
    """The table of one (dataset, stage), and what its rows share or where they differ."""
    table, _ = accuracy_table(rows, radii)
    lines = [f"### {dataset}, {stage_title(stage)} ({stage})", "", table, ""]
    ns, alphas, n0s = sorted({r.n for r in rows}), sorted({r.alpha for r in rows}), sorted({r.n0 for r in rows})
    if len(ns) > 1 or len(alphas) > 1:
        differ = ([f"n ({', '.join(map(str, ns))})"] if len(ns) > 1 else []) + (
            [f"α ({', '.join(f'{a:g}' for a in alphas)})"] if len(alphas) > 1 else [])
        lines += [f"**Note:** the configs of this table differ in {' and '.join(differ)}: their ceilings "
                  "(and, for α, their confidence) differ, so compare rows with care.", ""]
    else:
        lines += [f"All rows: n0 = {', '.join(map(str, n0s))}, n = {ns[0]}, α = {alphas[0]:g}; radii in "
                  f"{stage} space ({stage_units(stage)}).", ""]
    return lines
