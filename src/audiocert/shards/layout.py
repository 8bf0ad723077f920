"""The shape of shard work: shards, their ranges and numbering, and where their files live.

A config's work comes in rounds; a round is cut into shards (blocks of points x ranges of one sampling
dimension per range key). Every shard writes one file ``shards/<config_hash>-<index>.json`` atomically.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiocert.settings import require

log = logging.getLogger(__name__)


PLAN_FILE = "plan.json"


SHARD_DIR = "shards"


ROUND_DIR = "rounds"


PREVIOUS_DIR = "previous"  # results of older code versions, set aside when a config is planned again


KEPT_ON_REPLAN = {PLAN_FILE, "jobs.json", PREVIOUS_DIR}  # jobs.json: status.JOBS_FILE (a layer above)


SHARD_FORMAT = 4  # 4: sparse counts, sealed, one line; 3: phase ranges and rounds; 2: input digests, device type




class IncompleteSweepError(RuntimeError):
    """Raised when a config's shards are missing, duplicated, foreign, or its rounds are not finished."""


@dataclass(frozen=True)
class Shard:
    index: int
    examples: tuple[int, ...]  # positions into the plan's example list
    ranges: dict[str, tuple[int, int]]  # phase -> sample range [lo, hi) of that phase, for every example
    round: int = 0

    @property
    def samples(self) -> int:
        return len(self.examples) * sum(hi - lo for lo, hi in self.ranges.values())

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "round": self.round, "examples": list(self.examples),
                "ranges": {phase: list(r) for phase, r in self.ranges.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Shard:
        return cls(int(data["index"]), tuple(data["examples"]),
                   {str(phase): (int(r[0]), int(r[1])) for phase, r in data["ranges"].items()}, int(data["round"]))


def cut_shards(groups: Sequence[tuple[Sequence[int], Mapping[str, tuple[int, int]]]], examples_per_shard: int,
               samples_per_shard: int, first_index: int = 0, round: int = 0) -> list[Shard]:
    """Shards of a round: each group (points, phase -> [lo, hi)) cut into blocks of points times chunks of
    samples; chunk j covers [lo + j S, lo + (j + 1) S) of every phase's range (ranges left empty are dropped)."""
    shards: list[Shard] = []
    for examples, ranges in groups:
        examples = list(examples)
        chunks = math.ceil(max(hi - lo for lo, hi in ranges.values()) / samples_per_shard)
        for first in range(0, len(examples), examples_per_shard):
            block = tuple(examples[first : first + examples_per_shard])
            for j in range(chunks):
                chunk = {phase: (min(lo + j * samples_per_shard, hi), min(lo + (j + 1) * samples_per_shard, hi))
                         for phase, (lo, hi) in ranges.items()}
                chunk = {phase: r for phase, r in chunk.items() if r[1] > r[0]}
                shards.append(Shard(first_index + len(shards), block, chunk, round))
    return shards


def check_shard_list(shards: Any, first_index: int, num_examples: int, round: int,
                     range_keys: Sequence[str]) -> None:
    """ValueError unless ``shards`` are well-formed shard specs of ``round`` numbered from ``first_index``."""
    require(isinstance(shards, list) and shards, "no shards")
    for k, spec in enumerate(shards):
        require(type(spec["index"]) is int and spec["index"] == first_index + k, f"shard index {spec['index']}")
        require(type(spec["round"]) is int and spec["round"] == round,
                f"shard {spec['index']} of round {spec['round']}")
        require(all(type(e) is int and 0 <= e < num_examples for e in spec["examples"]) and spec["examples"])
        require(len(set(spec["examples"])) == len(spec["examples"]), f"shard {spec['index']} repeats an example")
        require(isinstance(spec["ranges"], dict) and spec["ranges"] and set(spec["ranges"]) <= set(range_keys))
        require(all(len(r) == 2 and all(type(v) is int for v in r) and 0 <= r[0] < r[1]
                   for r in spec["ranges"].values()))


def round_path(config_dir: str | Path, round: int) -> Path:
    return Path(config_dir) / ROUND_DIR / f"{round:03d}.json"


def shard_path(config_dir: str | Path, config_hash: str, index: int) -> Path:
    return Path(config_dir) / SHARD_DIR / f"{config_hash}-{index:05d}.json"


def is_int(value: Any) -> bool:
    """An integer read from JSON, not a boolean (bool is an int subclass: a count of True is no count)."""
    return type(value) is int



def select_points(plan: Mapping[str, Any], points_per_speaker: int | None) -> list[int]:
    """Positions of a certification plan's examples that another kind of work covers: all of them (None), or the
    first k of each speaker's (the same test points as the certification, fewer of them)."""
    if points_per_speaker is None:
        return list(range(len(plan["examples"])))
    seen: dict[int, int] = {}
    positions = []
    for position, planned in enumerate(plan["inputs"]):
        seen[planned["label"]] = seen.get(planned["label"], 0) + 1
        if seen[planned["label"]] <= points_per_speaker:
            positions.append(position)
    return positions
