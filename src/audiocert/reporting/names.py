"""How the report names and formats things: file names that stay inside the output directory, numbers and table
cells, a unique name per config (:func:`distinct_names`), the certified-accuracy table, and the stage registry's
titles and units (with fallbacks for a stage it does not know).

Everything the report writes stays inside its output directory: file names built from what a sweep's files say
(dataset and stage names) are slugged to [A-Za-z0-9._-], and every path is checked before writing (ValueError).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audiocert.provenance import stable_hash
from audiocert.reporting.results import ConfigResult
from audiocert.stages import STAGES, WaveformBound, find_stage
from audiocert.statistics import certified_accuracy

SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
MAX_SLUG = 80


def table_opening(title: str, intro: str, columns: Sequence[str]) -> list[str]:
    """A section's heading, its introduction, and the head of its table."""
    return [title, "", intro, "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


# ----------------------------------------------------------------------------------------------------------
# Paths: nothing read from a sweep may steer a write outside the output directory
# ----------------------------------------------------------------------------------------------------------
def slug(text: Any) -> str:
    """A file-name piece of [A-Za-z0-9._-] only, never starting with a dot; text that had to change (or be cut)
    gets a short hash of the original appended, so that two different names cannot share a file."""
    original = str(text)
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in original)
    cleaned = re.sub(r"^\.", "_", cleaned)[:MAX_SLUG]
    if cleaned != original:
        cleaned = f"{cleaned}-{stable_hash(original, 8)}"
    return cleaned


def output_file(output: Path, name: str) -> Path:
    """``output / name`` for a plain file name, after checking that the path lies inside ``output``.

    Raises ValueError naming the offending value for anything else (separators, '..', characters outside
    [A-Za-z0-9._-], an existing entry that resolves elsewhere, e.g. a symbolic link).
    """
    root = Path(output).resolve()
    plain = isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None and name not in (".", "..")
    if not plain or (root / name).parent != root or not (root / name).resolve().is_relative_to(root):
        raise ValueError(f"refusing to write {name!r}: report files must be plain names ([A-Za-z0-9._-]) inside "
                         f"the output directory {root}")
    return Path(output) / name


# ----------------------------------------------------------------------------------------------------------
# Numbers and table cells
# ----------------------------------------------------------------------------------------------------------
def fmt_radius(r: float) -> str:
    return f"{r:g}"


