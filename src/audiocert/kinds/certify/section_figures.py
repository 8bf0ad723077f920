"""The report's figures section: certified accuracy vs radius per (dataset, stage), per (dataset, sigma) where a
sigma has several stages, and per dataset in waveform space (the waveform stage as is, magnitude-spectrogram
certificates through r / L), each with its caption."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from audiocert.reporting.context import ReportContext
from audiocert.reporting.figures import figure_per_sigma, figure_per_stage, figure_waveform_equivalent
from audiocert.reporting.names import (
    group_by,
    output_file,
    slug,
    sort_key,
    stage_tables,
    stage_title,
    stage_units,
    waveform_bound,
)
from audiocert.reporting.results import ConfigResult
from audiocert.reporting.waveform_guarantee import NO_BOUND, lipschitz_bound
from audiocert.stages import WaveformBound

Captioned = list[tuple[Path, str]]  # the figures written, each with its caption


def figures_section(context: ReportContext) -> list[str]:
    """Write the figures into the output directory; the Markdown that shows them, numbered, with captions."""
    figures = stage_figures(context) + sigma_figures(context) + waveform_figures(context)
    if not figures:
        return []
    lines = ["## Figures", ""]
    for number, (path, caption) in enumerate(figures, start=1):
        lines += [f"![Figure {number}]({path.name})", "", f"*Figure {number}: {caption}*", ""]
    return lines


def steps_caption(rows: Sequence[ConfigResult]) -> str:
    """The sentence a figure caption needs when it draws sequential configs (as steps at their table radii)."""
    if not any(r.table_radii for r in rows):
        return ""
    return (" Sequential configs (markers) are drawn at their table radii only, the radii whose \"R ≥ r?\" they "
            "answer, as steps: between two table radii the value is that of the larger one (conservative).")


def stage_figures(context: ReportContext) -> Captioned:
    """One figure per (dataset, stage): a line per sigma."""
    figures = []
    for (dataset, stage), rows in stage_tables(context.complete):
        name = f"certified_{slug(dataset)}_{slug(stage)}.png"
        path = figure_per_stage(dataset, stage, rows, output_file(context.output, name))
        figures.append((path, f"{dataset}: certified accuracy vs L2 radius, smoothing at the "
                              f"{stage_title(stage)}, one line per σ; dashed vertical lines mark each "
                              f"σ's ceiling σ·Φ⁻¹(α^(1/n)) in the same colour. Radii in {stage} space "
                              f"({stage_units(stage)})." + steps_caption(rows)))
    return figures


def sigma_figures(context: ReportContext) -> Captioned:
    """One figure per (dataset, sigma) certified at several stages: a line per stage."""
    figures = []
    for (dataset, sigma), rows in sorted(group_by(context.complete, lambda r: (r.dataset, r.sigma)).items()):
        if len({r.stage for r in rows}) < 2:
            continue  # one stage at this sigma: its per-stage figure already shows it
        rows = sorted(rows, key=sort_key)
        path = figure_per_sigma(dataset, sigma, rows, output_file(
            context.output, f"certified_{slug(dataset)}_sigma{slug(f'{sigma:g}')}.png"))
        figures.append((path, f"{dataset}, σ = {sigma:g}: certified accuracy vs radius for each smoothing stage. "
                              "The radii are in different spaces (waveform samples, |rfft| magnitudes, z-scored Mel "
                              "energies), so the lines compare how far each stage's own guarantee reaches, not "
                              "robustness to the same perturbation." + steps_caption(rows)))
    return figures


def waveform_figures(context: ReportContext) -> Captioned:
    """One figure per dataset with guarantees in waveform space; configs without a proven L are named."""
    complete, figures = context.complete, []
    scale = {h: lipschitz_bound(e) for h, e in context.lipschitz.items() if e is not None}
    in_waveform_space = [r for r in complete
                         if waveform_bound(r.stage) is WaveformBound.DIRECT or r.config_hash in scale]
    for dataset, rows in sorted(group_by(in_waveform_space, lambda r: r.dataset).items()):
        rows = sorted(rows, key=sort_key)
        unbounded = [r for r in complete
                     if r.dataset == dataset and waveform_bound(r.stage) is WaveformBound.LIPSCHITZ
                     and r.config_hash not in scale]
        path = figure_waveform_equivalent(dataset, rows, scale,
                                          output_file(context.output, f"waveform_equivalent_{slug(dataset)}.png"))
        caption = (f"{dataset}: the guarantees that hold in waveform space, on a log radius axis: waveform-stage "
                   "certificates as they are, magnitude-spectrogram certificates divided by the proven Lipschitz "
                   "bound L of waveform -> magnitude spectrogram; dashed lines are the ceilings. "
                   "Normalized-filterbank certificates have no waveform equivalent.")
        caption += steps_caption(rows)
        if unbounded:
            caption += (f" Left out ({NO_BOUND}): {', '.join(r.name for r in unbounded)}.")
        figures.append((path, caption))
    return figures
