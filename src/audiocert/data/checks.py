"""Validation of the dataset config (``conf/dataset/*.yaml``) before anything touches the disk.

Every impossible value raises ``ValueError`` naming ``dataset.<field>`` and the value (the schema's refusal,
audiocert.schemas.data.DatasetSchema), so a bad override fails at once with a message that says which setting to
change.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audiocert.schemas import check_section
from audiocert.schemas.data import DatasetSchema

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
    layout: str = "librispeech"  # librispeech | folder (a class-per-folder tree, or a manifest)
    manifest: str | None = None
    classes: list[str] | None = None


def check_dataset_config(cfg: Mapping[str, Any]) -> DatasetSettings:
    """Check a dataset config (DictConfig or Mapping) against its schema (audiocert.schemas.data.DatasetSchema)
    and return its values with the schema's defaults filled in.

    Keys: ``root`` (the LibriSpeech dir; required), ``subset`` (default train-clean-360), ``speakers``
    (list of int IDs or null = all), ``num_classes`` (required, >= 2; must equal the length of
    ``speakers`` when given), ``sample_rate`` (16000), ``crop_samples`` (required), ``test_fraction``
    (0.2), ``train_crops_per_speaker`` (300), ``test_crops_per_speaker`` (50), ``split_seed`` (0),
    ``resample`` (true). Whether ``num_classes`` matches the speakers found on disk is checked after
    the scan, by :func:`audiocert.data.splits.build_datasets`.
    """
    values = check_section(DatasetSchema, cfg, "dataset")
    defaults = {spec.name: spec.default for spec in dataclasses.fields(DatasetSchema)}

    def value(name: str) -> Any:
        return values.get(name, defaults[name])

    speakers = value("speakers")
    return DatasetSettings(
        root=value("root"),
        subset=value("subset"),
        speakers=None if speakers is None else [int(s) for s in speakers],
        num_classes=int(value("num_classes")),
        sample_rate=int(value("sample_rate")),
        crop_samples=int(value("crop_samples")),
        train_crops_per_speaker=int(value("train_crops_per_speaker")),
        test_crops_per_speaker=int(value("test_crops_per_speaker")),
        split_seed=int(value("split_seed")),
        test_fraction=float(value("test_fraction")),
        resample=bool(value("resample")),
        layout=str(value("layout")),
        manifest=value("manifest"),
        classes=None if value("classes") is None else [str(c) for c in value("classes")],
    )
