"""Schema of the attack group (conf/attack/), and the size of an attack's noise stream (a rule between its steps,
samples and restarts, shared with the imperceptible attack of perceptibility/)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from audiocert.sampler import MAX_BLOCKS
from audiocert.schemas.rules import (
    Choice,
    Name,
    Number,
    Numbers,
    SettingError,
    count,
    flag,
    join,
    number,
    refuse_relation,
    section,
    setting,
)

DEFAULT_STEP_FACTOR = 2.0  # step a = 2 eps / T (the choice, and SmoothAdv's 2 eps / T)

# Where delta enters (audiocert.attacks.space.SPACES, which imports this package's callers: not imported here).
SPACES: tuple[str, ...] = ("stage", "waveform")

# attack.eps: budgets > 0, each once; one number is a list of one (null in a config: the report's radii).
EPS = Numbers(Number(above=0), unique=True, scalar=True, empty="give at least one budget > 0")


def attack_stream_samples(steps: int, samples: int, restarts: int) -> int:
    """Attack-stream noise samples a setting draws: (1 + restarts x T) x m (the evaluation draws, then T steps
    per restart)."""
    return (1 + restarts * steps) * samples


def attack_stream_blocks(steps: int, samples: int, restarts: int, block_size: int | None = None) -> int:
    """Noise blocks of the attack stream a setting uses: its noise blocks plus one start block per restart >= 1."""
    block_size = samples if block_size is None else block_size
    return math.ceil(attack_stream_samples(steps, samples, restarts) / block_size) + restarts - 1


def check_stream(steps: int, samples: int, restarts: int, block_size: int | None = None, prefix: str = "attack"
                 ) -> None:
    """SettingError unless the setting fits the attack stream of an example (``MAX_BLOCKS`` blocks); it names
    ``<prefix>.restarts`` (``<prefix>.steps`` for a single restart) and the settings it depends on."""
    used = attack_stream_blocks(steps, samples, restarts, block_size)
    if used > MAX_BLOCKS:
        key, value = (f"{prefix}.restarts", restarts) if restarts > 1 else (f"{prefix}.steps", steps)
        raise SettingError(key, (
            f"{key}={value} needs {used} noise blocks of {block_size or samples} samples ((1 + {prefix}.restarts="
            f"{restarts} x {prefix}.steps={steps}) x {prefix}.samples={samples}), more than the {MAX_BLOCKS} of an "
            f"example's attack stream: lower {prefix}.restarts or {prefix}.steps"))


@dataclass
class AttackShardSchema:
    """attack.shard: points per shard, and budgets per shard (null: all of them)."""

    examples: int = count()
    eps: int | None = count(None)


@dataclass
class AttackJudgeSchema:
    """attack.judge: where an undecided judge's looks end (n, 2n, 4n, ... up to max_n; null: PREDICT at n)."""

    max_n: int | None = count(None)


@dataclass
class AttackSchema:
    """An attack preset (conf/attack/): SmoothAdv PGD on g (and PGD on f), judged by PREDICT."""

    name: str | None = setting(Name(), None)
    space: str = setting(Choice(SPACES))
    eps: list[float] | None = setting(EPS, None)
    steps: int = count()
    samples: int = count()
    restarts: int = count()
    step_factor: float = number(DEFAULT_STEP_FACTOR, above=0)
    n: int = count()
    alpha: float = number(above=0, below=0.5)
    judge: AttackJudgeSchema | None = section(AttackJudgeSchema)
    batch_size: int = count()
    base: bool = flag(True)
    bf16: bool = flag(False)
    points_per_speaker: int | None = count(None)
    save_examples: int = setting(Number(minimum=0, integer=True, flags=True), 1)
    shard: AttackShardSchema | None = section(AttackShardSchema)

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        check_stream(int(values["steps"]), int(values["samples"]), int(values["restarts"]), prefix=prefix)
        check_judge(values, prefix)


def check_judge(values: dict[str, Any], prefix: str) -> None:
    """The judge's last look is at least its first: judge.max_n >= n."""
    max_n = (values.get("judge") or {}).get("max_n")
    if max_n is not None and int(max_n) < int(values["n"]):
        raise refuse_relation(join(prefix, "judge.max_n"), max_n, f"is below {join(prefix, 'n')}={values['n']}: the "
                              "judge's last look must be at least its first (null: PREDICT at n only)")