def fmt_float(x: float | None, spec: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def fmt_up(x: float, decimals: int = 6) -> str:
    """``x`` rounded *up* at ``decimals``: a displayed upper bound must not be below the proven one."""
    scale = 10.0 ** decimals
    return f"{math.ceil(x * scale) / scale:.{decimals}f}"


def cell(text: str) -> str:
    """Text for a Markdown table cell: a '|' read from a sweep's files must not split the cell."""
    return str(text).replace("|", "\\|")


# ----------------------------------------------------------------------------------------------------------
# One name per config
# ----------------------------------------------------------------------------------------------------------
def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {'a.b': leaf}; leaves that are lists become tuples (hashable, comparable)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flat(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: tuple(value) if isinstance(value, list) else value}


def _setting(key: str, value: Any) -> str:
    """A certified quantity as a name piece: 'key = value', shortened (a later facet tells truncated ones apart)."""
    if key == "stage":
        return str(value)
    if key == "sigma" and isinstance(value, (int, float)):
        return f"σ = {value:g}"
    text = "absent" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
    return f"{key} = {text if len(text) <= 32 else text[:31] + '…'}"


# Settings that tell configs apart, in the order a reader looks for them. Each is (value of a config, text).
NAMED_FACETS: tuple[tuple[Any, Any], ...] = (
    (lambda r: r.algorithm, str),
    (lambda r: r.n0, lambda v: f"n0 = {v}"),
    (lambda r: r.n, lambda v: f"n = {v}"),
    (lambda r: r.alpha, lambda v: f"α = {v:g}"),
    (lambda r: r.seed, lambda v: f"seed {v}"),
    (lambda r: r.checkpoint_digest, lambda v: f"checkpoint {str(v)[:8]}"),
)
NAMED_QUANTITIES = ("algorithm", "n0", "n", "alpha", "seed", "checkpoint_digest")


def distinct_names(rows: Sequence[ConfigResult], base=lambda r: r.label) -> list[str]:
    """A name per config, unique among ``rows``: ``base(r)`` plus, only for configs that would otherwise share a
    name, the settings that tell them apart.

    Settings are tried in a fixed order — algorithm, n0, n, α, seed, checkpoint digest, then any other certified
    quantity (the config hash covers these: sequential options, shard layout, dataset, frontend, ...), the certified
    audio, the sweep, the label, the config hash, the directory — and a setting is appended to the configs of a
    group sharing a name only when its value differs inside that group. A position number is the last resort (the
    same config directory read twice).
    """
    rows = list(rows)
    flat = [_flat(r.quantities) for r in rows]
    keys = sorted({k for f in flat for k in f} - set(NAMED_QUANTITIES))
    facets = [*((lambda i, get=get: get(rows[i]), text) for get, text in NAMED_FACETS),
              *((lambda i, key=key: flat[i].get(key), lambda v, key=key: _setting(key, v)) for key in keys),
              (lambda i: rows[i].inputs_digest, lambda v: f"inputs {str(v)[:8]}"),
              (lambda i: rows[i].sweep_dir.name, lambda v: f"sweep {v}"),
              (lambda i: rows[i].label, str),
              (lambda i: rows[i].config_hash, lambda v: f"config {str(v)[:8]}"),
              (lambda i: str(rows[i].directory), lambda v: f"directory {Path(v).name}"),
              (lambda i: i, lambda v: f"#{v + 1}")]
    names = [str(base(r)) for r in rows]
    for value, text in facets:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, name in enumerate(names):
            groups[name].append(i)
        for members in groups.values():
            values = [value(i) for i in members]
            if len(members) > 1 and len({repr(v) for v in values}) > 1:
                for i, v in zip(members, values, strict=True):
                    names[i] = f"{names[i]}, {text(v)}"
    while len(set(names)) < len(names):  # a base name that happens to read like another name plus a setting
        counts = defaultdict(int)
        for name in names:
            counts[name] += 1
        names = [f"{name}, #{i + 1}" if counts[name] > 1 else name for i, name in enumerate(names)]
    return names


def row_labels(rows: Sequence[ConfigResult]) -> list[str]:
    """'σ = 0.05' (the table's heading gives dataset and stage), with the settings that tell rows apart appended
    only where rows of one table would otherwise look alike (see distinct_names)."""
    return distinct_names(rows, base=lambda r: f"σ = {r.sigma:g}")


# ----------------------------------------------------------------------------------------------------------
# The certified-accuracy table and the stage registry
# ----------------------------------------------------------------------------------------------------------
def accuracy_table(rows: Sequence[ConfigResult], radii: Sequence[float]) -> tuple[str, list[list[float]]]:
    """Markdown table rows sigma x radii (+ ceiling, n, points); best of each column bold (all if tied)."""
    values = [[certified_accuracy(r.radii, r.correct, radius) for radius in radii] for r in rows]
    best = [max(column) for column in zip(*values, strict=True)] if values else []
    header = "| | " + " | ".join(f"r = {fmt_radius(x)}" for x in radii) + " | ceiling | n | points |"
    lines = [header, "|---" * (len(radii) + 4) + "|"]
    for label, r, row in zip(row_labels(rows), rows, values, strict=True):
        cells = [f"**{v:.3f}**" if best[j] > 0 and v == best[j] else f"{v:.3f}" for j, v in enumerate(row)]
        lines.append(f"| {cell(label)} | " + " | ".join(cells) + f" | {r.ceiling:.4g} | {r.n} | {r.radii.size} |")
    return "\n".join(lines), values


def group_by(results: Sequence[ConfigResult], key) -> dict[Any, list[ConfigResult]]:
    groups: dict[Any, list[ConfigResult]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return dict(groups)


# A sweep's files may name a stage the registry does not know (another code version): such a stage keeps its name,
# sorts last and has no waveform guarantee.
def stage_order(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)


def stage_title(stage: str) -> str:
    entry = find_stage(stage)
    return entry.title if entry is not None else stage


def stage_units(stage: str) -> str:
    entry = find_stage(stage)
    return entry.units if entry is not None else "stage units"


def waveform_bound(stage: str) -> WaveformBound | None:
    """How a radius at ``stage`` is a waveform guarantee; None for a stage the registry does not know."""
    entry = find_stage(stage)
    return entry.waveform_bound if entry is not None else None


def sort_key(r: ConfigResult) -> tuple:
    return (r.dataset, stage_order(r.stage), r.sigma, r.n, r.alpha, r.algorithm, r.label, r.config_hash)


def stage_tables(results: Sequence[ConfigResult]) -> list[tuple[tuple[str, str], list[ConfigResult]]]:
    """The configs grouped by (dataset, stage), datasets by name and stages in registry order: a table and a
    figure each."""
    groups = group_by(results, lambda r: (r.dataset, r.stage))
    return sorted(groups.items(), key=lambda kv: (kv[0][0], stage_order(kv[0][1])))
