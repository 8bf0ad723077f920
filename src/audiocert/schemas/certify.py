"""Schemas of certification's own groups: certify/ (presets and the sequential options), logger/, and the sweep
section of conf/certify.yaml."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from audiocert.algorithms import ALGORITHMS
from audiocert.sampler import MAX_BLOCKS
from audiocert.schemas.rules import (
    Choice,
    Name,
    Number,
    Numbers,
    Text,
    count,
    flag,
    join,
    number,
    refuse_relation,
    section,
    setting,
)


@dataclass
class SequentialSchema:
    """certify.sequential: the looks of the sequential algorithm (audiocert.algorithms)."""

    first: int = count(100)
    growth: float = number(2, above=1)
    stop_alpha: float = number(0.001, above=0, below=0.5)
    last_share: float = number(0.75, above=0, below=1)
    radii: list[float] | None = setting(Numbers(Number(above=0), empty="list positive radii (or null)"), None)


@dataclass
class CertifyShardSchema:
    """certify.shard: points and noise samples per shard."""

    examples: int = count()
    samples: int = count()


@dataclass
class CertifySchema:
    """A certification preset (conf/certify/): CERTIFY's n0, n, alpha and how its work is cut."""

    name: str = setting(Name())
    algorithm: str = setting(Choice(ALGORITHMS), "cohen")
    n0: int = count()
    n: int = count()
    alpha: float = number(above=0, below=0.5)
    points_per_speaker: int = count()
    batch_size: int = count()
    block_size: int = count()
    bf16: bool = flag(False)
    shard: CertifyShardSchema = section(CertifyShardSchema)
    sequential: SequentialSchema | None = section(SequentialSchema)

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        batch, block = int(values["batch_size"]), int(values["block_size"])
        if batch < block:
            raise refuse_relation(join(prefix, "batch_size"), values["batch_size"],
                                  f"is below {join(prefix, 'block_size')}={values['block_size']}: batches hold whole "
                                  "noise blocks, so raise batch_size or lower block_size")
        samples = max(int(values["n0"]), int(values["n"]))
        if math.ceil(samples / block) > MAX_BLOCKS:
            raise refuse_relation(join(prefix, "n"), values["n"],
                                  f"needs more than {MAX_BLOCKS} noise blocks of {join(prefix, 'block_size')}="
                                  f"{values['block_size']}: raise block_size to at least "
                                  f"{math.ceil(samples / MAX_BLOCKS)}")


@dataclass
class LoggerSchema:
    """W&B logging of each reduced config (conf/logger/). A mode W&B cannot use (not offline, online or disabled)
    disables logging with a warning, never the work: it is not refused here."""

    mode: str = setting(Text())
    project: str | None = setting(Text(), None)
    entity: str | None = setting(Text(), None)
    dir: str | None = setting(Text("a path"), None)
    # wandb.init gives up after this long (a wrong key, no server): the monitor's thread, never a shard, waits.
    init_timeout_s: float = setting(Number(minimum=1.0, maximum=600.0), 30.0)
    live_interval_s: float = setting(Number(minimum=1.0, maximum=60.0), 20.0)  # the monitor's poll (<= a minute)


@dataclass
class SweepSchema:
    """The sweep's name and directory (conf/certify.yaml): the name becomes a directory."""

    name: str = setting(Name())
    dir: str = setting(Text("a path"))
