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
  SNR-equivalent, the waveform guarantee it implies (directly; through r / L; or none) and its waveform-equivalent
  SNR, also gathered in one table;
- clean accuracy of the base classifier, smoothed accuracy and abstentions;
- for a sequential config (README, "Which algorithm"): what its radius is (a lower bound at the level of the look
  where the point stopped, answering "R >= r?" at its table radii), and, beside the Cohen config of the same
  settings when the report has one, both median radii and their ratio; figures draw it as steps through its
  table radii.

Every table row, legend entry and section heading names its config uniquely within the report
(:func:`distinct_names`): the label, plus the settings (algorithm, n, α, seed, sweep, ...) that tell apart configs
that would otherwise share it.

The magnitude spectrogram is a waveform guarantee through L, a *proven* upper bound on the Lipschitz constant of
waveform -> magnitude spectrogram (:func:`audiocert.lipschitz.waveform_lipschitz_bound`: the polyphase symbol of the
linear map waveform -> complex rfft of pre-emphasized frames, certified over theta; |.| is 1-Lipschitz), cached in
the report directory. A frontend the bound's derivation does not cover gets no waveform guarantee at all.

Everything the report writes stays inside its output directory: file names built from what a sweep's files say
(dataset and stage names) are slugged to [A-Za-z0-9._-], and every path is checked before writing (ValueError).
"""

from __future__ import annotations

import datetime
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiocert.algorithms import make_algorithm
from audiocert.lipschitz import DEFAULT_TOLERANCE, METHOD_VERSION, bound_for, linear_map_of
from audiocert.provenance import (
    CorruptFileError,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    code_version,
    file_digest,
    read_json,
    stable_hash,
)
from audiocert.reducer import read_certificates
from audiocert.shards import inventory, read_plan
from audiocert.stages import STAGE_REGISTRY, STAGES, WaveformBound, find_stage
from audiocert.statistics import ABSTAIN, REPORT_RADII, certified_accuracy, max_certifiable_radius
from audiocert.status import config_dirs

REPORT_FILE = "report.md"
LIPSCHITZ_CACHE = "lipschitz.json"
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
MAX_SLUG = 80

DPI = 120
NO_BOUND = "no proven Lipschitz bound for this frontend: no waveform guarantee"


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
# The Lipschitz bound of waveform -> magnitude spectrogram (proven: see audiocert.lipschitz)
# ----------------------------------------------------------------------------------------------------------
def _valid_entry(entry: Any, params: Mapping[str, Any], num_samples: int) -> bool:
    if not isinstance(entry, dict) or entry.get("method_version") != METHOD_VERSION:
        return False
    if entry.get("params") != dict(params) or entry.get("num_samples") != num_samples:
        return False
    values = [entry.get(key) for key in ("bound", "lower", "closed_form", "derivative_bound", "tolerance")]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return False
    return 0 < entry["lower"] <= entry["bound"] <= entry["closed_form"]


def cached_lipschitz(cache_path: Path, frontend_cfg: Mapping[str, Any] | None,
                     num_samples: Any) -> dict[str, Any] | None:
    """The proven bound L for (frontend, crop length), from ``cache_path`` (JSON) or computed and stored there.

    None when there is no proven bound: a frontend config the derivation does not cover, or no valid crop length.
    The cache key holds the linear map's parameters and the crop length: a zero-padded last frame adds a small
    boundary term to the bound, so the length matters (only through (N - frame_length) % hop).
    """
    lm = linear_map_of(frontend_cfg)
    if lm is None or isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        return None
    params = asdict(lm)
    key = stable_hash({"linear_map": params, "num_samples": num_samples, "method_version": METHOD_VERSION,
                       "tolerance": DEFAULT_TOLERANCE})
    try:
        cache = read_json(cache_path) if cache_path.is_file() else {}
    except (OSError, ValueError):  # a damaged cache is recomputed, not trusted
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    if _valid_entry(cache.get(key), params, num_samples):
        return cache[key]
    entry = bound_for(lm, num_samples).to_json()
    cache[key] = entry
    atomic_write_json(cache_path, cache)
    return entry


def frontend_config(r: ConfigResult) -> Any:
    """The frontend section of a config as its plan recorded it (None: the frontend's defaults)."""
    return r.config.get("frontend") if isinstance(r.config, Mapping) else r.config


def lipschitz_bound(entry: Mapping[str, Any]) -> float:
    return float(entry["bound"])


def fmt_up(x: float, decimals: int = 6) -> str:
    """``x`` rounded *up* at ``decimals``: a displayed upper bound must not be below the proven one."""
    scale = 10.0 ** decimals
    return f"{math.ceil(x * scale) / scale:.{decimals}f}"


def lipschitz_proof_text(entry: Mapping[str, Any]) -> str:
    """How L was proven, for the meaning section."""
    params = entry["params"]
    text = (f"polyphase symbol H(θ) = Σ_q G_q e^(iqθ) of the linear map waveform -> complex rfft of pre-emphasized "
            f"frames (frame {params['frame_length']}, hop {params['hop_length']}, nfft {params['nfft']}, "
            f"pre-emphasis {params['preemphasis']:g}; |.| is 1-Lipschitz), whose infinite-length operator norm is "
            f"sup_θ σ_max(H(θ)); that supremum certified over θ ∈ [0, π] by a grid and branch-and-bound refinement "
            f"(σ_max is D-Lipschitz in θ with D = {entry['derivative_bound']:.4g}, plus a second-order bound) to "
            f"within {entry['tolerance']:g} of the best value evaluated, {entry['lower']:.6f} at θ = "
            f"{entry['theta']:.4g} ({entry['evaluations']} evaluations, float64 eigvalsh, raised by 1e-9 relative "
            "for round-off)")
    if not entry.get("tolerance_reached", True):
        text += " — the refinement ran out of budget before that tolerance; the bound is proven but looser"
    if entry.get("boundary_excess"):
        text += (f"; the crop's last frame is zero-padded, which adds a boundary term {entry['boundary_excess']:.4g} "
                 "to L² (the smallest eigenvalue of a local Gram difference)")
    if entry["bound"] >= entry["closed_form"]:
        text += f"; the closed form (1 + |p|)·sqrt(ceil(frame/hop)·λ_max(WᵀW)) = {entry['closed_form']:.6f} is used"
    else:
        text += f"; below the closed form (1 + |p|)·sqrt(ceil(frame/hop)·λ_max(WᵀW)) = {entry['closed_form']:.4f}"
    return text


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
    quantities: dict[str, Any] = field(default_factory=dict)  # what the config hash covers
    inputs_digest: str = ""  # the audio of the certified points
    why_incomplete: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    radii: np.ndarray = field(default_factory=lambda: np.zeros(0))
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # dataset index of each point
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    predict: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    predictions: list[tuple[int, int, int, int]] | None = None
    display_name: str = ""  # unique within a report (see distinct_names); set by write_report

    @property
    def name(self) -> str:
        """How the report names this config: its display name, or its label outside a report."""
        return self.display_name or self.label

    @property
    def algorithm(self) -> str:
        return str(self.config.get("certify", {}).get("algorithm", "cohen"))

    @property
    def table_radii(self) -> tuple[float, ...] | None:
        """The radii r whose question "R >= r?" a sequential config answers (its stopping rule's grid); None for
        an algorithm that certifies each point's radius as precisely as n allows (Cohen)."""
        if self.algorithm != "sequential":
            return None
        options = self.quantities.get("sequential")
        radii = options.get("radii") if isinstance(options, Mapping) else None
        try:
            radii = tuple(sorted(float(x) for x in radii)) if radii else REPORT_RADII
        except (TypeError, ValueError):  # a plan of another code version: fall back to the default grid
            radii = REPORT_RADII
        return radii

    @property
    def ceiling(self) -> float:
        """The largest radius the config can certify (the reducer's figure: an algorithm's own last level)."""
        return float(self.summary.get("max_certifiable_radius", max_certifiable_radius(self.sigma, self.n, self.alpha)))

    @property
    def counted_inputs(self) -> str:
        """A hash of everything that determines the counts except the algorithm (and how the work is cut into
        shards): two configs with the same value certify the same points on the same noise streams."""
        kept = {k: v for k, v in self.quantities.items() if k not in ("algorithm", "sequential", "shard")}
        return stable_hash({"quantities": kept, "inputs": self.inputs_digest})

    @property
    def forward_passes_per_point(self) -> float | None:
        return self.summary.get("forward_passes_per_point")

    @property
    def certified(self) -> np.ndarray:
        """Points predicted correctly with a positive radius (what the reducer's medians run over)."""
        return self.correct & (self.radii > 0)

    @property
    def crop_samples(self) -> int | None:
        """The waveform length certified (None if the config does not say it plainly)."""
        try:
            value = self.config["dataset"]["crop_samples"]
        except (KeyError, TypeError):
            return None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    @property
    def short_name(self) -> str:
        return f"{self.label}-{self.config_hash[:8]}"


def load_config_result(config_dir: Path, sweep_dir: Path) -> ConfigResult | None:
    """A config as the report sees it; its plan is checked as every reader checks it (seal, hash, safe label)."""
    plan = read_plan(config_dir)
    if plan.get("kind", "certify") != "certify":
        return None  # an attack or perceptibility config: its certification's section shows it
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
        quantities=dict(q), inputs_digest=str(plan.get("inputs_digest", "")),
    )
    missing = [name for name in ("certificates.tsv", "summary.json") if not (config_dir / name).is_file()]
    if missing:
        try:
            found = inventory(config_dir, plan)
            shards = f"{len(found.records)}/{len(found.shards)} shards present"
        except Exception as error:  # a report must not fail on a half-written sweep
            shards = f"shards unreadable ({error.__class__.__name__})"
        result.why_incomplete = f"not reduced (no {', '.join(missing)}; {shards})"
        return result
    rows = read_certificates(config_dir / "certificates.tsv")
    result.radii = np.array([r["radius"] for r in rows], dtype=float)
    result.indices = np.array([r["idx"] for r in rows], dtype=int)
    result.correct = np.array([r["correct"] for r in rows], dtype=bool)
    result.predict = np.array([r["predict"] for r in rows], dtype=int)
    result.summary = read_json(config_dir / "summary.json")
    if (config_dir / "predictions.tsv").is_file():
        lines = (config_dir / "predictions.tsv").read_text().splitlines()[1:]
        result.predictions = [tuple(int(v) for v in line.split("\t")) for line in lines if line.strip()]
    result.complete = True
    return result


