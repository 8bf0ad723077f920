"""What every section of the report reads: the sweeps, the configs loaded from them (sorted into complete,
superseded and incomplete), each checkpoint's clean accuracy, the proven Lipschitz bounds, and the notes that
sections share. Built once per report, before any section is written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiocert.reporting.comparison import sequential_radius_table
from audiocert.reporting.names import distinct_names, output_file, sort_key, waveform_bound
from audiocert.reporting.results import ConfigResult, checkpoint_clean_accuracy, load_sweeps
from audiocert.reporting.waveform_guarantee import LIPSCHITZ_CACHE, cached_lipschitz, frontend_config
from audiocert.stages import WaveformBound
from audiocert.statistics import REPORT_RADII


@dataclass
class ReportContext:
    """The sweeps of one report and what was read from them."""

    sweep_dirs: list[Path]
    output: Path  # the report's directory: every file the report writes lies inside it
    radii: tuple[float, ...]  # the columns of the certified-accuracy tables
    results: list[ConfigResult]  # every certification config, in the order read, each with its display name
    damaged: list[tuple[Path, str]]  # config directories whose plan cannot be trusted, with why
    clean: dict[tuple[str, str], dict[str, Any]]  # (checkpoint path, digest) -> clean accuracy, superseded
    incomplete: list[ConfigResult]  # not reduced yet
    superseded: list[ConfigResult]  # reduced, but their checkpoint file has changed since (left out)
    complete: list[ConfigResult]  # what the tables and figures show, in sort_key order
    comparison: list[str]  # the table of sequential radii against Cohen's (empty without such a pair)
    see: str  # the pointer to that table, for the notes on sequential radii ("" without it)
    lipschitz: dict[str, dict[str, Any] | None]  # config hash -> proven bound entry, for magspec-like stages

    def clean_accuracy(self, r: ConfigResult) -> dict[str, Any]:
        """The clean accuracy of ``r``'s checkpoint, and whether it is superseded."""
        return self.clean[r.checkpoint, r.checkpoint_digest]


def build_context(sweep_dirs: Sequence[str | Path] | str | Path, output: str | Path | None,
                  radii: Sequence[float] | None, include_superseded: bool) -> ReportContext:
    """Load the sweeps and create the output directory (only once they all exist) and the Lipschitz cache in it.

    Configs certified with a checkpoint file that has changed since (a model retrained in place) are superseded
    and left out of ``complete`` unless ``include_superseded``.
    """
    sweep_dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else sweep_dirs)]
    if not sweep_dirs:
        raise ValueError("write_report needs at least one sweep directory")
    radii = tuple(float(x) for x in (radii or REPORT_RADII))
    output = Path(output) if output is not None else sweep_dirs[0] / "report"
    results, damaged = load_sweeps(sweep_dirs)  # a missing sweep fails here, before anything is created
    output.mkdir(parents=True, exist_ok=True)
    for r, name in zip(results, distinct_names(results), strict=True):  # one name per config in every table
        r.display_name = name
    clean = {}  # (checkpoint path, digest) -> its clean accuracy and whether it is superseded
    for r in results:
        if (r.checkpoint, r.checkpoint_digest) not in clean:
            clean[r.checkpoint, r.checkpoint_digest] = checkpoint_clean_accuracy(r.checkpoint, r.checkpoint_digest)
    incomplete = [r for r in results if not r.complete]

    def left_out(r: ConfigResult) -> bool:
        return not include_superseded and clean[r.checkpoint, r.checkpoint_digest]["superseded"]

    superseded = [r for r in results if r.complete and left_out(r)]
    complete = sorted((r for r in results if r.complete and not left_out(r)), key=sort_key)
    comparison = sequential_radius_table(complete)
    see = " (see \"Sequential radii against Cohen's\")" if comparison else ""
    cache = output_file(output, LIPSCHITZ_CACHE)
    lipschitz = {r.config_hash: cached_lipschitz(cache, frontend_config(r), r.crop_samples)
                 for r in complete if waveform_bound(r.stage) is WaveformBound.LIPSCHITZ}
    return ReportContext(sweep_dirs=sweep_dirs, output=output, radii=radii, results=results, damaged=damaged,
                         clean=clean, incomplete=incomplete, superseded=superseded, complete=complete,
                         comparison=comparison, see=see, lipschitz=lipschitz)
