"""The report's figures: certified accuracy vs radius per (dataset, stage), per (dataset, sigma) across stages,
and the guarantees that hold in waveform space; plus the drawing pieces the sections share (a figure without
pyplot, saved atomically; colours, line widths, legend handles; a config's curve, steps for a sequential one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from audiocert.provenance import atomic_write_with
from audiocert.reporting.names import distinct_names, row_labels, stage_title, stage_units, waveform_bound
from audiocert.reporting.results import ConfigResult
from audiocert.stages import STAGE_REGISTRY, WaveformBound
from audiocert.statistics import certified_accuracy

DPI = 120


def save_figure(fig, path: Path) -> Path:
    """savefig to a temporary name in the same directory, then rename over ``path``."""
    return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))


def new_figure(width: float = 10.5, height: float = 5.0):
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg when saving

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def curve(radii: np.ndarray, correct: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Certified accuracy at each radius of ``grid`` (the same definition as statistics.certified_accuracy)."""
    if radii.size == 0:
        return np.full(grid.shape, np.nan)
    return (correct[None, :] & (radii[None, :] >= grid[:, None])).mean(axis=1)


def colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(count)]


def line_widths(count: int) -> list[float]:
    """Widest first, so that lines drawn later on top of identical ones leave them visible."""
    return [1.5 + 2.5 * (count - 1 - i) / max(count - 1, 1) for i in range(count)]


def finish_axes(ax, sequential: bool = False) -> None:
    ax.set_ylim(-0.02, 1.02)
    handles, _ = ax.get_legend_handles_labels()
    extra = [ceiling_legend_handle()] + ([sequential_legend_handle()] if sequential else [])
    ax.legend(handles=[*handles, *extra], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)


def ceiling_legend_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.3", linestyle="--", linewidth=1.2,
                  label="dashed: ceiling σ·Φ⁻¹(α^(1/n))\nof the line of the same colour")


def sequential_legend_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.3", marker="o", markersize=4, linewidth=1.2, drawstyle="steps-pre",
                  label="markers: a sequential config at its table\nradii (R ≥ r? is what it answers); "
                        "between\nthem the step is the conservative value")


def sequential_label(name: str) -> str:
    """A sequential config's legend entry: says that its line holds values at its table radii only."""
    return f"{name} ({'' if 'sequential' in name else 'sequential, '}at its table radii)"


def plot_config(ax, r: ConfigResult, grid: np.ndarray, label: str, scale: float = 1.0, **style) -> None:
    """Certified accuracy vs radius of ``r`` (radii times ``scale``).

    A Cohen config's curve runs over ``grid`` from its per-point radii. A sequential config answers "R >= r?" at
    its table radii only (each point stops once those answers are settled, with its bound at the stopping look's
    level, so its radii between table radii say little and run smaller than Cohen's): it is drawn as a step
    function through its certified accuracy at 0 and at each table radius, the value at r_k held over
    (r_(k-1), r_k] — the conservative reading between table radii. (``grid[0]`` stands for 0 on a log axis.)
    """
    table = r.table_radii
    if table is None:
        ax.plot(grid, curve(r.radii * scale, r.correct, grid), label=label, drawstyle="steps-post", **style)
        return
    at = np.array([0.0, *table])
    xs = np.concatenate([[grid[0] if grid[0] > 0 else 0.0], np.asarray(table) * scale])
    ax.plot(xs, [certified_accuracy(r.radii, r.correct, x) for x in at], label=sequential_label(label),
            drawstyle="steps-pre", marker="o", markersize=4, **style)


