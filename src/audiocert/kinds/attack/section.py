"""The report's section on attacks: certified accuracy (a lower bound) beside the empirical robust accuracy of g and
of f under the attack (upper bounds), per config, with the consistency check and the smallest successful attack.

Built from what ``audiocert attack`` reduced (``<config>/attack-*/summary.json``, ``robust.csv``, the attacked
example) and the certification's certificates; one of the sections :func:`audiocert.report.write_report`
writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from audiocert.reporting.context import ReportContext
from audiocert.reporting.figures import curve, new_figure, save_figure
from audiocert.reporting.names import cell, fmt_float, output_file, slug, table_opening
from audiocert.reporting.results import ConfigResult

INTRO = (
    "Certified accuracy at r is a lower bound on the accuracy of the smoothed classifier g against every "
    "perturbation of L2 norm below r (each certificate holds with probability >= 1 - alpha); the attack gives an "
    "upper bound. For each budget eps, SmoothAdv's PGD (Salman et al. 2019) maximises -log of g's soft probability "
    "of the true class, estimated from m noise draws per step, over ||delta||_2 <= eps (T normalised steps of "
    "2 eps / T, projection, restarts), with noise from the attack's own seeded streams. The attacked input is then "
    "judged by PREDICT of g on the prediction stream (never the attack's), continued on inputs it cannot decide: "
    "looks at n, 2n, 4n, ... up to judge.max_n samples, each at level alpha / looks (a union bound, so the judge "
    "names a class other than g's with probability <= alpha). Each (point, budget) is *held* (the label), "
    "*flipped* (another class: broken, up to alpha) or *undecided* (no decision at the last look). An abstention "
    "is not a break: near the decision boundary no finite judge can tell g's vote, so only flips count against g. "
    "Hence certified <= true robust accuracy of g <= held + undecided; the shaded band is the undecided share. "
    "The same PGD on f alone (no noise) shows what smoothing buys. A certified point (class c, radius R) whose "
    "attacked input at eps < R is judged another class contradicts its certificate; honest certificates allow "
    "about alpha N of N certified points. Brackets: 95% Clopper-Pearson intervals over the attacked points.")


def robustness_section(kind: Any, context: ReportContext) -> list[str]:
    """Markdown lines (and figures and example files written into the output directory) for every complete config
    with an attack (``kind``: the attack kind, whose reduced configs it reads)."""
    output = context.output
    entries, damaged = kind.report_entries(context), kind.damaged_lines(context)
    if not entries:
        return damaged
    lines = table_opening("## Certified vs empirical robustness", INTRO, (
        "config", "attack space", "points", "budgets", "T x m x restarts", "judge n to max_n",
        "contradicting / certified points (α)",
        "passes / point", "non-finite gradients"))
    for r, _, s in entries:
        settings = s["settings"]
        lines.append(f"| {cell(r.name)} | {s['space']} | {s['points']} | {len(s['eps'])} | "
                     f"{settings['steps']} x {settings['samples']} x {settings['restarts']} | {settings['n']} to "
                     f"{settings.get('judge_max_n') or settings['n']} | "
                     f"{s['contradictions']} of {s['certified_points'] if s['certified_points'] is not None else '-'} "
                     f"({s['alpha']:g}) | {s['passes_per_point']:,.0f} | "
                     f"{s['nonfinite_gradients']} |")
    lines.append("")
    for r, directory, s in entries:
        lines += config_section(r, directory, s, output)
    return lines + damaged


def config_section(r: ConfigResult, directory: Path, s: dict[str, Any], output: Path) -> list[str]:
    space = s["space"]
    units = "waveform samples" if space == "waveform" or s["stage"] == "waveform" else f"{s['stage']} units"
    lines = [f"### {cell(r.name)}: attack in the {space} space", ""]
    figure = output_file(output, f"robustness_{slug(r.short_name)}_{slug(space)}.png")
    certified_note = robustness_figure(r, s, figure)
    lines += [f"![Certified vs empirical: {r.name}, {space}]({figure.name})", "",
              f"*Certified accuracy (black line: a lower bound{certified_note}), the upper bound held + undecided "
              f"under attack (red markers; the shaded band is the undecided share) and f's robust accuracy "
              f"(blue) against the L2 budget in {units}; {s['comparison']}.*",
              ""]
    lines += outcome_table(s)
    if s.get("unjudged"):
        per_budget = ", ".join(f"{u:.3f}" for u in s["g_unjudged"])
        lines += [f"**{s['unjudged']} (point, budget) pair(s) were not judged: the attacked input was not finite "
                  f"(per budget {per_budget}). They show nothing broken, so they count in the upper bound; "
                  "attack.tsv marks them `unjudged`.**", ""]
    if s.get("certified_accuracy") is None:
        why = s["certificates"] if "not reduced" in s["certificates"] else s["comparison"]
        lines += [f"Certified accuracy: {why}.", ""]
    lines += consistency_lines(s)
    example = s.get("example")
    if example:
        copied = copy_example(directory, example, output, f"attack_{slug(r.short_name)}_{slug(space)}")
        audio = (f"audio: [clean]({copied['clean_audio']})" + (f", [attacked]({copied['attacked_audio']})"
                 if "attacked_audio" in copied else "") + f" ({example['audio']})")
        lines += [f"Smallest successful attack on g: point {example['idx']} (label {example['label']}) at eps = "
                  f"{example['eps']:.4g} (||delta||_2 = {example['delta_l2']:.4g}); {audio}.", "",
                  f"![attacked example]({copied['image']})", ""]
    else:
        lines += ["No attack on g succeeded at these budgets (or no attacked example was kept).", ""]
    return lines


def _rate(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def outcome_table(s: dict[str, Any]) -> list[str]:
    """Per budget: the certified lower bound, the upper bound held + undecided, and the judge's outcomes."""
    lines = ["| eps | certified accuracy (lower bound) | held + undecided (upper bound) | held | undecided | flipped "
             "| robust accuracy of f |", "|---|---|---|---|---|---|---|"]
    if s.get("g_clean_accuracy") is not None:
        lines.append(f"| 0 (clean, PREDICT) | - | {s['g_clean_accuracy']:.3f} | - | - | - | - |")
    certified, f_values = s.get("certified_accuracy"), s.get("f_robust_accuracy")
    for k, eps in enumerate(s["eps"]):
        lower = _rate(None if certified is None else certified[k],
                      None if certified is None else (s.get("certified_interval") or [None] * len(s["eps"]))[k])
        lines.append(f"| {eps:.4g} | {lower} | {_rate(s['g_robust_upper'][k], s['g_robust_upper_interval'][k])} | "
                     f"{s['g_held'][k]:.3f} | {s['g_undecided'][k]:.3f} | {s['g_flipped'][k]:.3f} | "
                     f"{fmt_float(None if f_values is None else f_values[k], '.3f')} |")
    return lines + [""]


