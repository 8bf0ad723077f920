"""The Markdown report of one or more sweeps: what was run, certified accuracy tables and figures, and what
each certificate means (Park et al. 2026's reporting items), all read back from the sweeps' files.

``write_report(sweep_dirs)`` writes ``report.md`` with PNG figures beside it (default ``<first sweep>/report/``):

- the runs it drew on (config directories with config hash, code versions, checkpoint digest, seed) and the
  config directories it skipped because they are not reduced yet;
- one certified-accuracy table per (dataset, smoothing stage), rows sigma, columns radii, recomputed from
  certificates.tsv, with the best value of each column in bold, each row's ceiling sigma Phi^-1(alpha^(1/n))
  and its n;
- figures: certified accuracy vs radius per stage (a line per sigma, dashed ceilings), per sigma (a line per
  stage; radii live in different spaces), and waveform-equivalent guarantees (waveform stage, and the
  magnitude-spectrogram stage through its Lipschitz bound);
- per config: certified object, perturbation location, gain policy, post-noise modification, raw radius,
  SNR-equivalent, and the waveform guarantee it implies (directly; through r / L; or none);
- clean accuracy of the base classifier, smoothed accuracy and abstentions.

The magnitude spectrogram is a waveform guarantee through L, the operator norm of the linear map
waveform -> complex rfft of pre-emphasized frames (|.| is 1-Lipschitz), computed by power iteration
(:func:`lipschitz_waveform_to_magspec`) and cached in the report directory.
"""

from __future__ import annotations

import datetime
import math
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiocert.checkpoint import build_frontend
from audiocert.frontend import STAGES, DeepSpeakerFrontend
from audiocert.provenance import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    code_version,
    file_digest,
    read_json,
    stable_hash,
)
from audiocert.reducer import REPORT_RADII, inventory, read_certificates
from audiocert.shards import PLAN_FILE
from audiocert.statistics import ABSTAIN, certified_accuracy, max_certifiable_radius
from audiocert.status import config_dirs

REPORT_FILE = "report.md"
LIPSCHITZ_CACHE = "lipschitz.json"
# Power iteration approaches L from below; waveform radii divide by L raised by this margin so they stay
# conservative (the converged estimate at 25,840 samples is within 3e-7 of an independent eigsh value).
LIPSCHITZ_MARGIN = 1e-3


def lipschitz_upper(entry: Mapping[str, Any]) -> float:
    return float(entry["lipschitz"]) * (1.0 + LIPSCHITZ_MARGIN)
LIPSCHITZ_METHOD = "power iteration on A^T A (autograd vjp), float64, v0 = sine-enveloped DC+Nyquist + 1% noise"

STAGE_NAMES = {"waveform": "waveform", "magspec": "magnitude spectrogram", "mfbe": "normalized Mel-filterbank energies"}
STAGE_UNITS = {
    "waveform": "waveform samples, full scale 1",
    "magspec": "|rfft| magnitude of pre-emphasized frames",
    "mfbe": "per-frame z-scored Mel energies",
}
DPI = 120


# ----------------------------------------------------------------------------------------------------------
# The Lipschitz constant of waveform -> magnitude spectrogram
# ----------------------------------------------------------------------------------------------------------
def _stft_linear(frontend: DeepSpeakerFrontend, waveform: torch.Tensor) -> torch.Tensor:
    """The linear part of waveform -> magspec: complex rfft of the pre-emphasized, framed waveform."""
    return torch.fft.rfft(frontend.frame(frontend.preemphasize(waveform)), n=frontend.nfft)


def _gram(frontend: DeepSpeakerFrontend, v: torch.Tensor) -> torch.Tensor:
    """A^T A v for A = waveform -> (real, imag) of the framed rfft, with the adjoint from autograd (a vjp)."""
    with torch.inference_mode(False), torch.enable_grad():
        v = v.detach().clone().requires_grad_(True)
        y = torch.view_as_real(_stft_linear(frontend, v))
        (g,) = torch.autograd.grad(y, v, grad_outputs=y.detach())
    return g.detach()