def load_sweeps(sweep_dirs: Sequence[str | Path]) -> tuple[list[ConfigResult], list[tuple[Path, str]]]:
    """The configs of the sweeps, and the config directories whose plan cannot be trusted (with why)."""
    results, damaged = [], []
    for sweep_dir in sweep_dirs:
        sweep_dir = Path(sweep_dir)
        for config_dir in config_dirs(sweep_dir):
            try:
                if (result := load_config_result(config_dir, sweep_dir)) is not None:
                    results.append(result)
            except (CorruptFileError, ValueError, KeyError, TypeError) as error:
                damaged.append((config_dir, " ".join(str(error).split())))
    return results, damaged


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


def cell(text: str) -> str:
    """Text for a Markdown table cell: a '|' read from a sweep's files must not split the cell."""
    return str(text).replace("|", "\\|")


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


def cohen_twin(r: ConfigResult, results: Sequence[ConfigResult]) -> ConfigResult | None:
    """The Cohen (fixed-n) config certifying the same points (same audio) with the same classifier, settings and
    noise streams as ``r`` (all its certified quantities but the algorithm's); None for a Cohen config, an
    incomplete one, or one without such a twin in ``results``."""
    if r.algorithm == "cohen" or not r.complete:
        return None
    same = [c for c in results if c.complete and c.algorithm == "cohen" and c.counted_inputs == r.counted_inputs]
    return same[0] if same else None


