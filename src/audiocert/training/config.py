"""The checks of a train config's values, before any work is done."""

from __future__ import annotations

from omegaconf import DictConfig

from audiocert.schemas import check_section
from audiocert.schemas.commands import TrainConfig


def check_train_config(cfg: DictConfig) -> None:
    """Refuse a train config with a value out of range, naming the field: its train section and seed are checked
    against the schema of `audiocert train` (audiocert.schemas: every number finite and in range)."""
    check_section(TrainConfig, cfg, only=("seed", "train"))
