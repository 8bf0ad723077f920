"""The checks of a train config's values, before any work is done."""

from __future__ import annotations

from omegaconf import DictConfig

from audiocert.settings import check_number
from audiocert.stages import STAGES


def check_train_config(cfg: DictConfig) -> None:
    """Refuse a train config with a value out of range, naming the field: every number finite and in range."""
    t = cfg.train
    for name in ("epochs", "batch_size", "patience", "lr_patience", "validation_crops_per_speaker"):
        check_number(t.get(name), f"train.{name}", minimum=1, integer=True)
    check_number(t.get("lr"), "train.lr", above=0)
    check_number(t.get("max_minutes"), "train.max_minutes", above=0, optional=True)  # null: no budget
    check_number(t.get("threads"), "train.threads", minimum=1, integer=True, optional=True)
    for name in ("resume", "amp"):
        if name in t and not isinstance(t[name], bool):
            raise ValueError(f"train.{name}={t[name]!r} must be true or false")
    aug = cfg.train.augment
    if aug.stage is not None and aug.stage not in STAGES:
        raise ValueError(f"train.augment.stage={aug.stage!r} must be null or one of {', '.join(STAGES)}")
    check_number(aug.get("sigma"), "train.augment.sigma", minimum=0)
    # Epoch e shuffles with seed * 1000 + e, and torch takes seeds below 2^63 (signed) here.
    check_number(cfg.get("seed"), "seed", minimum=0, maximum=(2**63 - 1) // 1000 - int(t.epochs), integer=True)
