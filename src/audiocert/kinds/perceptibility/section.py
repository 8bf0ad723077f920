"""The report's section on perceptibility: does a certified radius cover the perturbations a listener cannot hear?

Per config, from what ``audiocert perceptibility`` reduced (``<config>/perceptibility-*/summary.json``, psd.png, the
quietest attack's audio): the certified waveform radius against each point's imperceptible budget (coverage and the
ratio R_w / B), how audible perturbations of the grid's norms and of the certified norm are (random and
masking-shaped directions; PESQ-WB, STOI), the threshold-vs-PSD figure, and the quietest successful imperceptible
attack against the certified radius. One of the sections :func:`audiocert.report.write_report` writes.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audiocert.reporting.context import ReportContext
from audiocert.reporting.figures import colours, new_figure, save_figure
from audiocert.reporting.names import cell, fmt_float, output_file, slug, table_opening
from audiocert.reporting.results import ConfigResult

INTRO = (
    "What a listener cannot hear is modelled by the global masking threshold θ of the clean utterance (Qin, "
    "Carlini, Cottrell, Goodfellow & Raffel, ICML 2019, \"Imperceptible, Robust, and Targeted Adversarial Examples "
    "for Automatic Speech Recognition\"; the MPEG-1 psychoacoustic model 1 as in Lin & Abdulla 2015): a perturbation "
    "whose power spectral density stays under θ in every time-frequency bin (2048-point STFT, the clean utterance's "
    "loudest bin played at 96 dB) is inaudible under the model. A point's *imperceptible budget* B is the L2 norm of "
    "the largest such perturbation the construction finds (masking-shaped noise scaled to touch θ): every "
    "perceptibility claim below is relative to this model and this playback level. The largest imperceptible norm "
    "lies between B and a proven upper bound U (`tightness` = B / U). A certificate of waveform radius R_w (R at "
    "the waveform stage, R / L at magspec) covers the whole imperceptible set for sure when R_w ≥ U and cannot "
    "when R_w < B. *Certified* means here what it means in the certificate tables: a correct prediction with "
    "radius > 0; coverage, R_w / B and audibility at the certified radius are over those points, and a "
    "certificate of another class is counted apart.")

READING = (
    "How to read these numbers. *Coverage* is the fraction of all measured points (an abstention covers nothing) "
    "whose certificate contains every imperceptible perturbation: proven (R_w ≥ U) and at most (R_w ≥ B); "
    "R_w / B below 1 means an inaudible perturbation larger than the certificate exists (the budget's own). "
    "*Fraction audible* at a radius r: of the perturbations of L2 norm exactly r at the stage (random directions, "
    "and the masking-shaped direction, the least audible one the construction finds), the fraction whose PSD rises "
    "above θ somewhere, and by how many dB (median). A magnitude-spectrogram perturbation is heard through its "
    "resynthesis with the clean phase; `stage displacement` is the magspec displacement the resynthesised audio "
    "really carries (a random Δ is not the magnitude spectrogram of any signal). PESQ-WB (1.04-4.64) and STOI "
    "(0-1) compare x + δ with x (the median over the scored perturbations; n/a where the packages refuse). "
    "*Imperceptible attack*: Qin et al.'s second stage on the smoothed classifier g (SmoothAdv loss + λ · mean "
    "ReLU(PSD_δ - θ), λ adapted as they do, in an L2 ball that shrinks after every fooled step), judged by "
    "PREDICT; the quietest successful candidate is the one PREDICT assigns another class, inaudible ones first, "
    "then the smallest norm. 'The certificate rules out every attack up to R_w; the quietest successful attack "
    "found has norm N' — an attack is an upper bound on the smallest successful perturbation, a certificate a lower "
    "bound.")

LIMITS = (
    "Limits of the model. (1) It is a model: tonal maskers only (no noise maskers), simultaneous masking within "
    "one 128 ms frame (no temporal masking), a fixed playback level (the loudest bin at 96 dB), no listening "
    "test. (2) B is a lower bound of the largest imperceptible norm (about half the upper bound U on speech); a "
    "perturbation larger than B can still be inaudible. (3) At speech levels the threshold lets through noise near "
    "the speech level itself: B is typically a few dB below the utterance's own norm (the `budget SNR` column; "
    "about 2 dB on the synthetic corpus), and masking-shaped noise at B already lowers PESQ noticeably (~1.6 "
    "measured on the synthetic corpus), so 'inaudible under the model' is generous; (4) in quiet regions θ "
    "falls to the threshold in quiet, so white noise 60 dB under the speech can already count as audible there. "
    "Read coverage as 'under this model, the certificate is (or is not) large enough', not as a listening result.")


def _median(q: dict[str, Any] | None, spec: str = ".3g") -> str:
    return fmt_float(None if q is None else q.get("median"), spec)


def _quartiles(q: dict[str, Any] | None, spec: str = ".3g") -> str:
    if not q or q.get("median") is None:
        return "n/a"
    return f"{q['median']:{spec}} [{q['q25']:{spec}}, {q['q75']:{spec}}]"


def perceptibility_section(kind: Any, context: ReportContext) -> list[str]:
    """Markdown lines (figures and audio written into the output directory) for every complete config with a
    perceptibility run (``kind``: the perceptibility kind, whose reduced configs it reads)."""
    output = context.output
    entries, damaged = kind.report_entries(context), kind.damaged_lines(context)
    if not entries:
        return damaged
    lines = table_opening("## Perceptibility: certified radii against what a listener hears", INTRO, (
        "config", "points", "certified", "budget B (median)", "budget SNR (dB)", "tightness B / U", "R_w (median)",
        "covers: proven / at most", "R_w / B median [q25, q75]"))
    for r, _, s in entries:
        c, b = s["coverage"], s["budgets"]
        covers = ("no waveform certificate" if c["fraction_covers_at_most"] is None else
                  f"{c['fraction_covers_proven']:.2f} / {c['fraction_covers_at_most']:.2f}")
        lines.append(f"| {cell(r.name)} | {s['points']} | {c['certified']} | {_median(b['budget'])} | "
                     f"{_median(b['budget_snr_db'], '.1f')} | {_median(b['tightness'], '.2f')} | "
                     f"{_median(s.get('waveform_radius'))} | {covers} | {_quartiles(c['ratio'])} |")
    lines.append("")
    stages: dict[str, list[tuple[ConfigResult, dict[str, Any]]]] = {}
    for r, _, s in entries:
        stages.setdefault(s["stage"], []).append((r, s))
    for stage, group in stages.items():
        figure = output_file(output, f"perceptibility_audible_{slug(stage)}.png")
        audible_figure(stage, group, figure)
        units = ("waveform L2 norm (mfbe has no waveform counterpart: waveform perturbations of these norms)"
                 if stage == "mfbe" else f"L2 radius at the {stage} stage")
        lines += [f"![fraction audible vs radius, {stage}]({figure.name})", "",
                  f"*{stage}: fraction of perturbations of norm r above the masking threshold somewhere, against "
                  f"{units}; solid: random directions, dashed: the masking-shaped direction; markers: at each "
                  f"point's certified radius (plotted at the median).*", ""]
    for r, directory, s in entries:
        lines += config_section(r, directory, s, output)
    lines += [READING, "", LIMITS, ""]
    return lines + damaged


def audible_figure(stage: str, group: Sequence[tuple[ConfigResult, dict[str, Any]]], path: Path) -> None:
    fig, ax = new_figure(8.5, 4.6)
    for colour, (r, s) in zip(colours(len(group)), group, strict=True):
        for direction, style in (("random", "-"), ("shaped", "--")):
            rows = [row for row in s["audibility"] if row["direction"] == direction]
            ax.plot([row["radius"] for row in rows], [row["fraction_audible"] for row in rows], linestyle=style,
                    marker="o" if direction == "random" else "s", markersize=3, color=colour,
                    label=f"{r.name}, {direction}")
        median = (s.get("radius") or {}).get("median")
        for row in s.get("audibility_at_certified", []):
            if median:
                ax.plot([median], [row["fraction_audible"]], marker="*" if row["direction"] == "random" else "D",
                        markersize=11 if row["direction"] == "random" else 7, color=colour, linestyle="none",
                        label=f"{r.name}, {row['direction']} at the certified radius")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("waveform L2 norm" if stage == "mfbe" else f"L2 radius at the {stage} stage")
    ax.set_ylabel("fraction audible (PSD above the threshold)")
    ax.set_title(f"How audible is a perturbation of norm r? ({stage})", fontsize=11)
    ax.grid(True, alpha=0.4, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def audibility_table(s: dict[str, Any]) -> list[str]:
    has_stage = s["stage"] != "waveform"
    header = ("| radius | direction | fraction audible | excess over θ, dB: median [q25, q75] | waveform L2 |"
              + (" stage displacement |" if has_stage else "") + " PESQ-WB | STOI |")
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    rows = s["audibility"] + s.get("audibility_at_certified", [])
    for row in sorted(rows, key=lambda x: (x["direction"], x["which"] == "certified")):
        radius = "certified R" if row["which"] == "certified" else f"{row['radius']:g}"
        excess = (f"{fmt_float(row['excess_db_median'], '+.1f')} [{fmt_float(row['excess_db_q25'], '+.1f')}, "
                  f"{fmt_float(row['excess_db_q75'], '+.1f')}]")
        kept = f" {fmt_float(row['stage_l2_median'], '.3g')} |" if has_stage else ""
        lines.append(f"| {radius} | {row['direction']} | {row['fraction_audible']:.2f} | {excess} | "
                     f"{fmt_float(row['waveform_l2_median'], '.3g')} |{kept} {fmt_float(row['pesq_median'], '.2f')} | "
                     f"{fmt_float(row['stoi_median'], '.3f')} |")
    return lines


def config_section(r: ConfigResult, directory: Path, s: dict[str, Any], output: Path) -> list[str]:
    lines = [f"### {cell(r.name)}: perceptibility", "", f"{s['relation']}.", ""]
    c = s["coverage"]
    if c["fraction_covers_at_most"] is None:
        lines += [f"Coverage: none claimed. {s['stage']} certificates bound feature-space perturbations only, so "
                  "no waveform perturbation, audible or not, is certified; the numbers below say how audible waveform "
                  f"perturbations of a given norm are on these points (median budget B = "
                  f"{_median(s['budgets']['budget'])}) and how far each moves the {s['stage']} features "
                  "(`stage displacement`).", ""]
    else:
        lines += [f"Coverage: {c['covers_proven']} of {c['points']} certificates provably contain the whole "
                  f"imperceptible set, at most {c['covers_at_most']} can; R_w / B = {_quartiles(c['ratio'])} "
                  f"(median [q25, q75]) over the {c['certified']} certified points: a certified waveform ball of "
                  f"median radius {_median(s.get('waveform_radius'))} against a median budget of "
                  f"{_median(s['budgets']['budget'])}.", ""]
    if s.get("wrong_class_certificates"):
        lines += [f"Left out: {s['wrong_class_certificates']} certificate(s) of a class other than the label "
                  "(certified, but not correct).", ""]
    lines += audibility_table(s) + [""]
    if s.get("quality_errors"):
        lines += [f"PESQ/STOI refused some inputs: {'; '.join(cell(e) for e in s['quality_errors'][:3])}.", ""]
    if s.get("psd_figure") and (directory / s["psd_figure"]["file"]).is_file():
        target = output_file(output, f"perceptibility_psd_{slug(r.short_name)}.png")
        shutil.copyfile(directory / s["psd_figure"]["file"], target)
        lines += [f"![threshold vs perturbation PSD, {r.name}]({target.name})", "",
                  f"*Point {s['psd_figure']['idx']}: the masking threshold θ (black), the clean PSD (grey) and the "
                  "PSDs of a random (red) and of the masking-shaped (blue) perturbation of each norm, at the frame "
                  "where the random one exceeds θ most.*", ""]
    lines += attack_lines(r, directory, s, output)
    return lines


def attack_lines(r: ConfigResult, directory: Path, s: dict[str, Any], output: Path) -> list[str]:
    a = s.get("attack")
    if not a:
        return ["Imperceptible attack: not run (perceptibility.attack.enabled=false).", ""]
    settings = s["settings"]["attack"]
    lines = [f"Imperceptible attack (T = {settings['steps']} steps of m = {settings['samples']} draws, PREDICT n = "
             f"{settings['n']}): {a['attacked']} of {a['points']} points attacked (those PREDICT classifies "
             f"correctly), {a['found']} broken, {a['inaudible']} of them inaudible under the model; norms of the "
             f"quietest successful attacks {_quartiles(a['l2'])}, their max excess over θ "
             f"{_quartiles(a['max_excess_db'], '+.1f')} dB"
             + (f", attack norm / certified waveform radius {_quartiles(a['l2_over_waveform_radius'])}"
                if a["l2_over_waveform_radius"]["median"] is not None else "") + ".", ""]
    if a["contradictions"]:
        lines += [f"**{a['contradictions']} successful attack(s) inside a certified waveform ball** (an honest "
                  f"certificate allows this with probability about α = {s['alpha']:g} per point): "
                  + "; ".join(f"point {p['idx']}: N = {p['l2']:.4g} < R_w = {p['waveform_radius']:.4g}"
                              for p in a["contradiction_points"][:5]) + ".", ""]
    example = s.get("example")
    if example:
        stem = f"perceptibility_attack_{slug(r.short_name)}"
        copied = {}
        for key, suffix in (("clean_audio", "_clean.wav"), ("attacked_audio", ".wav")):
            if (directory / example[key]).is_file():
                target = output_file(output, f"{stem}{suffix}")
                shutil.copyfile(directory / example[key], target)
                copied[key] = target.name
        audio = ", ".join(f"[{k.split('_')[0]}]({v})" for k, v in copied.items())
        radius = example.get("waveform_radius")
        claim = (f"the certificate rules out every attack up to R_w = {radius:.4g}; the quietest successful attack "
                 f"found has norm N = {example['l2']:.4g}" if radius else
                 f"no certified waveform radius to compare with; the quietest successful attack found has norm "
                 f"N = {example['l2']:.4g}")
        lines += [f"Quietest successful attack: point {example['idx']} (label {example['label']} -> class "
                  f"{example['predict']}): {claim} (L∞ {fmt_float(example['linf'])}, max excess over θ "
                  f"{example['max_excess_db']:+.1f} dB, budget B = {example['budget']:.4g}); audio: {audio}.", ""]
    return lines


__all__ = ["perceptibility_section"]
