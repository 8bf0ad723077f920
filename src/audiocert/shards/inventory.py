"""The inventory of a config's shard files (valid once, duplicated, invalid, missing), merging, next rounds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import audiocert.shards.records as shard_records  # its _read_shard: the one reader of a shard file
from audiocert.provenance import (
    atomic_write_json,
    seal,
)
from audiocert.shards.kind import kind_of
from audiocert.shards.layout import SHARD_DIR, Shard, log, round_path
from audiocert.shards.plans import Layout, known_shards, read_plan
from audiocert.shards.records import (
    _VALIDATED,
    _layout_key,
    _load_summaries,
    _save_summaries,
    _signature,
    shard_summary,
    validated_summary,
)

# ----------------------------------------------------------------------------------------------------------
# Inventory, merging and rounds
# ----------------------------------------------------------------------------------------------------------
SHARD_NAME = re.compile(r"^(?P<hash>[0-9a-f]+)-(?P<index>\d+)\.json$")


@dataclass
class ShardInventory:
    shards: list[Shard]  # every shard of the rounds planned so far
    records: dict[int, dict[str, Any]]  # index -> summary of its valid file (see shard_summary)
    missing: list[int]
    duplicated: dict[int, list[Path]]
    invalid: dict[Path, str]
    merged: dict[str, Any] | None = None  # the summed counts (inventory(merge=True)), see CountsAccumulator

    @property
    def complete(self) -> bool:
        return not (self.missing or self.duplicated or self.invalid)

    def problems(self, config_dir: Path) -> str:
        lines = []
        if self.missing:
            shown = ", ".join(str(i) for i in self.missing[:20])
            lines.append(f"{len(self.missing)} missing shard(s): {shown}{' ...' if len(self.missing) > 20 else ''}")
        for index, paths in self.duplicated.items():
            lines.append(f"shard {index} present {len(paths)} times: {', '.join(str(p) for p in paths)}")
        for path, why in self.invalid.items():
            lines.append(f"{path}: {why}")
        return f"{config_dir}: cannot finalise:\n  " + "\n  ".join(lines)


def inventory(config_dir: str | Path, plan: Mapping[str, Any] | None = None, merge: bool = False) -> ShardInventory:
    """Classify every file under shards/ against the rounds planned so far: valid (once), duplicated, invalid,
    missing. ``merge``: also sum the counts of the valid files under their own names, reading each file once
    (``.merged``); without it, files already validated by this process are not read again."""
    config_dir = Path(config_dir)
    plan = plan or read_plan(config_dir)
    shards = known_shards(config_dir, plan)
    accumulator = kind_of(plan).accumulator(plan) if merge else None
    found: dict[int, list[tuple[Path, dict[str, Any]]]] = {}
    invalid: dict[Path, str] = {}
    shard_dir = config_dir / SHARD_DIR
    paths = sorted(shard_dir.glob("*.json")) if shard_dir.is_dir() else []
    key = _layout_key(plan, shards)
    cacheable = isinstance(shards, Layout)
    if accumulator is None and paths and cacheable:
        _load_summaries(config_dir, key)
    known = sum(1 for p in paths if (c := _VALIDATED.get(str(p))) and c[1] == key)
    for path in paths:
        if accumulator is None:
            summary, why = validated_summary(path, plan, shards)
            counts = None
        else:
            signature = _signature(path)
            record, why, counts = shard_records._read_shard(path, plan, shards)
            summary = shard_summary(record, path) if record is not None else None
            if signature is not None and cacheable:  # what a later status needs, without the counts
                _VALIDATED[str(path)] = (signature, key, summary, why)
        if summary is None:
            invalid[path] = why
            continue
        found.setdefault(summary["index"], []).append((path, summary))
        match = SHARD_NAME.match(path.name)
        if accumulator is not None and match and match["hash"] == plan["config_hash"] and int(
                match["index"]) == summary["index"]:
            accumulator.add(record, counts)  # only a file under its own name: a stray copy is never counted
    if cacheable and paths and sum(1 for p in paths if (c := _VALIDATED.get(str(p))) and c[1] == key) \
            > known + 100:  # worth saving: a later status then reads no file it has seen
        _save_summaries(config_dir, key, paths)
    duplicated = {i: [p for p, _ in entries] for i, entries in found.items() if len(entries) > 1}
    records = {}
    for index, entries in found.items():
        if len(entries) != 1:
            continue
        path, summary = entries[0]
        match = SHARD_NAME.match(path.name)
        if match and match["hash"] == plan["config_hash"] and int(match["index"]) == index:
            records[index] = summary
        else:  # a valid shard under a name that is not its own: a stray copy
            invalid[path] = f"counts of shard {index} under a name that is not its own"
    missing = [s.index for s in shards if s.index not in records and s.index not in duplicated]
    found_inventory = ShardInventory(shards, records, missing, duplicated, invalid)
    if accumulator is not None and not (missing or duplicated):
        found_inventory.merged = accumulator.result()
    return found_inventory


def next_work(config_dir: str | Path, plan: Mapping[str, Any], found: ShardInventory | None = None) -> list[int]:
    """Indices of the shards to run now: the missing shards of the rounds planned so far or, when those are all
    done, the shards of the next round (planned from the merged counts and written to rounds/). Empty when
    every point is settled: the config is ready to reduce. ``found``: an inventory with merged counts already
    taken (inventory(merge=True)), so a caller that reduces next reads the files once.

    A round's file is written once; a rerun after a kill finds it and runs what is missing of it, so no
    round is planned twice and no sample range is drawn twice.
    """
    config_dir = Path(config_dir)
    found = found if found is not None and (found.merged is not None or found.missing or found.duplicated) \
        else inventory(config_dir, plan, merge=True)
    if found.missing or found.duplicated:
        return found.missing
    last_round = max(s.round for s in found.shards)
    shards = kind_of(plan).next_shards(plan, found.merged, found.shards)
    if not shards:
        return []
    atomic_write_json(round_path(config_dir, last_round + 1), seal({
        "config_hash": plan["config_hash"], "code_version": plan["code_version"], "round": last_round + 1,
        "planned_at": time.time(),
        "shards": [s.to_json() for s in shards]}))
    log.info("%s: round %d asks %d point(s) for more samples (%d shard(s))", plan["label"], last_round + 1,
             len({e for s in shards for e in s.examples}), len(shards))
    return [s.index for s in shards]