def cohen_difference(r: ConfigResult, results: Sequence[ConfigResult], radii: Sequence[float]) -> float | None:
    """Certified accuracy of ``r`` minus that of its Cohen twin (:func:`cohen_twin`) at the grid radius where they
    differ most; None without such a pair."""
    twin = cohen_twin(r, results)
    if twin is None:
        return None
    ours = [certified_accuracy(r.radii, r.correct, x) for x in radii]
    theirs = [certified_accuracy(twin.radii, twin.correct, x) for x in radii]
    return max((a - b for a, b in zip(ours, theirs, strict=True)), key=abs)


def table_radius(radii: np.ndarray, table: Sequence[float]) -> np.ndarray:
    """Each radius rounded down to the grid {0} ∪ ``table``: the largest r with R >= r, the answer a sequential
    config gives to "R >= r?" at its table radii."""
    grid = np.concatenate([[0.0], np.sort(np.asarray(table, dtype=float))])
    return grid[np.searchsorted(grid, radii, side="right") - 1]


@dataclass
class RadiusComparison:
    """The radii of a sequential config against its Cohen twin's (same points, same noise streams).

    Medians run over each config's certified points (correct, radius > 0), as the reducer's; ``per_point`` is the
    median of R_sequential / R_cohen over the points both certify; ``table_*`` are the medians of each certified
    radius rounded down to the sequential config's table radii (what it answers).
    """

    sequential: ConfigResult
    cohen: ConfigResult
    certified: tuple[int, int]  # points certified (sequential, cohen)
    median: tuple[float | None, float | None]
    ratio: float | None  # median sequential / median cohen
    per_point: float | None  # median of the per-point ratios over points both certify
    both: int  # points both certify
    table_median: tuple[float | None, float | None]


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def compare_radii(seq: ConfigResult, cohen: ConfigResult) -> RadiusComparison:
    """How much smaller a sequential config's radii are than its Cohen twin's (see RadiusComparison)."""
    table = seq.table_radii or REPORT_RADII
    med = (_median(seq.radii[seq.certified]), _median(cohen.radii[cohen.certified]))
    ratio = med[0] / med[1] if med[0] is not None and med[1] else None
    # The same points in both (the same audio, checked by counted_inputs), matched by their dataset index.
    index = {int(i): k for k, i in enumerate(_indices(cohen))}
    pairs = [(k, index[int(i)]) for k, i in enumerate(_indices(seq)) if int(i) in index]
    ratios = np.array([seq.radii[a] / cohen.radii[b] for a, b in pairs if seq.certified[a] and cohen.certified[b]])
    return RadiusComparison(
        sequential=seq, cohen=cohen, certified=(int(seq.certified.sum()), int(cohen.certified.sum())), median=med,
        ratio=ratio, per_point=_median(ratios), both=int(ratios.size),
        table_median=(_median(table_radius(seq.radii[seq.certified], table)),
                      _median(table_radius(cohen.radii[cohen.certified], table))))


