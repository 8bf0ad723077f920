"""The base of every kind of work that reads a certification (attack, perceptibility, ...).

Such a kind runs on the points of a certification config: its plan carries the certification's quantities
(the same f, g, points and noise streams) plus its own settings under its name, and lives in a directory of its
own inside the certification's, ``<certify config>/<prefix>-<hash>/``. What it shares with every such kind is
here, once: the plan envelope and its checks, the directory, the certificates it reads, the delta saved beside a
shard record for the report's example, the opening of its reducer, its provenance, its summary reader and W&B spec.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from audiocert.kinds.certify import CERTIFY, check_plan_consistency, planned_certificates
from audiocert.lipschitz import waveform_lipschitz_bound
from audiocert.provenance import (
    atomic_write_bytes,
    check_safe_name,
    code_version,
    read_json,
    seal_problem,
    stable_hash,
)
from audiocert.shards import (
    IncompleteSweepError,
    Shard,
    ShardInventory,
    WorkKind,
    inventory,
    read_plan,
    shard_path,
)
from audiocert.stages import WaveformBound
from audiocert.stages import stage as stage_entry

log = logging.getLogger(__name__)


def lipschitz_of(config: Mapping[str, Any]) -> float | None:
    """The proven bound L of waveform -> stage for a config's stage (None where there is none)."""
    stage = config["representation"]["stage"]
    if stage_entry(stage).waveform_bound is not WaveformBound.LIPSCHITZ:
        return None
    return _bound(json.dumps(config.get("frontend"), sort_keys=True), int(config["dataset"]["crop_samples"]))


@functools.lru_cache(maxsize=16)
def _bound(frontend_json: str, crop_samples: int) -> float:
    return float(waveform_lipschitz_bound(json.loads(frontend_json), crop_samples).bound)


