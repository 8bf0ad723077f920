"""The Markdown report of one or more sweeps: what was run, certified accuracy tables and figures, and what
each certificate means (Park et al. 2026's reporting items), all read back from the sweeps' files.

``write_report(sweep_dirs)`` writes ``report.md`` with PNG figures beside it (default ``<first sweep>/report/``),
its heading, then each kind's section in the order the kinds were registered (``audiocert.kinds.ALL`` first)
(:meth:`audiocert.shards.WorkKind.report_section`):

- the runs it drew on (config directories with config hash, code versions, checkpoint digest, seed) and the
  config directories it skipped because they are not reduced yet;
- one certified-accuracy table per (dataset, smoothing stage), rows sigma, columns radii, recomputed from
  certificates.tsv, with the best value of each column in bold, each row's ceiling sigma Phi^-1(alpha^(1/n))
  and its n;
- figures: certified accuracy vs radius per stage (a line per sigma, dashed ceilings), per sigma (a line per
  stage; radii live in different spaces), and waveform-equivalent guarantees (waveform stage, and the
  magnitude-spectrogram stage through its Lipschitz bound);
- per config: certified object, perturbation location, gain policy, post-noise modification, raw radius,
  SNR-equivalent, the waveform guarantee it implies (directly; through r / L; or none) and its waveform-equivalent
  SNR, also gathered in one table;
- clean accuracy of the base classifier, smoothed accuracy and abstentions;
- for a sequential config (README, "Which algorithm"): what its radius is (a lower bound at the level of the look
  where the point stopped, answering "R >= r?" at its table radii), and, beside the Cohen config of the same
  settings when the report has one, both median radii and their ratio; figures draw it as steps through its
  table radii;
- certified against empirical robustness under attack, and certified radii against what a listener hears, for
  the configs that have those runs.

Every table row, legend entry and section heading names its config uniquely within the report
(:func:`audiocert.reporting.names.distinct_names`): the label, plus the settings (algorithm, n, α, seed, sweep,
...) that tell apart configs that would otherwise share it.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from audiocert.kinds import KINDS
from audiocert.provenance import atomic_write_text, code_version
from audiocert.reporting.context import ReportContext, build_context
from audiocert.reporting.names import output_file

REPORT_FILE = "report.md"


def write_report(sweep_dirs: list[Path], output: Path | None = None, radii: Sequence[float] | None = None,
                 include_superseded: bool = False) -> Path:
    """Write ``report.md`` and its figures for the given sweep directories; returns the report's path.

    Configs certified with a checkpoint file that has changed since (a model retrained in place) are listed
    as superseded and left out of the tables and figures unless ``include_superseded``.
    """
    context = build_context(sweep_dirs, output, radii, include_superseded)
    lines = heading(context)
    for kind in KINDS.values():  # the built-in kinds in their order, then any registered since
        lines += kind.report_section(context)
    return atomic_write_text(output_file(context.output, REPORT_FILE), "\n".join(lines))


def heading(context: ReportContext) -> list[str]:
    results, complete, superseded = context.results, context.complete, context.superseded
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = ["# Certification report", "",
             f"Generated {now} by audiocert {code_version()} from {len(results)} config(s) in "
             f"{len(context.sweep_dirs)} sweep(s) ({len(complete) + len(superseded)} reduced, "
             f"{len(context.incomplete)} incomplete, {len(superseded)} superseded).", ""]
    return lines + ["Sweep directories:", ""] + [f"- `{d}`" for d in context.sweep_dirs] + [""]
