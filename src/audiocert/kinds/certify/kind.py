"""Certification as a kind of work: class counts of f under noise, certified by CERTIFY and PREDICT."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiocert.algorithms import make_algorithm
from audiocert.kinds.certify.certificates import CERTIFICATION
from audiocert.kinds.certify.counts import CountsAccumulator, counts_payload
from audiocert.kinds.certify.live import live_spec
from audiocert.kinds.certify.noisy_example import noisy_example
from audiocert.kinds.certify.plan import COUNTED_PHASES, check_plan_consistency, make_plan, round_shards
from audiocert.kinds.certify.reduce import reduce_config
from audiocert.kinds.certify.section_abstentions import abstentions_section
from audiocert.kinds.certify.section_certified_accuracy import certified_accuracy_section
from audiocert.kinds.certify.section_figures import figures_section
from audiocert.kinds.certify.section_meaning import meaning_section
from audiocert.kinds.certify.section_runs import runs_section
from audiocert.kinds.certify.wandb_spec import certify_wandb_spec
from audiocert.provenance import check_safe_name
from audiocert.shards.kind import WorkKind
from audiocert.shards.layout import Shard
from audiocert.shards.records import decode_counts, finite_numbers
from audiocert.shards.worker import ConfigWork


class CertifyKind(WorkKind):
    """Certification: class counts of f under noise, per point and phase; rounds as the algorithm asks."""

    name = CERTIFICATION
    range_keys = COUNTED_PHASES
    payload_keys = ("counts", "stage_norms", "waveform_norms")
    result_files = ("certificates.tsv", "summary.json")
    done_word = "certified"
    verb = "certified"
    purpose = "certifying"

    def make_plan(self, cfg: Any, parent_plan: Mapping[str, Any] | None = None,
                  parent_dir: Path | None = None) -> dict[str, Any]:
        return make_plan(cfg)

    def directory(self, base: Path, plan: Mapping[str, Any]) -> Path:
        return Path(base) / f"{check_safe_name(plan['label'], 'label')}-{plan['config_hash'][:8]}"

    def check_plan(self, plan: Mapping[str, Any]) -> None:
        check_plan_consistency(plan)
        int(plan["quantities"]["n0"]), int(plan["quantities"]["n"])
        make_algorithm(plan["quantities"])

    def run(self, work: ConfigWork, shard: Shard, on_example: Callable[[int, int], None] | None) -> dict[str, Any]:
        context = work.context
        counts: dict[str, list[np.ndarray]] = {phase: [] for phase in shard.ranges}
        stage_norms, waveform_norms = [], []
        for done, position in enumerate(shard.examples, start=1):
            waveform, x_stage, planned = context.example(position)
            for phase, (lo, hi) in shard.ranges.items():
                counts[phase].append(context.smooth.counts(x_stage, phase, lo, hi, context.batch_size,
                                                           example=planned["index"]))
            stage_norms.append(float(torch.linalg.vector_norm(x_stage.double())))
            waveform_norms.append(float(torch.linalg.vector_norm(waveform.double())))
            if on_example is not None:
                on_example(done, len(shard.examples))
        return counts_payload({p: np.stack(c) for p, c in counts.items()}, stage_norms, waveform_norms)

    def check_payload(self, record: Mapping[str, Any], plan: Mapping[str, Any], shard: Shard,
                      inputs: Sequence[Mapping[str, Any]]) -> tuple[str, Any]:
        for key in ("stage_norms", "waveform_norms"):
            if not finite_numbers(record.get(key)) or len(record[key]) != len(inputs):
                return f"{key} are not one finite non-negative number per example", {}
        classes = int(plan["config"]["dataset"]["num_classes"])
        width = {phase: hi - lo for phase, (lo, hi) in shard.ranges.items()}
        counted = record.get("counts")
        if not isinstance(counted, dict) or set(counted) != set(width):
            return f"counts are not one table per phase of {sorted(width)}", {}
        decoded = {}
        for phase in width:
            try:
                decoded[phase] = decode_counts(counted[phase], len(inputs), classes, width[phase])
            except ValueError as error:
                return f"{phase} counts are not {len(inputs)} x {classes} non-negative integers ({error})", {}
        return "", decoded

    def accumulator(self, plan: Mapping[str, Any]) -> CountsAccumulator:
        return CountsAccumulator(plan)

    def next_shards(self, plan: Mapping[str, Any], merged: Mapping[str, Any], shards: Sequence[Shard]) -> list[Shard]:
        return round_shards(make_algorithm(plan["quantities"]), merged["selection"], merged["estimation"],
                            int(plan["quantities"]["shard"]["examples"]), int(plan["quantities"]["shard"]["samples"]),
                            first_index=len(shards), round=max(s.round for s in shards) + 1)


    def reduce(self, config_dir: Path, found: Any = None) -> dict[str, Any]:
        return reduce_config(config_dir, found)

    def outcome(self, summary: Mapping[str, Any]) -> str:
        return (f"{summary['num_points']} points, smoothed accuracy {summary['smoothed_accuracy']:.3f}, "
                f"abstain {summary['abstain_fraction']:.3f}")

    def report_section(self, context: Any) -> list[str]:
        """The runs, the certified-accuracy tables, the figures, what each certificate means, the accuracies."""
        lines: list[str] = []
        for section in (runs_section, certified_accuracy_section, figures_section, meaning_section,
                        abstentions_section):
            lines += section(context)
        return lines

    def wandb_spec(self, config_dir: Path, plan: Mapping[str, Any]) -> dict[str, Any]:
        return certify_wandb_spec(config_dir, plan)

    def live_spec(self, config_dir: Path, plan: Mapping[str, Any]) -> dict[str, Any]:
        return live_spec(config_dir, plan)

    def wandb_audio(self, config_dir: Path, plan: Mapping[str, Any]) -> list[dict[str, Any]]:
        return noisy_example(plan)


CERTIFY = CertifyKind()
