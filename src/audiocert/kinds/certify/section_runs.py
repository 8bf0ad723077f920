"""The report's runs (one row per config, with config hash,
code versions, checkpoint digest and seed), the base classifiers' clean accuracy, and the configs it left out
(superseded, incomplete, damaged)."""

from __future__ import annotations

from audiocert.reporting.comparison import cohen_difference
from audiocert.reporting.context import ReportContext
from audiocert.reporting.names import cell, fmt_float, group_by, sort_key

RUNS_INTRO = (
    "*algorithm*: `cohen` draws n0 + n samples per point; `sequential` stops each point once its answers "
    "at the table radii are settled (README, \"Which algorithm\"). *passes/point*: forward passes of the "
    "base classifier per certified point. *Δ vs cohen*: its certified accuracy minus that of the Cohen "
    "config of the same settings in this report, at the table radius where they differ most. A "
    "*config* name carries its label, plus the settings that tell it apart from configs of the same label "
    "in this report. A `sequential` radius is a lower bound at the level of the look where the point "
    "stopped: it answers \"R ≥ r?\" at the table radii, and runs smaller than Cohen's")


def runs_section(context: ReportContext) -> list[str]:
    """The runs: what was read, what each config is, and what was left out."""
    return [*runs_table(context), *classifiers_table(context), *left_out(context)]


def runs_table(context: ReportContext) -> list[str]:
    """One row per config read (complete or not), with the settings and versions that identify it."""
    lines = ["## Runs", "", f"{RUNS_INTRO}{context.see}.", "",
             "| config | stage | σ | algorithm | n0 | n | α | points | passes/point | Δ vs cohen | config hash | "
             "code version (plan / reducer) | checkpoint digest | seed | directory |", "|---" * 15 + "|"]
    for r in sorted(context.results, key=sort_key):
        points = str(r.radii.size) if r.complete else "incomplete"
        passes = fmt_float(r.forward_passes_per_point, ",.0f")
        delta = cohen_difference(r, context.complete, context.radii)
        lines.append(f"| {cell(r.name)} | {r.stage} | {r.sigma:g} | {r.algorithm} | {r.n0} | {r.n} | {r.alpha:g} | "
                     f"{points} | {passes} | {'-' if delta is None else f'{delta:+.3f}'} | "
                     f"`{r.config_hash}` | {r.plan_code_version} / {r.reducer_code_version or '-'} | "
                     f"`{r.checkpoint_digest}` | {r.seed} | `{r.directory}` |")
    lines.append("")
    return lines


def classifiers_table(context: ReportContext) -> list[str]:
    """One row per checkpoint: its clean accuracy, or why there is none."""
    checkpoints = group_by(context.results, lambda r: (r.checkpoint, r.checkpoint_digest))
    lines = ["Base classifiers (clean accuracy on the test split, from the checkpoint's metrics):", "",
             "| checkpoint | digest | clean test accuracy | configs | note |", "|---|---|---|---|---|"]
    for (path, digest), rows in checkpoints.items():
        info = context.clean[path, digest]
        lines.append(f"| `{path}` | `{digest}` | {fmt_float(info['accuracy'], '.4f')} | {len(rows)} | "
                     f"{info['note'] or '-'} |")
    lines.append("")
    return lines


def left_out(context: ReportContext) -> list[str]:
    """The configs that are not in the tables or figures, and why."""
    lines = []
    if context.superseded:
        lines += ["### Superseded configs (not in the tables or figures)", "",
                  "Their checkpoint file has changed since they were certified, so they certify a model that is no "
                  "longer there. `audiocert report --include-superseded` shows them anyway.", ""]
        lines += [f"- **superseded** {r.name} (`{r.config_hash[:8]}`, checkpoint digest `{r.checkpoint_digest}`, "
                  f"`{r.directory}`)" for r in sorted(context.superseded, key=sort_key)]
        lines.append("")
    if context.incomplete or context.damaged:
        lines += ["### Incomplete configs (skipped)", ""]
        lines += [f"- **incomplete** {cell(r.name)} (`{r.config_hash[:8]}`, `{r.directory}`): {cell(r.why_incomplete)}"
                  for r in context.incomplete]
        lines += [f"- **damaged** `{directory}`: {cell(why)}" for directory, why in context.damaged]
        lines.append("")
    return lines