def _indices(r: ConfigResult) -> np.ndarray:
    return r.indices if r.indices.size == r.radii.size else np.arange(r.radii.size)


def sequential_radius_table(results: Sequence[ConfigResult]) -> list[str]:
    """Markdown: per sequential config with a Cohen twin in ``results``, both median radii and their ratio."""
    pairs = [(r, twin) for r in results if (twin := cohen_twin(r, results)) is not None]
    if not pairs:
        return []
    lines = ["| sequential config | Cohen config | stage | σ | certified points (seq / Cohen) | median radius "
             "(seq / Cohen) | ratio of medians | median per-point ratio (points both certify) | median table "
             "radius (seq / Cohen) |", "|---" * 9 + "|"]
    for seq, cohen in pairs:
        c = compare_radii(seq, cohen)
        if c.ratio is None:
            ratio = "n/a"
        else:
            ratio = f"{c.ratio:.3f} ({abs(1 - c.ratio) * 100:.0f}% {'smaller' if c.ratio <= 1 else 'larger'})"
        per_point = "n/a" if c.per_point is None else f"{c.per_point:.3f} ({c.both})"
        lines.append(f"| {cell(seq.name)} | {cell(cohen.name)} | {seq.stage} | {seq.sigma:g} | "
                     f"{c.certified[0]} / {c.certified[1]} | {fmt_float(c.median[0])} / {fmt_float(c.median[1])} | "
                     f"{ratio} | {per_point} | {fmt_float(c.table_median[0])} / {fmt_float(c.table_median[1])} |")
    return lines


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


# ----------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------
@dataclass
class WaveformTerms:
    """What a config's certificate implies for waveform perturbations."""

    guarantee: str  # a WaveformBound ("direct", "lipschitz", "none"); "no bound" (lipschitz without a proven L),
    #                 "unknown" (a stage the registry does not know)
    lipschitz: float | None = None  # L (lipschitz)
    radius: float | None = None  # median certified radius in waveform space (r, or r / L)
    snr_db: float | None = None  # median 20 log10(||x_waveform|| / waveform radius)
    snr_note: str = ""  # why snr_db is missing, where it is


def waveform_terms(r: ConfigResult, entry: Mapping[str, Any] | None) -> WaveformTerms:
    """Waveform radius and waveform-equivalent SNR 20 log10(||x_wave|| L / r) of a config (see meaning_section)."""
    certified = r.certified
    raw = float(np.median(r.radii[certified])) if certified.any() else None
    bound = waveform_bound(r.stage)
    if bound is WaveformBound.DIRECT:  # the stage is the waveform: both SNRs are the same number
        key = "median_wave_to_radius_db" if "median_wave_to_radius_db" in r.summary else "median_snr_db"
        snr = r.summary.get(key)
        return WaveformTerms("direct", None, raw, snr, "" if snr is not None else "n/a (no point certified)")
    if bound is WaveformBound.LIPSCHITZ:
        if entry is None:
            return WaveformTerms("no bound", snr_note="none (no proven Lipschitz bound)")
        L = lipschitz_bound(entry)
        if "median_wave_to_radius_db" not in r.summary:
            snr, note = None, "n/a (summary written before the reducer recorded median_wave_to_radius_db)"
        elif r.summary["median_wave_to_radius_db"] is None:
            snr, note = None, "n/a (no point certified)"
        else:
            snr, note = float(r.summary["median_wave_to_radius_db"]) + 20.0 * math.log10(L), ""
        return WaveformTerms("lipschitz", L, None if raw is None else raw / L, snr, note)
    if bound is WaveformBound.NONE:
        return WaveformTerms("none", snr_note="none (no waveform guarantee)")
    return WaveformTerms("unknown", snr_note="none (stage not known)")