def figure_per_stage(dataset: str, stage: str, rows: Sequence[ConfigResult], path: Path) -> Path:
    fig, ax = new_figure()
    xmax = 1.1 * max(r.ceiling for r in rows)
    grid = np.linspace(0.0, xmax, 800)
    labels = row_labels(rows)
    if len({r.n for r in rows}) > 1:
        labels = [label if "n = " in label else f"{label}, n = {r.n}" for label, r in zip(labels, rows, strict=True)]
    for colour, width, r, label in zip(colours(len(rows)), line_widths(len(rows)), rows, labels, strict=True):
        plot_config(ax, r, grid, label, color=colour, linewidth=width)
        ax.axvline(r.ceiling, color=colour, linestyle="--", linewidth=1.2)
    ax.set_title(f"{dataset}: certified accuracy vs radius, smoothing at the {stage_title(stage)}")
    ax.set_xlabel(f"L2 radius r in {stage} space ({stage_units(stage)})")
    ax.set_ylabel("certified accuracy (fraction of test points)")
    ax.set_xlim(0, xmax)
    ax.grid(True, alpha=0.4)
    finish_axes(ax, sequential=any(r.table_radii for r in rows))
    return save_figure(fig, path)


def figure_per_sigma(dataset: str, sigma: float, rows: Sequence[ConfigResult], path: Path) -> Path:
    fig, ax = new_figure()
    xmax = 1.1 * max(r.ceiling for r in rows)
    grid = np.linspace(0.0, xmax, 800)
    labels = distinct_names(rows, base=lambda r: r.stage)
    if len({r.n for r in rows}) > 1:
        labels = [label if "n = " in label else f"{label} (n = {r.n})" for label, r in zip(labels, rows, strict=True)]
    for colour, width, r, label in zip(colours(len(rows)), line_widths(len(rows)), rows, labels, strict=True):
        plot_config(ax, r, grid, label, color=colour, linewidth=width)
        ax.axvline(r.ceiling, color=colour, linestyle="--", linewidth=1.2)
    ax.set_title(f"{dataset}, σ = {sigma:g}: certified accuracy by smoothing stage\n"
                 "each line's radius is in its own stage's space — not comparable across lines", fontsize=11)
    ax.set_xlabel("L2 radius r in the stage's own space (waveform samples / |rfft| magnitudes / z-scored features)")
    ax.set_ylabel("certified accuracy (fraction of test points)")
    ax.set_xlim(0, xmax)
    ax.grid(True, alpha=0.4)
    finish_axes(ax, sequential=any(r.table_radii for r in rows))
    return save_figure(fig, path)


def figure_waveform_equivalent(dataset: str, rows: Sequence[ConfigResult], lipschitz: Mapping[str, float],
                               path: Path) -> Path:
    """Waveform-space guarantees on a log radius axis: waveform stage as is, magspec through r / L."""
    fig, ax = new_figure()
    direct = [waveform_bound(r.stage) is WaveformBound.DIRECT for r in rows]
    scales = [1.0 if d else 1.0 / lipschitz[r.config_hash] for r, d in zip(rows, direct, strict=True)]
    ceilings = [r.ceiling * s for r, s in zip(rows, scales, strict=True)]
    grid = np.geomspace(min(ceilings) * 1e-2, max(ceilings) * 1.5, 800)

    def how(r: ConfigResult) -> str:
        if waveform_bound(r.stage) is WaveformBound.DIRECT:
            return f"{r.stage} stage, σ = {r.sigma:g}"
        return f"{r.stage} stage, r / L (L = {lipschitz[r.config_hash]:.2f}), σ = {r.sigma:g}"

    labels = distinct_names(rows, base=how)
    for colour, width, r, d, s, label in zip(colours(len(rows)), line_widths(len(rows)), rows, direct, scales,
                                             labels, strict=True):
        plot_config(ax, r, grid, label, scale=s, color=colour, linewidth=width, linestyle="-" if d else "-.")
        ax.axvline(r.ceiling * s, color=colour, linestyle="--", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlim(grid[0], grid[-1])  # a sequential config's top table radii may lie far beyond every ceiling
    unbounded = ", ".join(e.name for e in STAGE_REGISTRY.values() if e.waveform_bound is WaveformBound.NONE)
    ax.set_title(f"{dataset}: guarantees in waveform space\n({unbounded} certificates have no waveform equivalent)",
                 fontsize=11)
    ax.set_xlabel("waveform L2 radius (samples, full scale 1; log scale)")
    ax.set_ylabel("certified accuracy (fraction of test points)")
    ax.grid(True, which="both", alpha=0.3)
    finish_axes(ax, sequential=any(r.table_radii for r in rows))
    return save_figure(fig, path)