def lipschitz_power_iteration(
    frontend: DeepSpeakerFrontend, num_samples: int, iterations: int = 20000, tol: float = 1e-6, seed: int = 0,
) -> dict[str, Any]:
    """Power iteration for L = ||A||_2; returns {"lipschitz", "iterations", "converged", "last_change"}.

    Stops when the estimate of L changes by at most ``tol`` relative between two iterations. The start
    vector is a sine-enveloped mix of the DC and Nyquist patterns (where the top singular vectors of this
    map lie: pre-emphasis boosts high frequencies, rectangular frames put whole-frame energy into the DC and
    Nyquist bins) plus 1% seeded Gaussian noise, so that no direction is missed; from a white start the
    near-degenerate top of the spectrum (it is almost shift-invariant) takes thousands of iterations.
    The Rayleigh quotient approaches L from below.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be positive")
    n = torch.arange(num_samples, dtype=torch.float64)
    envelope = torch.sin(math.pi * (n + 0.5) / num_samples)
    structured = envelope * (1.0 + torch.cos(math.pi * n))  # DC + Nyquist (alternating signs)
    noise = torch.randn(num_samples, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    v = structured / structured.norm() + 0.01 * noise / noise.norm()
    v = v / v.norm()
    frontend = frontend.to(torch.device("cpu"))
    estimate, previous, change = 0.0, None, math.inf
    for iteration in range(1, int(iterations) + 1):
        w = _gram(frontend, v)
        estimate = math.sqrt(max(float(v @ w), 0.0))
        norm = float(w.norm())
        if norm == 0.0:
            return {"lipschitz": 0.0, "iterations": iteration, "converged": True, "last_change": 0.0}
        v = w / norm
        if previous is not None:
            change = abs(estimate - previous) / max(estimate, 1e-300)
            if change <= tol:
                return {"lipschitz": estimate, "iterations": iteration, "converged": True, "last_change": change}
        previous = estimate
    return {"lipschitz": estimate, "iterations": int(iterations), "converged": False, "last_change": change}


def lipschitz_waveform_to_magspec(
    frontend: DeepSpeakerFrontend, num_samples: int, iterations: int = 20000, tol: float = 1e-6,
) -> float:
    """Lipschitz constant (L2 -> L2) of waveform (num_samples) -> magnitude spectrogram of ``frontend``.

    |.| is 1-Lipschitz, so L is the operator norm of the linear map waveform -> complex rfft of pre-emphasized
    frames (the frontend's own preemphasize / frame ops and its nfft), computed by power iteration on A^T A
    in float64 to ``tol`` relative. A magspec certificate of radius r then holds for every waveform
    perturbation of L2 norm < r / L. About 69.08 for 25,840 samples of the Deep Speaker frontend.
    """
    result = lipschitz_power_iteration(frontend, num_samples, iterations=iterations, tol=tol)
    if not result["converged"]:
        warnings.warn(f"power iteration for the magspec Lipschitz constant did not converge to {tol:g} in "
                      f"{iterations} iterations (last relative change {result['last_change']:.2e})",
                      RuntimeWarning, stacklevel=2)
    return float(result["lipschitz"])


def cached_lipschitz(cache_path: Path, frontend_cfg: Mapping[str, Any] | None, num_samples: int,
                     tol: float = 1e-6) -> dict[str, Any]:
    """L for (crop length, frontend parameters), from ``cache_path`` (JSON) or computed and stored there."""
    params = dict(frontend_cfg or {})
    key = stable_hash({"num_samples": int(num_samples), "frontend": params, "tol": tol, "method": LIPSCHITZ_METHOD})
    cache = read_json(cache_path) if cache_path.is_file() else {}
    if key in cache:
        return cache[key]
    frontend = build_frontend(params)
    result = lipschitz_power_iteration(frontend, int(num_samples), tol=tol)
    if not result["converged"]:
        warnings.warn(f"magspec Lipschitz constant for {num_samples} samples did not converge to {tol:g}",
                      RuntimeWarning, stacklevel=2)
    entry = {**result, "num_samples": int(num_samples), "frontend": params, "tol": tol, "method": LIPSCHITZ_METHOD}
    cache[key] = entry
    atomic_write_json(cache_path, cache)
    return entry


# ----------------------------------------------------------------------------------------------------------
# Reading a sweep
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ConfigResult:
    """One config directory as the report sees it (complete: reduced, with certificates)."""

    directory: Path
    sweep_dir: Path
    label: str
    config_hash: str
    dataset: str
    stage: str
    sigma: float
    n0: int
    n: int
    alpha: float
    seed: int
    checkpoint: str
    checkpoint_digest: str
    plan_code_version: str
    reducer_code_version: str | None
    config: dict[str, Any]
    complete: bool
    why_incomplete: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    radii: np.ndarray = field(default_factory=lambda: np.zeros(0))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    predict: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    predictions: list[tuple[int, int, int, int]] | None = None

    @property
    def ceiling(self) -> float:
        return max_certifiable_radius(self.sigma, self.n, self.alpha)

    @property
    def certified(self) -> np.ndarray:
        """Points predicted correctly with a positive radius (what the reducer's medians run over)."""
        return self.correct & (self.radii > 0)

    @property
    def crop_samples(self) -> int:
        return int(self.config["dataset"]["crop_samples"])

    @property
    def short_name(self) -> str:
        return f"{self.label}-{self.config_hash[:8]}"


def load_config_result(config_dir: Path, sweep_dir: Path) -> ConfigResult:
    plan = read_json(config_dir / PLAN_FILE)
    q, config = plan["quantities"], plan["config"]
    provenance = read_json(config_dir / "provenance.json") if (config_dir / "provenance.json").is_file() else {}
    result = ConfigResult(
        directory=config_dir, sweep_dir=sweep_dir, label=plan["label"], config_hash=plan["config_hash"],
        dataset=str(config["dataset"]["name"]), stage=str(q["stage"]), sigma=float(q["sigma"]), n0=int(q["n0"]),
        n=int(q["n"]), alpha=float(q["alpha"]), seed=int(provenance.get("seed", q["seed"])),
        checkpoint=str(provenance.get("checkpoint", plan["checkpoint"])),
        checkpoint_digest=str(provenance.get("checkpoint_digest", q["checkpoint_digest"])),
        plan_code_version=str(provenance.get("plan_code_version", plan["code_version"])),
        reducer_code_version=provenance.get("reducer_code_version"), config=config, complete=False,
    )
    missing = [name for name in ("certificates.tsv", "summary.json") if not (config_dir / name).is_file()]
    if missing:
        try:
            found = inventory(config_dir, plan)
            shards = f"{len(found.records)}/{len(plan['shards'])} shards present"
        except Exception as error:  # a report must not fail on a half-written sweep
            shards = f"shards unreadable ({error.__class__.__name__})"
        result.why_incomplete = f"not reduced (no {', '.join(missing)}; {shards})"
        return result
    rows = read_certificates(config_dir / "certificates.tsv")
    result.radii = np.array([r["radius"] for r in rows], dtype=float)
    result.correct = np.array([r["correct"] for r in rows], dtype=bool)
    result.predict = np.array([r["predict"] for r in rows], dtype=int)
    result.summary = read_json(config_dir / "summary.json")
    if (config_dir / "predictions.tsv").is_file():
        lines = (config_dir / "predictions.tsv").read_text().splitlines()[1:]
        result.predictions = [tuple(int(v) for v in line.split("\t")) for line in lines if line.strip()]
    result.complete = True
    return result


def load_sweeps(sweep_dirs: Sequence[str | Path]) -> list[ConfigResult]:
    results = []
    for sweep_dir in sweep_dirs:
        sweep_dir = Path(sweep_dir)
        for config_dir in config_dirs(sweep_dir):
            results.append(load_config_result(config_dir, sweep_dir))
    return results


def checkpoint_clean_accuracy(path: str, expected_digest: str) -> dict[str, Any]:
    """Clean test accuracy recorded in a checkpoint's metrics, and whether the file still has its digest.

    A file whose digest changed holds another model now (retrained in place): its certificates are
    ``superseded`` and the file's accuracy is not theirs.
    """
    p = Path(path)
    if not p.is_file():
        return {"accuracy": None, "note": "checkpoint file not found", "superseded": False}
    if file_digest(p) != expected_digest:
        return {"accuracy": None, "note": "superseded: the checkpoint file has changed since certification",
                "superseded": True}
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        accuracy = state.get("metrics", {}).get("clean_test_accuracy")
    except Exception as error:  # a corrupt checkpoint should not stop the report
        return {"accuracy": None, "note": f"unreadable checkpoint ({error.__class__.__name__})", "superseded": False}
    note = "" if accuracy is not None else "no clean_test_accuracy in its metrics"
    return {"accuracy": None if accuracy is None else float(accuracy), "note": note, "superseded": False}


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------
def fmt_radius(r: float) -> str:
    return f"{r:g}"


def fmt_float(x: float | None, spec: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def row_labels(rows: Sequence[ConfigResult]) -> list[str]:
    """'σ = 0.05', with n / alpha / hash appended only where rows of one table would otherwise look alike."""
    labels = [f"σ = {r.sigma:g}" for r in rows]
    for extra in (lambda r: f"n = {r.n}", lambda r: f"α = {r.alpha:g}", lambda r: r.config_hash[:8]):
        counts = defaultdict(int)
        for label in labels:
            counts[label] += 1
        labels = [f"{label}, {extra(r)}" if counts[label] > 1 else label for label, r in zip(labels, rows, strict=True)]
    return labels


def accuracy_table(rows: Sequence[ConfigResult], radii: Sequence[float]) -> tuple[str, list[list[float]]]:
    """Markdown table rows sigma x radii (+ ceiling, n, points); best of each column bold (all if tied)."""
    values = [[certified_accuracy(r.radii, r.correct, radius) for radius in radii] for r in rows]
    best = [max(column) for column in zip(*values, strict=True)] if values else []
    header = "| | " + " | ".join(f"r = {fmt_radius(x)}" for x in radii) + " | ceiling | n | points |"
    lines = [header, "|---" * (len(radii) + 4) + "|"]
    for label, r, row in zip(row_labels(rows), rows, values, strict=True):
        cells = [f"**{v:.3f}**" if best[j] > 0 and v == best[j] else f"{v:.3f}" for j, v in enumerate(row)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r.ceiling:.4g} | {r.n} | {r.radii.size} |")
    return "\n".join(lines), values


def group_by(results: Sequence[ConfigResult], key) -> dict[Any, list[ConfigResult]]:
    groups: dict[Any, list[ConfigResult]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return dict(groups)


def stage_order(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)


def sort_key(r: ConfigResult) -> tuple:
    return (r.dataset, stage_order(r.stage), r.sigma, r.n, r.alpha, r.label, r.config_hash)


# ----------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------
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


def finish_axes(ax) -> None:
    ax.set_ylim(-0.02, 1.02)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, ceiling_legend_handle()], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=9)


def ceiling_legend_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.3", linestyle="--", linewidth=1.2,
                  label="dashed: ceiling σ·Φ⁻¹(α^(1/n))\nof the line of the same colour")


def figure_per_stage(dataset: str, stage: str, rows: Sequence[ConfigResult], path: Path) -> Path:
    fig, ax = new_figure()
    xmax = 1.1 * max(r.ceiling for r in rows)
    grid = np.linspace(0.0, xmax, 800)
    labels = row_labels(rows)
    if len({r.n for r in rows}) > 1:
        labels = [label if "n = " in label else f"{label}, n = {r.n}" for label, r in zip(labels, rows, strict=True)]
    for colour, width, r, label in zip(colours(len(rows)), line_widths(len(rows)), rows, labels, strict=True):
        ax.plot(grid, curve(r.radii, r.correct, grid), color=colour, linewidth=width, label=label,
                drawstyle="steps-post")
        ax.axvline(r.ceiling, color=colour, linestyle="--", linewidth=1.2)
    ax.set_title(f"{dataset}: certified accuracy vs radius, smoothing at the {STAGE_NAMES.get(stage, stage)}")
    ax.set_xlabel(f"L2 radius r in {stage} space ({STAGE_UNITS.get(stage, 'stage units')})")
    ax.set_ylabel("certified accuracy (fraction of test points)")
    ax.set_xlim(0, xmax)
    ax.grid(True, alpha=0.4)
    finish_axes(ax)
    return save_figure(fig, path)


def figure_per_sigma(dataset: str, sigma: float, rows: Sequence[ConfigResult], path: Path) -> Path:
    fig, ax = new_figure()
    xmax = 1.1 * max(r.ceiling for r in rows)
    grid = np.linspace(0.0, xmax, 800)
    labels = [f"{r.stage}" + (f" (n = {r.n})" if len({x.n for x in rows}) > 1 else "") for r in rows]
    for colour, width, r, label in zip(colours(len(rows)), line_widths(len(rows)), rows, labels, strict=True):
        ax.plot(grid, curve(r.radii, r.correct, grid), color=colour, linewidth=width, label=label,
                drawstyle="steps-post")
        ax.axvline(r.ceiling, color=colour, linestyle="--", linewidth=1.2)
    ax.set_title(f"{dataset}, σ = {sigma:g}: certified accuracy by smoothing stage\n"
                 "each line's radius is in its own stage's space — not comparable across lines", fontsize=11)
    ax.set_xlabel("L2 radius r in the stage's own space (waveform samples / |rfft| magnitudes / z-scored features)")
    ax.set_ylabel("certified accuracy (fraction of test points)")
    ax.set_xlim(0, xmax)
    ax.grid(True, alpha=0.4)
    finish_axes(ax)
    return save_figure(fig, path)


def figure_waveform_equivalent(dataset: str, rows: Sequence[ConfigResult], lipschitz: Mapping[str, float],
                               path: Path) -> Path:
    """Waveform-space guarantees on a log radius axis: waveform stage as is, magspec through r / L."""
    fig, ax = new_figure()
    scale = {r.config_hash: (1.0 if r.stage == "waveform" else 1.0 / lipschitz[r.config_hash]) for r in rows}
    ceilings = [r.ceiling * scale[r.config_hash] for r in rows]
    grid = np.geomspace(min(ceilings) * 1e-2, max(ceilings) * 1.5, 800)
    for colour, width, r in zip(colours(len(rows)), line_widths(len(rows)), rows, strict=True):
        s = scale[r.config_hash]
        style = "-" if r.stage == "waveform" else "-."
        how = "waveform stage" if r.stage == "waveform" else f"magspec stage, r / L (L = {1 / s:.2f})"
        ax.plot(grid, curve(r.radii * s, r.correct, grid), color=colour, linewidth=width, linestyle=style,
                label=f"{how}, σ = {r.sigma:g}", drawstyle="steps-post")
        ax.axvline(r.ceiling * s, color=colour, linestyle="--", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_title(f"{dataset}: guarantees in waveform space\n(mfbe certificates have no waveform equivalent)",
                 fontsize=11)
    ax.set_xlabel("waveform L2 radius (samples, full scale 1; log scale)")
    ax.set_ylabel("certified accuracy (fraction of test points)")
    ax.grid(True, which="both", alpha=0.3)
    finish_axes(ax)
    return save_figure(fig, path)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


# ----------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------
def meaning_section(r: ConfigResult, clean: Mapping[str, Any], lipschitz: Mapping[str, Any] | None) -> list[str]:
    semantics = r.summary.get("semantics", {})
    certified = r.certified
    raw = float(np.median(r.radii[certified])) if certified.any() else None
    snr = r.summary.get("median_snr_db")
    units = STAGE_UNITS.get(r.stage, "stage units")
    lines = [f"### {r.label} (`{r.config_hash[:8]}`)", ""]
    lines.append(f"- **Certified object:** {semantics.get('certified_object', r.stage)}")
    lines.append(f"- **Perturbation location:** {semantics.get('perturbation_location', r.stage)}")
    lines.append(f"- **Gain policy:** {semantics.get('gain_policy', 'not recorded')}")
    lines.append(f"- **Post-noise modification:** {semantics.get('post_noise_modification', 'not recorded')}")
    lines.append(f"- **Radius norm:** {semantics.get('radius_norm', 'L2 over the stage representation')}")
    if raw is None:
        lines.append(f"- **Raw radius:** no point certified (ceiling {r.ceiling:.4g} at n = {r.n}, α = {r.alpha:g})")
    else:
        lines.append(f"- **Raw radius:** median {raw:.4g} ({units}) over the {int(certified.sum())} certified "
                     f"point(s) of {r.radii.size}; ceiling {r.ceiling:.4g} at n = {r.n}, α = {r.alpha:g}")
    norm = r.summary.get("median_stage_norm")
    snr_text = "n/a (no point certified)" if snr is None else f"{snr:.1f} dB"
    lines.append(f"- **SNR-equivalent of the radius:** median 20 log10(‖x_{r.stage}‖ / r) = {snr_text} "
                 f"(median ‖x_{r.stage}‖ = {fmt_float(norm)})")
    if r.stage == "waveform":
        lines.append("- **Waveform guarantee:** direct — the smoothed prediction is constant for every waveform "
                     "perturbation of L2 norm below the radius"
                     + ("" if raw is None else f" (median {raw:.4g})") + ".")
    elif r.stage == "magspec" and lipschitz is not None:
        L = lipschitz_upper(lipschitz)
        text = (f"- **Waveform guarantee:** through the Lipschitz constant L = {L:.5f} of waveform -> magnitude "
                f"spectrogram for {r.crop_samples:,}-sample crops (operator norm of the linear map waveform -> "
                "complex rfft of pre-emphasized frames; |.| is 1-Lipschitz; power iteration, "
                f"{lipschitz['iterations']} iterations, converged to {lipschitz['tol']:g} relative at "
                f"{float(lipschitz['lipschitz']):.5f}, which approaches L from below, raised by {LIPSCHITZ_MARGIN:g} "
                "relative to stay conservative). A magspec radius r covers every waveform perturbation of L2 norm "
                "below r / L")
        if raw is not None:
            text += f": waveform radius r / L = {raw / L:.4g} (median over certified points)"
        lines.append(text + ".")
    elif r.stage == "mfbe":
        lines.append("- **Waveform guarantee:** none — the guarantee holds in feature space only: the per-frame "
                     "normalization has no Lipschitz bound (it amplifies quiet frames without limit), so no "
                     "waveform radius follows.")
    else:
        lines.append("- **Waveform guarantee:** not known for this stage.")
    accuracy = clean.get("accuracy")
    abstain = float(np.mean(r.predict == ABSTAIN)) if r.predict.size else float("nan")
    lines.append(f"- **Accuracy:** base classifier clean {fmt_float(accuracy, '.3f')}; smoothed (CERTIFY) "
                 f"{float(r.correct.mean()):.3f}; abstentions {abstain:.3f}")
    lines.append("")
    return lines


def write_report(sweep_dirs: list[Path], output: Path | None = None, radii: Sequence[float] | None = None,
                 include_superseded: bool = False) -> Path:
    """Write ``report.md`` and its figures for the given sweep directories; returns the report's path.

    Configs certified with a checkpoint file that has changed since (a model retrained in place) are listed
    as superseded and left out of the tables and figures unless ``include_superseded``.
    """
    sweep_dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else sweep_dirs)]
    if not sweep_dirs:
        raise ValueError("write_report needs at least one sweep directory")
    radii = tuple(float(x) for x in (radii or REPORT_RADII))
    output = Path(output) if output is not None else sweep_dirs[0] / "report"
    output.mkdir(parents=True, exist_ok=True)
    results = load_sweeps(sweep_dirs)
    clean = {}  # (checkpoint path, digest) -> its clean accuracy and whether it is superseded
    for r in results:
        if (r.checkpoint, r.checkpoint_digest) not in clean:
            clean[r.checkpoint, r.checkpoint_digest] = checkpoint_clean_accuracy(r.checkpoint, r.checkpoint_digest)
    incomplete = [r for r in results if not r.complete]
    def left_out(r: ConfigResult) -> bool:
        return not include_superseded and clean[r.checkpoint, r.checkpoint_digest]["superseded"]

    superseded = [r for r in results if r.complete and left_out(r)]
    complete = sorted((r for r in results if r.complete and not left_out(r)), key=sort_key)
    lipschitz = {r.config_hash: cached_lipschitz(output / LIPSCHITZ_CACHE, r.config.get("frontend"), r.crop_samples)
                 for r in complete if r.stage == "magspec"}

    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = ["# Certification report", "",
             f"Generated {now} by audiocert {code_version()} from {len(results)} config(s) in "
             f"{len(sweep_dirs)} sweep(s) ({len(complete) + len(superseded)} reduced, {len(incomplete)} incomplete, "
             f"{len(superseded)} superseded).", ""]
    lines += ["Sweep directories:", ""] + [f"- `{d}`" for d in sweep_dirs] + [""]

    # --- runs ---
    lines += ["## Runs", "",
              "| config | stage | σ | n0 | n | α | points | config hash | code version (plan / reducer) | "
              "checkpoint digest | seed | directory |", "|---" * 12 + "|"]
    for r in sorted(results, key=sort_key):
        points = str(r.radii.size) if r.complete else "incomplete"
        lines.append(f"| {r.label} | {r.stage} | {r.sigma:g} | {r.n0} | {r.n} | {r.alpha:g} | {points} | "
                     f"`{r.config_hash}` | {r.plan_code_version} / {r.reducer_code_version or '-'} | "
                     f"`{r.checkpoint_digest}` | {r.seed} | `{r.directory}` |")
    lines.append("")
    checkpoints = group_by(results, lambda r: (r.checkpoint, r.checkpoint_digest))
    lines += ["Base classifiers (clean accuracy on the test split, from the checkpoint's metrics):", "",
              "| checkpoint | digest | clean test accuracy | configs | note |", "|---|---|---|---|---|"]
    for (path, digest), rows in checkpoints.items():
        info = clean[path, digest]
        lines.append(f"| `{path}` | `{digest}` | {fmt_float(info['accuracy'], '.4f')} | {len(rows)} | "
                     f"{info['note'] or '-'} |")
    lines.append("")
    if superseded:
        lines += ["### Superseded configs (not in the tables or figures)", "",
                  "Their checkpoint file has changed since they were certified, so they certify a model that is no "
                  "longer there. `audiocert report --include-superseded` shows them anyway.", ""]
        lines += [f"- **superseded** {r.label} (`{r.config_hash[:8]}`, checkpoint digest `{r.checkpoint_digest}`, "
                  f"`{r.directory}`)" for r in sorted(superseded, key=sort_key)]
        lines.append("")
    if incomplete:
        lines += ["### Incomplete configs (skipped)", ""]
        lines += [f"- **incomplete** {r.label} (`{r.config_hash[:8]}`, `{r.directory}`): {r.why_incomplete}"
                  for r in incomplete]
        lines.append("")

    # --- tables ---
    lines += ["## Certified accuracy", "",
              "Fraction of the certified test points whose smoothed prediction is correct with certified L2 radius "
              "≥ r (abstentions count as wrong), recomputed from each config's certificates.tsv. The best value of "
              "each column is in bold (all of them when tied; none when nothing is certified). *ceiling* is the "
              "largest radius n samples can certify, σ·Φ⁻¹(α^(1/n)); radii are L2 norms in the smoothing stage's "
              "own space.", ""]
    by_table = group_by(complete, lambda r: (r.dataset, r.stage))
    for (dataset, stage), rows in sorted(by_table.items(), key=lambda kv: (kv[0][0], stage_order(kv[0][1]))):
        table, _ = accuracy_table(rows, radii)
        lines += [f"### {dataset}, {STAGE_NAMES.get(stage, stage)} ({stage})", "", table, ""]
        ns, alphas, n0s = sorted({r.n for r in rows}), sorted({r.alpha for r in rows}), sorted({r.n0 for r in rows})
        if len(ns) > 1 or len(alphas) > 1:
            differ = ([f"n ({', '.join(map(str, ns))})"] if len(ns) > 1 else []) + (
                [f"α ({', '.join(f'{a:g}' for a in alphas)})"] if len(alphas) > 1 else [])
            lines += [f"**Note:** the configs of this table differ in {' and '.join(differ)}: their ceilings "
                      "(and, for α, their confidence) differ, so compare rows with care.", ""]
        else:
            lines += [f"All rows: n0 = {', '.join(map(str, n0s))}, n = {ns[0]}, α = {alphas[0]:g}; radii in "
                      f"{stage} space ({STAGE_UNITS.get(stage, 'stage units')}).", ""]

    # --- figures ---
    figures = []
    for (dataset, stage), rows in sorted(by_table.items(), key=lambda kv: (kv[0][0], stage_order(kv[0][1]))):
        path = figure_per_stage(dataset, stage, rows, output / f"certified_{slug(dataset)}_{stage}.png")
        figures.append((path, f"{dataset}: certified accuracy vs L2 radius, smoothing at the "
                              f"{STAGE_NAMES.get(stage, stage)}, one line per σ; dashed vertical lines mark each "
                              f"σ's ceiling σ·Φ⁻¹(α^(1/n)) in the same colour. Radii in {stage} space "
                              f"({STAGE_UNITS.get(stage, 'stage units')})."))
    for (dataset, sigma), rows in sorted(group_by(complete, lambda r: (r.dataset, r.sigma)).items()):
        if len({r.stage for r in rows}) < 2:
            continue  # one stage at this sigma: its per-stage figure already shows it
        rows = sorted(rows, key=sort_key)
        path = figure_per_sigma(dataset, sigma, rows, output / f"certified_{slug(dataset)}_sigma{sigma:g}.png")
        figures.append((path, f"{dataset}, σ = {sigma:g}: certified accuracy vs radius for each smoothing stage. "
                              "The radii are in different spaces (waveform samples, |rfft| magnitudes, z-scored Mel "
                              "energies), so the lines compare how far each stage's own guarantee reaches, not "
                              "robustness to the same perturbation."))
    for dataset, rows in sorted(group_by([r for r in complete if r.stage in ("waveform", "magspec")],
                                         lambda r: r.dataset).items()):
        scale = {h: lipschitz_upper(e) for h, e in lipschitz.items()}
        if all(r.stage == "waveform" or scale.get(r.config_hash, 0) > 0 for r in rows):
            rows = sorted(rows, key=sort_key)
            path = figure_waveform_equivalent(dataset, rows, scale, output / f"waveform_equivalent_{slug(dataset)}.png")
            figures.append((path, f"{dataset}: the guarantees that hold in waveform space, on a log radius axis: "
                                  "waveform-stage certificates as they are, magnitude-spectrogram certificates "
                                  "divided by the Lipschitz constant L of waveform -> magnitude spectrogram; dashed "
                                  "lines are the ceilings. Normalized-filterbank certificates have no waveform "
                                  "equivalent."))
    if figures:
        lines += ["## Figures", ""]
        for number, (path, caption) in enumerate(figures, start=1):
            lines += [f"![Figure {number}]({path.name})", "", f"*Figure {number}: {caption}*", ""]

    # --- meaning ---
    lines += ["## What each certificate means", "",
              "The reporting items of Park et al. (2026): what is certified, where the noise enters, what is done to "
              "the signal before and after it, the raw radius, its SNR-equivalent 20 log10(‖x_stage‖ / r), and the "
              "waveform guarantee it implies.", ""]
    for r in complete:
        lines += meaning_section(r, clean[r.checkpoint, r.checkpoint_digest], lipschitz.get(r.config_hash))

    # --- accuracy ---
    lines += ["## Accuracy and abstentions", "",
              "Clean: the base classifier f on clean test crops (from its checkpoint's metrics, the whole test "
              "split). Smoothed: CERTIFY's prediction correct (certificates.tsv). PREDICT: the smoothed classifier's "
              "prediction with its own abstention test (predictions.tsv).", "",
              "| config | clean accuracy (f) | smoothed accuracy | abstain | PREDICT accuracy | PREDICT abstain | "
              "points |", "|---|---|---|---|---|---|---|"]
    for r in complete:
        info = clean[r.checkpoint, r.checkpoint_digest]
        abstain = float(np.mean(r.predict == ABSTAIN))
        if r.predictions:
            p_acc = fmt_float(float(np.mean([p[3] for p in r.predictions])), ".3f")
            p_abs = fmt_float(float(np.mean([p[2] == ABSTAIN for p in r.predictions])), ".3f")
        else:
            p_acc = p_abs = "n/a"
        lines.append(f"| {r.label} | {fmt_float(info.get('accuracy'), '.3f')} | {float(r.correct.mean()):.3f} | "
                     f"{abstain:.3f} | {p_acc} | {p_abs} | {r.radii.size} |")
    lines.append("")
    return atomic_write_text(output / REPORT_FILE, "\n".join(lines))