def waveform_table(rows: Sequence[ConfigResult], lipschitz: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """One row per config: the radius and SNR at its stage, and what they mean for the waveform."""
    lines = ["| config | stage | median radius (stage) | SNR-equivalent (stage) | L | median waveform radius | "
             "waveform-equivalent SNR |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        terms = waveform_terms(r, lipschitz.get(r.config_hash))
        certified = r.certified
        raw = fmt_float(float(np.median(r.radii[certified]))) if certified.any() else "none certified"
        stage_snr = r.summary.get("median_snr_db")
        stage_snr = "n/a" if stage_snr is None else f"{stage_snr:.1f} dB"
        L = {"direct": "— (direct)", "lipschitz": fmt_up(terms.lipschitz or 0.0, 5), "no bound": "no proven bound",
             "none": "none (normalization)"}.get(terms.guarantee, "unknown")
        if terms.guarantee in ("direct", "lipschitz"):
            radius = fmt_float(terms.radius) if terms.radius is not None else "none certified"
        else:
            radius = "no waveform guarantee"
        snr = f"{terms.snr_db:.1f} dB" if terms.snr_db is not None else terms.snr_note.split(" (")[0]
        lines.append(f"| {cell(r.name)} | {r.stage} | {raw} | {stage_snr} | {L} | {radius} | {snr} |")
    return lines


def steps_caption(rows: Sequence[ConfigResult]) -> str:
    """The sentence a figure caption needs when it draws sequential configs (as steps at their table radii)."""
    if not any(r.table_radii for r in rows):
        return ""
    return (" Sequential configs (markers) are drawn at their table radii only, the radii whose \"R ≥ r?\" they "
            "answer, as steps: between two table radii the value is that of the larger one (conservative).")


def ceiling_level(r: ConfigResult) -> str:
    """The n and level of a config's ceiling: α for Cohen; the last look's α_K for sequential."""
    if r.table_radii:
        try:
            last = make_algorithm(r.quantities).look_alphas[-1]
        except (KeyError, TypeError, ValueError, AttributeError):  # a plan of another code version
            return f"n = {r.n}, the last look's share of α = {r.alpha:g}"
        return f"n = {r.n}, the last look's α_K = {last:.3g} of α = {r.alpha:g}"
    return f"n = {r.n}, α = {r.alpha:g}"


def sequential_radius_text(r: ConfigResult) -> str:
    """What a sequential config's per-point radius is, and how to read it."""
    radii = ", ".join(fmt_radius(x) for x in r.table_radii or ())
    try:
        algorithm = make_algorithm(r.quantities)
        first = (f"{algorithm.looks[0]:,} estimation samples at α_1 = {algorithm.look_alphas[0]:.3g} for a point "
                 f"that settles at the first look, against n = {r.n:,} at α = {r.alpha:g} for Cohen's")
    except (KeyError, TypeError, ValueError, AttributeError):  # a plan of another code version
        first = "a point that settles at the first look has few samples at a small α_k"
    return ("each point's radius is σ·Φ⁻¹(pA_lower) with pA_lower bounded at the level α_k of the look where the "
            "point stopped (Σ α_k = α, so the guarantee holds with probability ≥ 1 − α, as Cohen's), from the "
            "samples drawn up to that look. A point stops as soon as more samples would not change its answers to "
            f"\"R ≥ r?\" at the table radii ({radii}), so its radius is a lower bound that answers those questions, "
            f"not the largest radius n samples could certify: it runs smaller than Cohen's ({first}), and so does "
            "its median. Compare certified accuracy at the table radii; between them the curve is conservative.")


def meaning_section(r: ConfigResult, clean: Mapping[str, Any], lipschitz: Mapping[str, Any] | None) -> list[str]:
    semantics = r.summary.get("semantics", {})
    certified = r.certified
    raw = float(np.median(r.radii[certified])) if certified.any() else None
    snr = r.summary.get("median_snr_db")
    units = stage_units(r.stage)
    terms = waveform_terms(r, lipschitz)
    lines = [f"### {r.name} (`{r.config_hash[:8]}`)", ""]
    lines.append(f"- **Certified object:** {semantics.get('certified_object', r.stage)}")
    lines.append(f"- **Perturbation location:** {semantics.get('perturbation_location', r.stage)}")
    lines.append(f"- **Gain policy:** {semantics.get('gain_policy', 'not recorded')}")
    lines.append(f"- **Post-noise modification:** {semantics.get('post_noise_modification', 'not recorded')}")
    lines.append(f"- **Radius norm:** {semantics.get('radius_norm', 'L2 over the stage representation')}")
    level = ceiling_level(r)
    if raw is None:
        lines.append(f"- **Raw radius:** no point certified (ceiling {r.ceiling:.4g} at {level})")
    else:
        lines.append(f"- **Raw radius:** median {raw:.4g} ({units}) over the {int(certified.sum())} certified "
                     f"point(s) of {r.radii.size}; ceiling {r.ceiling:.4g} at {level}")
    if r.table_radii:
        lines.append(f"- **Sequential radius:** {sequential_radius_text(r)}")
    norm = r.summary.get("median_stage_norm")
    snr_text = "n/a (no point certified)" if snr is None else f"{snr:.1f} dB"
    lines.append(f"- **SNR-equivalent of the radius:** median 20 log10(‖x_{r.stage}‖ / r) = {snr_text} "
                 f"(median ‖x_{r.stage}‖ = {fmt_float(norm)})")
    if terms.guarantee == "direct":
        lines.append("- **Waveform guarantee:** direct — the smoothed prediction is constant for every waveform "
                     "perturbation of L2 norm below the radius"
                     + ("" if raw is None else f" (median {raw:.4g})") + ".")
        snr_wave = f"{terms.snr_db:.1f} dB" if terms.snr_db is not None else terms.snr_note
        lines.append(f"- **Waveform-equivalent SNR:** {snr_wave}, the SNR-equivalent above (the smoothing stage is "
                     "the waveform).")
    elif terms.guarantee == "lipschitz":
        assert lipschitz is not None and terms.lipschitz is not None
        crop = f"{r.crop_samples:,}-sample crops"
        text = (f"- **Waveform guarantee:** through the proven Lipschitz bound L = {fmt_up(terms.lipschitz)} of "
                f"waveform -> {stage_title(r.stage)} for {crop}. How L was proven: {lipschitz_proof_text(lipschitz)}. "
                f"A {r.stage} radius r covers every waveform perturbation of L2 norm below r / L")
        if terms.radius is not None:
            text += f": waveform radius r / L = {terms.radius:.4g} (median over certified points)"
        lines.append(text + ".")
        if terms.snr_db is not None:
            wave_db = float(r.summary["median_wave_to_radius_db"])
            lines.append(f"- **Waveform-equivalent SNR:** median 20 log10(‖x_waveform‖·L / r) = {terms.snr_db:.1f} dB "
                         f"(median 20 log10(‖x_waveform‖ / r) = {wave_db:.1f} dB, plus 20 log10 L = "
                         f"{20.0 * math.log10(terms.lipschitz):.2f} dB; median ‖x_waveform‖ = "
                         f"{fmt_float(r.summary.get('median_waveform_norm'))}): no waveform perturbation at a "
                         "higher SNR can change the smoothed prediction; the waveform counterpart of the "
                         "feature-space SNR above.")
        else:
            lines.append(f"- **Waveform-equivalent SNR:** {terms.snr_note}.")
    elif terms.guarantee == "no bound":
        lines.append(f"- **Waveform guarantee:** none — {NO_BOUND} (its frontend config has keys or values that "
                     "the bound's derivation does not cover, or no plain crop length), so no waveform radius "
                     "follows.")
        lines.append("- **Waveform-equivalent SNR:** none (no waveform guarantee).")
    elif terms.guarantee == "none":
        lines.append("- **Waveform guarantee:** none — the guarantee holds in feature space only: the per-frame "
                     "normalization has no Lipschitz bound (it amplifies quiet frames without limit), so no "
                     "waveform radius follows.")
        lines.append("- **Waveform-equivalent SNR:** none (no waveform guarantee).")
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

    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = ["# Certification report", "",
             f"Generated {now} by audiocert {code_version()} from {len(results)} config(s) in "
             f"{len(sweep_dirs)} sweep(s) ({len(complete) + len(superseded)} reduced, {len(incomplete)} incomplete, "
             f"{len(superseded)} superseded).", ""]
    lines += ["Sweep directories:", ""] + [f"- `{d}`" for d in sweep_dirs] + [""]

    # --- runs ---
    lines += ["## Runs", "",
              "*algorithm*: `cohen` draws n0 + n samples per point; `sequential` stops each point once its answers "
              "at the table radii are settled (README, \"Which algorithm\"). *passes/point*: forward passes of the "
              "base classifier per certified point. *Δ vs cohen*: its certified accuracy minus that of the Cohen "
              "config of the same settings in this report, at the table radius where they differ most. A "
              "*config* name carries its label, plus the settings that tell it apart from configs of the same label "
              "in this report. A `sequential` radius is a lower bound at the level of the look where the point "
              f"stopped: it answers \"R ≥ r?\" at the table radii, and runs smaller than Cohen's{see}.", "",
              "| config | stage | σ | algorithm | n0 | n | α | points | passes/point | Δ vs cohen | config hash | "
              "code version (plan / reducer) | checkpoint digest | seed | directory |", "|---" * 15 + "|"]
    for r in sorted(results, key=sort_key):
        points = str(r.radii.size) if r.complete else "incomplete"
        passes = fmt_float(r.forward_passes_per_point, ",.0f")
        delta = cohen_difference(r, complete, radii)
        lines.append(f"| {cell(r.name)} | {r.stage} | {r.sigma:g} | {r.algorithm} | {r.n0} | {r.n} | {r.alpha:g} | "
                     f"{points} | {passes} | {'-' if delta is None else f'{delta:+.3f}'} | "
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
        lines += [f"- **superseded** {r.name} (`{r.config_hash[:8]}`, checkpoint digest `{r.checkpoint_digest}`, "
                  f"`{r.directory}`)" for r in sorted(superseded, key=sort_key)]
        lines.append("")
    if incomplete or damaged:
        lines += ["### Incomplete configs (skipped)", ""]
        lines += [f"- **incomplete** {cell(r.name)} (`{r.config_hash[:8]}`, `{r.directory}`): {cell(r.why_incomplete)}"
                  for r in incomplete]
        lines += [f"- **damaged** `{directory}`: {cell(why)}" for directory, why in damaged]
        lines.append("")

    # --- tables ---
    lines += ["## Certified accuracy", "",
              "Fraction of the certified test points whose smoothed prediction is correct with certified L2 radius "
              "≥ r (abstentions count as wrong), recomputed from each config's certificates.tsv. The best value of "
              "each column is in bold (all of them when tied; none when nothing is certified). *ceiling* is the "
              "largest radius n samples can certify, σ·Φ⁻¹(α^(1/n)); radii are L2 norms in the smoothing stage's "
              "own space.", ""]
    sequential = [r for r in complete if r.table_radii]
    if sequential:
        lines += ["**Sequential configs** answer \"R ≥ r?\" at their table radii: each point stops drawing samples "
                  "once those answers are settled, and its radius is σ·Φ⁻¹(pA_lower) bounded at the level α_k of the "
                  "look where it stopped (Σ α_k = α). At the table radii their certified accuracy is what they were "
                  "built to give (compare it with Cohen's there); between table radii their curve is conservative, "
                  "and their per-point radii and medians run smaller than Cohen's. Figures draw them as steps "
                  "through their table radii.", ""]
        other = sorted({r.table_radii for r in sequential if r.table_radii != tuple(sorted(radii))})
        if other:
            lines += ["**Note:** some sequential configs answer other radii than this report's columns ("
                      + "; ".join(", ".join(fmt_radius(x) for x in grid) for grid in other)
                      + "): at a column radius that is not one of theirs, their value is conservative.", ""]
    by_table = group_by(complete, lambda r: (r.dataset, r.stage))
    for (dataset, stage), rows in sorted(by_table.items(), key=lambda kv: (kv[0][0], stage_order(kv[0][1]))):
        table, _ = accuracy_table(rows, radii)
        lines += [f"### {dataset}, {stage_title(stage)} ({stage})", "", table, ""]
        ns, alphas, n0s = sorted({r.n for r in rows}), sorted({r.alpha for r in rows}), sorted({r.n0 for r in rows})
        if len(ns) > 1 or len(alphas) > 1:
            differ = ([f"n ({', '.join(map(str, ns))})"] if len(ns) > 1 else []) + (
                [f"α ({', '.join(f'{a:g}' for a in alphas)})"] if len(alphas) > 1 else [])
            lines += [f"**Note:** the configs of this table differ in {' and '.join(differ)}: their ceilings "
                      "(and, for α, their confidence) differ, so compare rows with care.", ""]
        else:
            lines += [f"All rows: n0 = {', '.join(map(str, n0s))}, n = {ns[0]}, α = {alphas[0]:g}; radii in "
                      f"{stage} space ({stage_units(stage)}).", ""]

    if comparison:
        lines += ["### Sequential radii against Cohen's", "",
                  "Each sequential config beside the Cohen config certifying the same points on the same noise "
                  "streams (same settings but the algorithm). *median radius*: over each config's certified points "
                  "(correct, radius > 0); *ratio of medians*: sequential / Cohen; *median per-point ratio*: "
                  "R_sequential / R_cohen over the points both certify (their number in brackets); *median table "
                  "radius*: each certified radius rounded down to the sequential config's table radii, the answer "
                  "to \"R ≥ r?\" that sequential gives. Sequential's bound comes from fewer samples at a smaller "
                  "level α_k, so its radii are smaller; its certified accuracy at the table radii is in the tables "
                  "above (and *Δ vs cohen* in the runs table).", "", *comparison, ""]

    # --- figures ---
    figures = []
    for (dataset, stage), rows in sorted(by_table.items(), key=lambda kv: (kv[0][0], stage_order(kv[0][1]))):
        name = f"certified_{slug(dataset)}_{slug(stage)}.png"
        path = figure_per_stage(dataset, stage, rows, output_file(output, name))
        figures.append((path, f"{dataset}: certified accuracy vs L2 radius, smoothing at the "
                              f"{stage_title(stage)}, one line per σ; dashed vertical lines mark each "
                              f"σ's ceiling σ·Φ⁻¹(α^(1/n)) in the same colour. Radii in {stage} space "
                              f"({stage_units(stage)})." + steps_caption(rows)))
    for (dataset, sigma), rows in sorted(group_by(complete, lambda r: (r.dataset, r.sigma)).items()):
        if len({r.stage for r in rows}) < 2:
            continue  # one stage at this sigma: its per-stage figure already shows it
        rows = sorted(rows, key=sort_key)
        path = figure_per_sigma(dataset, sigma, rows,
                                output_file(output, f"certified_{slug(dataset)}_sigma{slug(f'{sigma:g}')}.png"))
        figures.append((path, f"{dataset}, σ = {sigma:g}: certified accuracy vs radius for each smoothing stage. "
                              "The radii are in different spaces (waveform samples, |rfft| magnitudes, z-scored Mel "
                              "energies), so the lines compare how far each stage's own guarantee reaches, not "
                              "robustness to the same perturbation." + steps_caption(rows)))
    scale = {h: lipschitz_bound(e) for h, e in lipschitz.items() if e is not None}
    in_waveform_space = [r for r in complete
                         if waveform_bound(r.stage) is WaveformBound.DIRECT or r.config_hash in scale]
    for dataset, rows in sorted(group_by(in_waveform_space, lambda r: r.dataset).items()):
        rows = sorted(rows, key=sort_key)
        unbounded = [r for r in complete
                     if r.dataset == dataset and waveform_bound(r.stage) is WaveformBound.LIPSCHITZ
                     and r.config_hash not in scale]
        path = figure_waveform_equivalent(dataset, rows, scale,
                                          output_file(output, f"waveform_equivalent_{slug(dataset)}.png"))
        caption = (f"{dataset}: the guarantees that hold in waveform space, on a log radius axis: waveform-stage "
                   "certificates as they are, magnitude-spectrogram certificates divided by the proven Lipschitz "
                   "bound L of waveform -> magnitude spectrogram; dashed lines are the ceilings. "
                   "Normalized-filterbank certificates have no waveform equivalent.")
        caption += steps_caption(rows)
        if unbounded:
            caption += (f" Left out ({NO_BOUND}): {', '.join(r.name for r in unbounded)}.")
        figures.append((path, caption))
    if figures:
        lines += ["## Figures", ""]
        for number, (path, caption) in enumerate(figures, start=1):
            lines += [f"![Figure {number}]({path.name})", "", f"*Figure {number}: {caption}*", ""]

    # --- meaning ---
    lines += ["## What each certificate means", "",
              "The reporting items of Park et al. (2026): what is certified, where the noise enters, what is done to "
              "the signal before and after it, the raw radius, its SNR-equivalent 20 log10(‖x_stage‖ / r), and the "
              "waveform guarantee it implies, with its waveform-equivalent SNR 20 log10(‖x_waveform‖ / r_waveform): "
              "for a magnitude-spectrogram certificate r_waveform = r / L with L a proven upper bound on the "
              "Lipschitz constant of waveform -> magnitude spectrogram, so the waveform SNR is "
              "20 log10(‖x_waveform‖·L / r); for a waveform certificate the two SNRs coincide; normalized "
              "filterbank energies have no waveform guarantee and no waveform SNR. Medians over the certified "
              "points (correct, radius > 0).", ""]
    lines += waveform_table(complete, lipschitz) + [""]
    if any(r.table_radii for r in complete):
        lines += ["Sequential configs' median radii are lower bounds at the level of each point's stopping look and "
                  f"run smaller than Cohen's at the same n{see}: they say how far the table's answers reach, not the "
                  "radius the model could be certified for.", ""]
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
        lines.append(f"| {cell(r.name)} | {fmt_float(info.get('accuracy'), '.3f')} | {float(r.correct.mean()):.3f} | "
                     f"{abstain:.3f} | {p_acc} | {p_abs} | {r.radii.size} |")
    lines.append("")

    # --- what the certificates mean against an attacker ---
    from audiocert.robustness_report import robustness_section  # a section built on this module's helpers

    lines += robustness_section(complete, output)
    from audiocert.perceptibility_report import perceptibility_section  # the same, for what a listener hears

    lines += perceptibility_section(complete, output)
    return atomic_write_text(output_file(output, REPORT_FILE), "\n".join(lines))
