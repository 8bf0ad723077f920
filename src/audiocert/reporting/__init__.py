"""What the sections of ``audiocert report`` share; the sections are the kinds' own (``audiocert.kinds.*``) and
:func:`audiocert.report.write_report` writes them in order.

Helpers that know nothing of the sections: ``names`` (file names, formatting, one name per config), ``results``
(reading a sweep's certifications), ``comparison`` (sequential against Cohen), ``waveform_guarantee`` (the proven
Lipschitz bound and waveform terms), ``figures``; ``context`` (what every section reads, built once per report).
"""

from audiocert.reporting.comparison import table_radius
from audiocert.reporting.context import ReportContext
from audiocert.reporting.names import (
    SAFE_NAME,
    distinct_names,
    output_file,
    row_labels,
    slug,
    stage_title,
    stage_units,
    waveform_bound,
)
from audiocert.reporting.results import ConfigResult, load_sweeps
from audiocert.reporting.waveform_guarantee import NO_BOUND

__all__ = ["NO_BOUND", "SAFE_NAME", "ConfigResult", "ReportContext", "distinct_names",
           "load_sweeps", "output_file", "row_labels", "slug", "stage_title", "stage_units", "table_radius",
           "waveform_bound"]