class DerivedKind(WorkKind):
    """A kind of work on the points of a certification. A subclass names itself and defines its settings
    (:meth:`quantities`, :meth:`expected_quantities`), its shards (:meth:`shard_list`), its label and directory
    prefix, and the WorkKind methods that run, check, merge and reduce its shards."""

    parent = CERTIFY
    payload_keys = ("results", "example_delta")

    # --- what a subclass says -------------------------------------------------------------------------------
    def quantities(self, config: Mapping[str, Any], certify_plan: Mapping[str, Any],
                   certify_dir: Path) -> dict[str, Any]:
        """The certification's quantities plus, under this kind's name, its checked settings."""
        raise NotImplementedError

    def expected_quantities(self, plan: Mapping[str, Any], certify_quantities: Mapping[str, Any]) -> dict[str, Any]:
        """What a plan's quantities must be, from its config (ValueError where its own parts are malformed)."""
        raise NotImplementedError

    def shard_list(self, certify_plan: Mapping[str, Any], quantities: Mapping[str, Any]) -> list[Shard]:
        raise NotImplementedError

    def label_suffix(self, quantities: Mapping[str, Any]) -> str:
        return self.name

    def prefix(self, plan: Mapping[str, Any]) -> str:
        """The start of its directory's name (the config hash follows)."""
        return self.name

    # --- planning -------------------------------------------------------------------------------------------
    def make_plan(self, cfg: Any, parent_plan: Mapping[str, Any] | None, parent_dir: Path | None) -> dict[str, Any]:
        """The plan on the points of its certification plan (``parent_plan``, as the certify kind made it)."""
        config = OmegaConf.to_container(cfg, resolve=True)
        section = config.get(self.name) or {}
        check_safe_name(section.get("name", self.name), f"{self.name}.name")
        quantities = self.quantities(config, parent_plan, Path(parent_dir))
        shards = self.shard_list(parent_plan, quantities)
        return {
            "kind": self.name, "config_hash": stable_hash(quantities), "code_version": code_version(),
            "label": f"{parent_plan['label']}-{self.label_suffix(quantities)}", "config": config,
            "quantities": quantities, "parent_hash": parent_plan["config_hash"],
            "checkpoint": parent_plan["checkpoint"], "examples": parent_plan["examples"],
            "inputs": parent_plan["inputs"], "inputs_digest": parent_plan["inputs_digest"],
            "shards": [s.to_json() for s in shards],
        }

    def directory(self, base: Path, plan: Mapping[str, Any]) -> Path:
        return Path(base) / f"{self.prefix(plan)}-{plan['config_hash'][:8]}"

    def directories(self, certify_dir: Path) -> list[Path]:
        """This kind's config directories inside a certification config."""
        return sorted(p.parent for p in Path(certify_dir).glob(f"{self.name}-*/plan.json"))

    def check_plan(self, plan: Mapping[str, Any]) -> None:
        certify = {k: v for k, v in plan["quantities"].items() if k != self.name}
        check_plan_consistency({**plan, "quantities": certify})
        if self.expected_quantities(plan, certify) != plan["quantities"]:
            raise ValueError(f"its {self.name} quantities differ from what its config says")

    # --- what it reads of its certification -----------------------------------------------------------------
    @staticmethod
    def certificates(certify_dir: Path, plan: Mapping[str, Any]) -> dict[int, dict[str, Any]] | None:
        """dataset index -> certificate row of the reduced certification of exactly ``plan``'s parent (its config
        hash) covering all its points; None otherwise."""
        parent_hash = plan.get("parent_hash", plan["config_hash"])
        return planned_certificates(certify_dir, {"config_hash": parent_hash, "examples": plan["examples"]})

    def certified(self, certify_dir: Path, certify_plan: Mapping[str, Any], why: str) -> dict[int, dict[str, Any]]:
        """The certificates of exactly ``certify_plan``'s config, reduced in ``certify_dir``; FileNotFoundError
        naming the command to run first when there are none (``why``: what this kind needs them for)."""
        rows = self.certificates(certify_dir, certify_plan)
        if rows is None:
            raise FileNotFoundError(
                f"run `audiocert certify` with the same overrides first ({self.name} {why}; {certify_dir} has no "
                f"reduced certification of this config {certify_plan['config_hash']})")
        return rows

    # --- shards ---------------------------------------------------------------------------------------------
    @staticmethod
    def save_example_delta(work: Any, shard: Shard, delta: np.ndarray, position: int,
                           **extra: Any) -> dict[str, Any]:
        """Write a shard's example perturbation beside its record (``*.delta.npy``) and name it for the record."""
        buffer = io.BytesIO()
        np.save(buffer, delta, allow_pickle=False)
        data = buffer.getvalue()
        path = shard_path(work.config_dir, work.plan["config_hash"], shard.index).with_suffix(".delta.npy")
        atomic_write_bytes(path, data)  # before the record: a record names only a delta that is on disk
        return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "position": position, **extra}

    @staticmethod
    def example_delta_ok(delta: Any, shard: Shard) -> bool:
        """Whether a record's example_delta names a file of its own directory and one of its points."""
        return (isinstance(delta, dict) and isinstance(delta.get("file"), str) and "/" not in delta["file"]
                and isinstance(delta.get("sha256"), str) and delta.get("position") in shard.examples)

    @staticmethod
    def saved_delta(config_dir: Path, candidate: Mapping[str, Any]) -> np.ndarray | None:
        """A shard's saved example delta when its file is there and matches the SHA-256 its record names."""
        path = Path(config_dir) / "shards" / candidate["file"]
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != candidate["sha256"]:
            log.warning("%s does not match the SHA-256 its shard record names: not rendered", path)

            return None
        return np.load(io.BytesIO(data), allow_pickle=False)

    # --- results --------------------------------------------------------------------------------------------
    @staticmethod
    def merged(config_dir: Path, found: ShardInventory | None) -> tuple[dict[str, Any], ShardInventory]:
        """The plan and the complete inventory with merged results (IncompleteSweepError naming what is missing)."""
        plan = read_plan(config_dir)
        if found is None or found.merged is None:
            found = inventory(config_dir, plan, merge=True)
        if not found.complete:
            raise IncompleteSweepError(found.problems(config_dir))
        return plan, found

    @staticmethod
    def provenance(plan: Mapping[str, Any], found: ShardInventory) -> dict[str, Any]:
        return {"config": plan["config"], "config_hash": plan["config_hash"], "parent_hash": plan["parent_hash"],
                "quantities": plan["quantities"], "plan_code_version": plan["code_version"],
                "reducer_code_version": code_version(), "checkpoint": plan["checkpoint"],
                "inputs_digest": plan["inputs_digest"], "shards": len(found.records),
                "shard_hosts": sorted({r["host"] for r in found.records.values()})}

    def summary_problem(self, directory: Path) -> str:
        """'' when a config of this kind is reduced and its summary.json is as its reducer sealed it (or it is not
        reduced yet), else what is wrong with it and what to run."""
        path = Path(directory) / "summary.json"
        if not path.is_file():
            return ""
        try:
            summary = read_json(path)
        except (OSError, ValueError) as error:
            problem = f"unreadable ({error.__class__.__name__})"
        else:
            problem = seal_problem(summary) or ("" if summary.get("kind") == self.name else "of another kind")
        return f"{path} cannot be trusted ({problem}): run `audiocert reduce {directory}` to rebuild it" \
            if problem else ""

    def read_summary(self, directory: Path) -> dict[str, Any] | None:
        """summary.json of a reduced config of this kind, as its reducer sealed it (None when not reduced or
        damaged: see :meth:`summary_problem`)."""
        if self.summary_problem(directory) or not (Path(directory) / "summary.json").is_file():
            return None
        return read_json(Path(directory) / "summary.json")

    def results_of(self, certify_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
        """(directory, summary) of this kind's reduced configs inside a certification config."""
        return [(d, s) for d in self.directories(certify_dir) if (s := self.read_summary(d)) is not None]

    def damaged_lines(self, context: Any) -> list[str]:
        """Report lines naming this kind's results that cannot be trusted (edited or damaged summaries)."""
        problems = [self.summary_problem(d) for r in context.complete for d in self.directories(r.directory)]
        return [f"- **damaged** {p}" for p in problems if p] + ([""] if any(problems) else [])

    def report_entries(self, context: Any) -> list[tuple[Any, Path, dict[str, Any]]]:
        """(certification result, directory, summary) of this kind's reduced configs over the report's complete
        certifications: what its report section shows."""
        return [(r, d, s) for r in context.complete for d, s in self.results_of(r.directory)]

    def wandb_spec(self, config_dir: Path, plan: Mapping[str, Any]) -> dict[str, Any]:
        """The tables, line plots and summary metrics its reducer listed in wandb.json."""
        return read_json(Path(config_dir) / "wandb.json")


class PointResults:
    """The part of a derived kind's accumulator every such kind shares: per-point compute time and the example
    deltas the shards saved."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        self.seconds = np.zeros(len(plan["examples"]))
        self.deltas: list[dict[str, Any]] = []

    def add_record(self, record: Mapping[str, Any]) -> None:
        self.seconds[record["examples"]] += record["elapsed_s"] / len(record["examples"])
        if record.get("example_delta"):
            self.deltas.append({**record["example_delta"], "index": record["index"]})
