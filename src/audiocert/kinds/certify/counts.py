"""Certification records: class counts per phase, summed per point with exact tiling of the noise streams.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from audiocert.algorithms import make_algorithm
from audiocert.kinds.certify.plan import COUNTED_PHASES
from audiocert.provenance import (
    seal,
)
from audiocert.shards.layout import IncompleteSweepError, Shard
from audiocert.shards.records import sparse_counts
from audiocert.shards.worker import record_envelope


def counts_payload(counts: Mapping[str, np.ndarray], stage_norms: Sequence[float],
                   waveform_norms: Sequence[float]) -> dict[str, Any]:
    """What a certification shard's record adds to the envelope: sparse counts per phase and the points' norms."""
    return {"stage_norms": [float(v) for v in stage_norms], "waveform_norms": [float(v) for v in waveform_norms],
            "counts": {phase: sparse_counts(np.asarray(c, dtype=np.int64)) for phase, c in counts.items()}}


def make_record(plan: Mapping[str, Any], shard: Shard, counts: Mapping[str, np.ndarray],
                inputs: Sequence[Mapping[str, Any]], stage_norms: Sequence[float], waveform_norms: Sequence[float],
                elapsed: float, device: torch.device | str) -> dict[str, Any]:
    """The sealed counts record of a certification shard (``counts``: phase -> (examples, classes) integers)."""
    return seal({**record_envelope(plan, shard, inputs, elapsed, device),
                 **counts_payload(counts, stage_norms, waveform_norms)})


class CountsAccumulator:
    """Sums the counts of validated shard records per point and phase as they are read, so a config's files are
    read once and never all held in memory; :meth:`result` checks that the ranges of every (point, phase) tile
    [0, total) with no gap and no overlap (nothing counted twice, whatever was requeued)."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        num_examples, classes = len(plan["examples"]), int(plan["config"]["dataset"]["num_classes"])
        self.classes = classes
        # int32 holds any count a plan can ask for (at most n per point); half the memory of int64 at 921 classes.
        wide = max(int(plan["quantities"]["n0"]), int(plan["quantities"]["n"])) >= 2**31
        self.totals = {phase: np.zeros((num_examples, classes), dtype=np.int64 if wide else np.int32)
                       for phase in COUNTED_PHASES}
        self.seconds = np.zeros(num_examples)
        self.labels = np.asarray([i["label"] for i in plan["inputs"]])  # every record's labels were checked
        self.norms, self.waveform_norms = np.zeros(num_examples), np.zeros(num_examples)
        self.covered: dict[str, list[tuple[np.ndarray, int, int]]] = {phase: [] for phase in COUNTED_PHASES}

    def add(self, record: Mapping[str, Any], counts: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Add one record; ``counts``: phase -> (rows, classes, counts), rows relative to its examples."""
        examples = np.asarray(record["examples"], dtype=np.int64)
        for phase, (lo, hi) in record["ranges"].items():
            rows, classes, values = counts[phase]
            # (row, class) pairs are distinct within a record (validated) and a shard's examples are distinct
            # (check_shard_list), so plain fancy-index addition adds each count once (np.add.at is 10x slower).
            self.totals[phase][examples[rows], classes] += values.astype(self.totals[phase].dtype)
            self.covered[phase].append((examples, int(lo), int(hi)))
        self.seconds[examples] += record["elapsed_s"] / len(examples)  # a shard's time, shared among its examples
        self.norms[examples], self.waveform_norms[examples] = record["stage_norms"], record["waveform_norms"]

    def result(self) -> dict[str, Any]:
        for phase, entries in self.covered.items():
            check_tiling(phase, entries)
        return {**self.totals, "seconds": self.seconds, "labels": self.labels, "norms": self.norms,
                "waveform_norms": self.waveform_norms}


def check_tiling(phase: str, entries: Sequence[tuple[np.ndarray, int, int]]) -> None:
    """IncompleteSweepError unless, for every point, the ranges [lo, hi) of ``entries`` (points, lo, hi) sort into
    one prefix [0, total) of its noise stream: each range starts where the one before ended."""
    if not entries:
        return
    points = np.concatenate([e[0] for e in entries])
    lo = np.concatenate([np.full(e[0].size, e[1]) for e in entries])
    hi = np.concatenate([np.full(e[0].size, e[2]) for e in entries])
    order = np.lexsort((hi, lo, points))
    points, lo, hi = points[order], lo[order], hi[order]
    first = np.r_[True, points[1:] != points[:-1]]
    expected_lo = np.where(first, 0, np.r_[0, hi[:-1]])
    bad = np.flatnonzero(lo != expected_lo)
    if bad.size:
        point = int(points[bad[0]])
        ranges = sorted(zip(lo[points == point].tolist(), hi[points == point].tolist(), strict=True))
        kind = "overlapping" if lo[bad[0]] < expected_lo[bad[0]] else "non-contiguous"
        raise IncompleteSweepError(f"{kind} {phase} ranges of point {point}: {ranges}: its counts would not be one "
                                   "prefix of its noise stream")


def merge_counts(plan: Mapping[str, Any], records: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the counts of records whose counts are dense rows (phase -> one list of class counts per example), after
    checking that the ranges tile (see :class:`CountsAccumulator`). Also per-point compute time, label and norms."""
    accumulator = CountsAccumulator(plan)
    for record in records.values():
        counts = {}
        for phase, rows in record["counts"].items():
            dense = np.asarray(rows, dtype=np.int64).reshape(len(record["examples"]), -1)
            r, c = np.nonzero(dense)
            counts[phase] = (r, c, dense[r, c])
        accumulator.add(record, counts)
    return accumulator.result()


def settled(plan: Mapping[str, Any], merged: Mapping[str, np.ndarray]) -> bool:
    """True when the algorithm asks no point for more samples (the config can be reduced)."""
    target_s, target_e = make_algorithm(plan["quantities"]).targets_many(merged["selection"], merged["estimation"])
    return bool(np.array_equal(target_s, merged["selection"].sum(axis=1))
                and np.array_equal(target_e, merged["estimation"].sum(axis=1)))
