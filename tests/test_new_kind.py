"""A fourth kind of work added the documented way (README, "Add a kind of work"): one module (here, this file),
one config group (its settings under its name) and one report section, with nothing else changed. It must go
through plan, shards, reduce, status and report like the built-in kinds: the machinery calls the kind's interface
and never asks which kind it holds.

The toy kind measures, for each test point of a certification, the L2 norm of its clean input at the smoothing
stage times a setting ``toy.scale``: a result known exactly, so the test checks the numbers, not only the files."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import REPO, certify_overrides

from audiocert.kinds import KINDS, register_kind
from audiocert.kinds.derived import DerivedKind, PointResults
from audiocert.provenance import SEAL_KEY, atomic_write_json, seal
from audiocert.settings import check_number
from audiocert.shards import Shard, cut_shards, finite_numbers, select_points


class ToyKind(DerivedKind):
    """The stage norm of each point, times ``toy.scale``."""

    name = "toy"
    range_keys = ("points",)

    def quantities(self, config: Mapping[str, Any], certify_plan: Mapping[str, Any], certify_dir: Path) -> dict:
        return self.expected_quantities({"config": config}, certify_plan["quantities"])

    def expected_quantities(self, plan: Mapping[str, Any], certify_quantities: Mapping[str, Any]) -> dict:
        section = plan["config"].get("toy") or {}
        scale = float(check_number(section.get("scale", 1.0), "toy.scale", above=0))
        examples = int(check_number(section.get("examples", 2), "toy.examples", minimum=1, integer=True))
        return {**certify_quantities, "toy": {"scale": scale, "examples": examples}}

    def shard_list(self, certify_plan: Mapping[str, Any], quantities: Mapping[str, Any]) -> list[Shard]:
        return cut_shards([(select_points(certify_plan, None), {"points": (0, 1)})],
                          quantities["toy"]["examples"], 1)

    def run(self, work: Any, shard: Shard, on_example: Callable[[int, int], None] | None) -> dict[str, Any]:
        scale = work.plan["quantities"]["toy"]["scale"]
        values = []
        for position in shard.examples:
            _, x_stage, _ = work.context.example(position)
            values.append(scale * float(torch.linalg.vector_norm(x_stage.double())))
        return {"results": values, "example_delta": None}

    def check_payload(self, record: Mapping[str, Any], plan: Mapping[str, Any], shard: Shard,
                      inputs: Sequence[Mapping[str, Any]]) -> tuple[str, Any]:
        values = record.get("results")
        if not finite_numbers(values) or len(values) != len(inputs):
            return "results are not one finite number per example", None
        return "", values

    def accumulator(self, plan: Mapping[str, Any]) -> Any:
        return ToyResults(plan)

    def reduce(self, config_dir: Path, found: Any = None) -> dict[str, Any]:
        plan, found = self.merged(Path(config_dir), found)
        values = found.merged["values"]
        summary = {"kind": self.name, "label": plan["label"], "points": int(np.isfinite(values).sum()),
                   "mean": float(np.nanmean(values))}
        atomic_write_json(Path(config_dir) / "wandb.json", {"summary": {"toy/mean": summary["mean"]}})
        atomic_write_json(Path(config_dir) / "summary.json", seal(summary))  # sealed: what readers trust
        return summary

    def outcome(self, summary: Mapping[str, Any]) -> str:
        return f"{summary['points']} points, mean scaled norm {summary['mean']:.6g}"

    def report_section(self, context: Any) -> list[str]:
        lines = []
        for directory in sorted(Path(d) for r in context.complete for d in self.directories(r.directory)):
            summary = self.read_summary(directory)
            if summary is not None:
                lines.append(f"- toy {summary['label']}: mean scaled norm {summary['mean']:.6g}")
        return ["## Toy measurements", "", *lines, ""] if lines else []


class ToyResults(PointResults):
    def __init__(self, plan: Mapping[str, Any]) -> None:
        super().__init__(plan)
        self.values = np.full(len(plan["examples"]), np.nan)

    def add(self, record: Mapping[str, Any], values: Sequence[float]) -> None:
        self.values[record["examples"]] = values
        self.add_record(record)

    def result(self) -> dict[str, Any]:
        return {"values": self.values, "seconds": self.seconds, "deltas": self.deltas}


@pytest.mark.slow
def test_a_fourth_kind_goes_through_plan_shards_reduce_status_and_report(trained, tmp_path, request):
    from hydra import compose, initialize_config_dir

    from audiocert.kinds.certify import read_certificates
    from audiocert.launching.planning import plan_config
    from audiocert.launching.sweep import finish_sweep
    from audiocert.report import write_report
    from audiocert.shards import read_plan
    from audiocert.status import format_status

    toy = register_kind(ToyKind())
    request.addfinalizer(lambda: KINDS.pop(toy.name))  # known to this test only
    sweep = tmp_path / "sweep"
    overrides = [*certify_overrides(trained, "toy"), f"checkpoint={trained['dir'] / 'best.pt'}", f"sweep.dir={sweep}",
                 "launcher=debug", "launcher.threads=1", "+toy.scale=2.5", "+toy.examples=3"]
    threads = torch.get_num_threads()
    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            certify_entry = plan_config(compose("certify", overrides=overrides))
            [certified] = finish_sweep([certify_entry], progress=False)
            entry = plan_config(compose("certify", overrides=overrides), work="toy")
            [result] = finish_sweep([entry], progress=False)
    finally:
        torch.set_num_threads(threads)
    config_dir = Path(entry["config_dir"])
    plan = read_plan(config_dir)
    assert plan["kind"] == "toy" and config_dir.parent == Path(certify_entry["config_dir"])
    assert config_dir.name.startswith("toy-") and len(plan["shards"]) == math.ceil(len(plan["examples"]) / 3)
    # The numbers: the scaled norm of every point's clean stage input, as each shard recorded it.
    summary = result["summary"]
    stored = toy.read_summary(config_dir)  # sealed as it was written: trusted
    assert stored is not None and summary == {k: v for k, v in stored.items() if k != SEAL_KEY}
    assert summary["points"] == len(plan["examples"]) == len(read_certificates(Path(certify_entry["config_dir"])
                                                                                / "certificates.tsv"))
    norms = [r["stage_norms"] for r in map(json.loads, (p.read_text() for p in
             sorted((Path(certify_entry["config_dir"]) / "shards").glob("*.json"))))]
    assert summary["mean"] == pytest.approx(2.5 * float(np.mean(np.concatenate(norms))), rel=1e-6)
    assert toy.outcome(summary).startswith(f"{len(plan['examples'])} points")
    # status lists it beside its certification; the report carries its section.
    status = format_status(sweep)
    assert plan["label"] in status and "toy" in plan["label"]
    text = write_report([sweep]).read_text()
    assert f"## Toy measurements\n\n- toy {plan['label']}: mean scaled norm {summary['mean']:.6g}" in text
    assert certified["summary"]["kind"] == "certify"
