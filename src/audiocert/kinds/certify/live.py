"""What a certification's W&B run shows while it runs: the certified-accuracy curve over the points finished so
far, with its 95% Clopper-Pearson band over those points (read from the shard files, never from the shards).

A point is finished when every shard of the rounds planned so far that covers it has a valid file and the
algorithm asks it for no more samples; its certificate is then the one the reducer will compute (the same
CERTIFY on the same counts), so the partial curve is the final curve restricted to the points done.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import audiocert.shards.records as shard_records  # its _read_shard: the one reader of a shard file
from audiocert.algorithms import make_algorithm
from audiocert.kinds.certify.counts import CountsAccumulator
from audiocert.shards import known_shards
from audiocert.shards.inventory import SHARD_NAME
from audiocert.shards.layout import SHARD_DIR
from audiocert.statistics import REPORT_RADII, certified_accuracy, rate_interval


def finished_counts(config_dir: Path, plan: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The positions of the finished points and the summed counts of every valid shard file (each index once)."""
    shards = known_shards(config_dir, plan)
    accumulator = CountsAccumulator(plan)
    done: set[int] = set()
    directory = Path(config_dir) / SHARD_DIR
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        match = SHARD_NAME.match(path.name)
        if not match or match["hash"] != plan["config_hash"]:
            continue
        record, _, counts = shard_records._read_shard(path, plan, shards)
        if record is None or record["index"] in done or int(match["index"]) != record["index"]:
            continue
        accumulator.add(record, counts)
        done.add(record["index"])
    covered = np.ones(len(plan["examples"]), dtype=bool)
    for shard in shards:
        if shard.index not in done:
            covered[list(shard.examples)] = False
    merged = {**accumulator.totals, "labels": accumulator.labels}
    target_s, target_e = make_algorithm(plan["quantities"]).targets_many(merged["selection"], merged["estimation"])
    settled = (target_s == merged["selection"].sum(axis=1)) & (target_e == merged["estimation"].sum(axis=1))
    return np.flatnonzero(covered & settled), merged


def live_spec(config_dir: Path, plan: Mapping[str, Any]) -> dict[str, Any]:
    """Scalars (points finished, certified accuracy at the report radii with its band, abstention rate, accuracy
    of g) and the partial curve as a table (radius, accuracy, band), over the points finished so far."""
    points, merged = finished_counts(config_dir, plan)
    total = len(plan["examples"])
    scalars: dict[str, Any] = {"live/points_finished": int(points.size), "live/points_total": total}
    if not points.size:
        return {"scalars": scalars}
    algorithm = make_algorithm(plan["quantities"])
    predicted, radius, _ = algorithm.certify_many(merged["selection"][points], merged["estimation"][points])
    correct = np.asarray(predicted) == merged["labels"][points]
    rows = []
    for r in REPORT_RADII:
        hits = int((correct & (radius >= r) & (radius > 0)).sum())  # as the reducer counts its interval
        low, high = rate_interval(hits, int(points.size))
        accuracy = certified_accuracy(radius, correct, r)
        rows.append([float(r), accuracy, low, high])
        scalars |= {f"live/certified_accuracy/r={r:g}": accuracy, f"live/certified_accuracy_low/r={r:g}": low,
                    f"live/certified_accuracy_high/r={r:g}": high}
    abstain = int((np.asarray(predicted) < 0).sum())
    scalars |= {"live/abstain_fraction": abstain / points.size, "live/smoothed_accuracy": float(correct.mean())}
    return {"scalars": scalars,
            "tables": {"live/certified_accuracy_curve": {
                "columns": ["radius", "certified_accuracy", "low", "high"], "data": rows}}}
