"""Schema of the perceptibility group (conf/perceptibility/): the masking-model measurements and the imperceptible
attack (audiocert.imperceptible), and what they ask of the dataset (16 kHz audio, crops of at least one frame)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audiocert.psychoacoustics.grid import N_FFT, SAMPLE_RATE
from audiocert.schemas.attack import AttackJudgeSchema, check_judge, check_stream
from audiocert.schemas.rules import (
    MISSING,
    Name,
    Number,
    Numbers,
    count,
    flag,
    join,
    number,
    refuse,
    section,
    setting,
)

MAX_DRAWS = 256  # random directions per point (perceptibility.draws)


@dataclass
class ImperceptibleAttackSchema:
    """perceptibility.attack: Qin et al.'s imperceptible attack on g (audiocert.imperceptible)."""

    enabled: bool = flag()
    start: float = number(above=0, maximum=100)
    shrink: float = number(above=0, maximum=1)
    steps: int = count()
    samples: int = count()
    step_factor: float = number(above=0, maximum=100)
    lambda0: float = number(minimum=0, maximum=1e6)
    lambda_up: float = number(minimum=1, maximum=100)
    lambda_down: float = number(above=0, maximum=1)
    up_every: int = count()
    down_every: int = count()
    candidates: int = count()
    n: int = count()
    alpha: float = number(above=0, below=0.5)
    judge: AttackJudgeSchema | None = section(AttackJudgeSchema)  # the same judge as the attack's
    batch_size: int = count()
    bf16: bool = flag(False)

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        check_stream(int(values["steps"]), int(values["samples"]), 1, prefix=prefix)
        check_judge(values, prefix)


@dataclass
class PerceptibilityShardSchema:
    examples: int = count()


@dataclass
class PerceptibilitySchema:
    """A perceptibility preset: radii, random directions, quality scores, the budget construction, the attack."""

    name: str | None = setting(Name(), None)
    radii: list[float] | None = setting(Numbers(Number(above=0), ascending=True, scalar=True,
                                                empty="give radii > 0, or null for the report's radii"), None)
    draws: int = count(maximum=MAX_DRAWS)
    quality_draws: int = count(minimum=0)
    margin_db: float = number(minimum=0, maximum=100)
    budget_iterations: int = count(minimum=0, maximum=10_000)
    points_per_speaker: int | None = count(None)
    save_examples: bool = flag(True)
    shard: PerceptibilityShardSchema = MISSING
    attack: ImperceptibleAttackSchema = MISSING

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        draws, quality = int(values["draws"]), values["quality_draws"]
        if int(quality) > draws:
            raise refuse(join(prefix, "quality_draws"), quality,
                         f"must be an integer in [0, {draws}] (at most {join(prefix, 'draws')})")


def check_perceptible_dataset(dataset: Mapping[str, Any], prefix: str = "dataset") -> None:
    """What the psychoacoustic model asks of the audio: 16 kHz, crops of at least one analysis frame."""
    rate, crop = dataset.get("sample_rate", SAMPLE_RATE), dataset.get("crop_samples")
    if rate != SAMPLE_RATE:
        raise refuse(join(prefix, "sample_rate"), rate, f"must be {SAMPLE_RATE} for the psychoacoustic model: "
                     f"resample the audio to {SAMPLE_RATE} Hz first (e.g. dataset.resample=true)")
    if crop is not None and int(crop) < N_FFT:
        raise refuse(join(prefix, "crop_samples"), crop, f"must be at least one analysis frame of the "
                     f"psychoacoustic model ({N_FFT} samples)")
