"""Schema of the train group of conf/train.yaml: epochs, optimiser, budget, augmentation."""

from __future__ import annotations

from dataclasses import dataclass

from audiocert.schemas.data import stages
from audiocert.schemas.rules import Choice, count, flag, number, section, setting


@dataclass
class AugmentSchema:
    """train.augment: Gaussian noise augmentation at a stage (null: none)."""

    stage: str | None = setting(Choice(stages), None)
    sigma: float = number(0.0, minimum=0)


@dataclass
class TrainSchema:
    """How a base classifier is trained (conf/train.yaml's train section)."""

    epochs: int = count()
    batch_size: int = count()
    lr: float = number(above=0)
    lr_patience: int = count()
    patience: int = count()
    max_minutes: float | None = number(None, above=0)  # null: no wall-clock budget
    validation_crops_per_speaker: int = count()
    resume: bool = flag(True)
    threads: int | None = count(None)
    amp: bool = flag(True)
    augment: AugmentSchema = section(AugmentSchema)
