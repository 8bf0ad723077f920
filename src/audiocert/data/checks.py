"""Validation of the dataset config (``conf/dataset/*.yaml``) before anything touches the disk.

Every impossible value raises ``ValueError`` naming ``dataset.<field>`` and the value, so a bad override
fails at once with a message that says which setting to change.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DatasetSettings", "check_dataset_config"]


@dataclass(frozen=True)
class DatasetSettings:
    """The checked values of a dataset config, defaults filled in (see :func:`check_dataset_config`)."""

    root: str | os.PathLike
    subset: str
    speakers: list[int] | None
    num_classes: int
    sample_rate: int
    crop_samples: int
    train_crops_per_speaker: int
    test_crops_per_speaker: int
    split_seed: int
    test_fraction: float
    resample: bool


_MISSING = object()


def _cfg_get(cfg: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    try:
        present = key in cfg
        value = cfg[key] if present else default
    except Exception as exc:  # e.g. OmegaConf MissingMandatoryValue / interpolation errors
        raise ValueError(f"dataset.{key}: {exc}") from exc
    if value is _MISSING:
        raise ValueError(f"dataset.{key} is required but missing from the dataset config")
    return value


def _cfg_int(cfg: Mapping[str, Any], key: str, default: Any = _MISSING, minimum: int = 1) -> int:
    value = _cfg_get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"dataset.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_dataset_config(cfg: Mapping[str, Any]) -> DatasetSettings:
    """Check a dataset config (DictConfig or Mapping) and return its values with defaults filled in.

    Keys: ``root`` (the LibriSpeech dir; required), ``subset`` (default train-clean-360), ``speakers``
    (list of int IDs or null = all), ``num_classes`` (required, >= 2; must equal the length of
    ``speakers`` when given), ``sample_rate`` (16000), ``crop_samples`` (required), ``test_fraction``
    (0.2), ``train_crops_per_speaker`` (300), ``test_crops_per_speaker`` (50), ``split_seed`` (0),
    ``resample`` (true). Whether ``num_classes`` matches the speakers found on disk is checked after
    the scan, by :func:`audiocert.data.splits.build_datasets`.
    """
    root = _cfg_get(cfg, "root")
    if not isinstance(root, (str, os.PathLike)) or not str(root):
        raise ValueError(f"dataset.root must be a path to the LibriSpeech directory, got {root!r}")
    subset = _cfg_get(cfg, "subset", "train-clean-360")
    if not isinstance(subset, str) or not subset or "/" in subset:
        raise ValueError(
            f"dataset.subset must be a subset directory name like 'train-clean-360', got {subset!r}"
        )
    raw_speakers = _cfg_get(cfg, "speakers", None)
    speakers: list[int] | None = None
    if raw_speakers is not None:
        if isinstance(raw_speakers, (str, bytes)) or not isinstance(raw_speakers, Iterable):
            raise ValueError(
                f"dataset.speakers must be a list of integer speaker IDs or null, got {raw_speakers!r}"
            )
        speakers = list(raw_speakers)
        if not speakers or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in speakers):
            raise ValueError(
                f"dataset.speakers must be a non-empty list of integer speaker IDs or null, got {speakers!r}"
            )
        if len(set(speakers)) != len(speakers):
            raise ValueError(f"dataset.speakers contains duplicates: {speakers!r}")
        speakers = [int(s) for s in speakers]
    num_classes = _cfg_int(cfg, "num_classes", minimum=2)
    sample_rate = _cfg_int(cfg, "sample_rate", 16000)
    crop_samples = _cfg_int(cfg, "crop_samples")
    train_cps = _cfg_int(cfg, "train_crops_per_speaker", 300)
    test_cps = _cfg_int(cfg, "test_crops_per_speaker", 50)
    split_seed = _cfg_int(cfg, "split_seed", 0, minimum=0)
    test_fraction = _cfg_get(cfg, "test_fraction", 0.2)
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0.0 < float(test_fraction) < 1.0
    ):
        raise ValueError(f"dataset.test_fraction must be in (0, 1) (exclusive), got {test_fraction!r}")
    resample = _cfg_get(cfg, "resample", True)
    if not isinstance(resample, bool):
        raise ValueError(f"dataset.resample must be true or false, got {resample!r}")
    if speakers is not None and len(speakers) != num_classes:
        raise ValueError(
            f"dataset.num_classes={num_classes} but dataset.speakers lists {len(speakers)} speakers; "
            "make them agree"
        )
    return DatasetSettings(
        root=root,
        subset=subset,
        speakers=speakers,
        num_classes=num_classes,
        sample_rate=sample_rate,
        crop_samples=crop_samples,
        train_crops_per_speaker=train_cps,
        test_crops_per_speaker=test_cps,
        split_seed=split_seed,
        test_fraction=float(test_fraction),
        resample=resample,
    )
