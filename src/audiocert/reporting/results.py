"""Reading a sweep as the report sees it: one :class:`ConfigResult` per config directory (certificates, summary,
provenance), the config directories whose plan cannot be trusted, and each checkpoint's clean accuracy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiocert.kinds.certify.certificates import CERTIFICATION, trusted_certificates
from audiocert.provenance import CorruptFileError, file_digest, read_json, stable_hash
from audiocert.shards import config_dirs, inventory, read_plan
from audiocert.statistics import REPORT_RADII, max_certifiable_radius


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
    if plan["kind"] != CERTIFICATION:
        return None  # a config of a kind built on a certification: that kind's section shows it
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
    rows = trusted_certificates(config_dir)  # an edited table is refused: the report lists the config as damaged
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
