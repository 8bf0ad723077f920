"""Accuracy and abstentions: per config, the base classifier's clean accuracy, the smoothed classifier's accuracy
and abstentions under CERTIFY, and those of PREDICT (its own abstention test)."""

from __future__ import annotations

import numpy as np

from audiocert.reporting.context import ReportContext
from audiocert.reporting.names import cell, fmt_float
from audiocert.statistics import ABSTAIN

INTRO = (
    "Clean: the base classifier f on clean test crops (from its checkpoint's metrics, the whole test "
    "split). Smoothed: CERTIFY's prediction correct (certificates.tsv). PREDICT: the smoothed classifier's "
    "prediction with its own abstention test (predictions.tsv).")


def abstentions_section(context: ReportContext) -> list[str]:
    """One row per complete config."""
    lines = ["## Accuracy and abstentions", "", INTRO, "",
             "| config | clean accuracy (f) | smoothed accuracy | abstain | PREDICT accuracy | PREDICT abstain | "
             "points |", "|---|---|---|---|---|---|---|"]
    for r in context.complete:
        info = context.clean_accuracy(r)
        abstain = float(np.mean(r.predict == ABSTAIN))
        if r.predictions:
            p_acc = fmt_float(float(np.mean([p[3] for p in r.predictions])), ".3f")
            p_abs = fmt_float(float(np.mean([p[2] == ABSTAIN for p in r.predictions])), ".3f")
        else:
            p_acc = p_abs = "n/a"
        lines.append(f"| {cell(r.name)} | {fmt_float(info.get('accuracy'), '.3f')} | {float(r.correct.mean()):.3f} | "
                     f"{abstain:.3f} | {p_acc} | {p_abs} | {r.radii.size} |")
    lines.append("")
    flagged = [(r, (r.summary or {}).get("degenerate")) for r in context.complete]
    lines += [f"- **Degenerate: {cell(r.name)}**: {why}." for r, why in flagged if why]
    return lines + ([""] if any(why for _, why in flagged) else [])