def consistency_lines(s: dict[str, Any]) -> list[str]:
    """k of N certified points contradicting their certificate, against alpha N, with its p-value."""
    if s.get("certified_points") is None:
        return ["Consistency: not checked (no certificates of this config in its directory).", ""]
    n, k, alpha = s["certified_points"], s["contradictions"], s["alpha"]
    text = (f"{k} of {n} certified points contradict their certificate (an honest certificate allows about "
            f"alpha N = {alpha * n:.3g}; one-sided binomial p = {fmt_float(s['contradiction_p_value'], '.3g')})")
    if not k:
        return [f"Consistency: {text}.", ""]
    shown = "; ".join(f"point {c['idx']} (R = {c['radius']:.4g}, class {c['certified_class']}) at eps = "
                      f"{c['eps']:.4g} -> class {c['attacked_class']}" for c in s["contradiction_points"][:5])
    return [f"**Consistency: {text}**: {shown}.", ""]


def robustness_figure(r: ConfigResult, s: dict[str, Any], path: Path) -> str:
    """Certified curve in the attack space (where there is one) and the two empirical curves; returns a note
    on how the certified curve was placed."""
    fig, ax = new_figure(8.5, 4.6)
    eps = np.asarray(s["eps"], dtype=float)
    note = ""
    compared = s.get("eps_in_certificate_space")
    if compared is not None and r.radii.size:
        scale = float(np.asarray(compared)[0] / eps[0])  # 1 in the certificate's space, L for a waveform attack
        grid = np.linspace(0.0, 1.05 * max(float(eps.max()), r.ceiling / scale), 600)
        ax.plot(grid, curve(r.radii / scale, r.correct, grid), color="black", linewidth=2.0,
                label="certified accuracy (lower bound)")
        if scale != 1.0:
            note = f", radii divided by the proven bound L = {scale:.4f}"
    else:
        note = ": none in this space"
    ax.fill_between(eps, s["g_held"], s["g_robust_upper"], color="tab:red", alpha=0.18, step=None,
                    label="undecided (the judge abstained)")
    ax.plot(eps, s["g_robust_upper"], marker="o", color="tab:red", linewidth=1.5,
            label="held + undecided under attack (upper bound on g)")
    if s.get("f_robust_accuracy") is not None:
        ax.plot(eps, s["f_robust_accuracy"], marker="s", linestyle="--", color="tab:blue", linewidth=1.2,
                label="robust accuracy of f under attack")
    space = "waveform" if s["space"] == "waveform" else s["stage"]
    ax.set_xlabel(f"L2 budget / radius in {space} space")
    ax.set_ylabel("accuracy (fraction of attacked points)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{r.name}: certified vs empirical ({s['space']} space)", fontsize=11)
    ax.grid(True, alpha=0.4)
    ax.legend(fontsize=9)
    save_figure(fig, path)
    return note


def copy_example(directory: Path, example: dict[str, Any], output: Path, stem: str) -> dict[str, str]:
    """Copy the attacked example's files into the report directory (so the report stands alone)."""
    copied = {}
    for key, suffix in (("clean_audio", "_clean.wav"), ("attacked_audio", ".wav"), ("image", ".png")):
        if key in example and (directory / example[key]).is_file():
            target = output_file(output, f"{stem}{suffix}")
            shutil.copyfile(directory / example[key], target)
            copied[key] = target.name
    return copied
