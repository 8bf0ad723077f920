"""Schemas of the groups that say what is classified and how: paths/, dataset/, model/, frontend/,
representation/, smoothing/ (conf/<group>/*.yaml)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from audiocert.schemas.rules import (
    MISSING,
    Anything,
    Choice,
    Name,
    Number,
    Numbers,
    Text,
    Texts,
    count,
    flag,
    join,
    number,
    refuse,
    refuse_relation,
    section,
    setting,
)
from audiocert.stages import STAGES

PATH = Text("a path")


def stages() -> tuple[str, ...]:
    return STAGES


@dataclass
class PathsSchema:
    """Where data and results live (conf/paths/)."""

    data_dir: str = setting(PATH)
    runs_dir: str = setting(PATH)


@dataclass
class GenerateSchema:
    """A synthetic dataset's corpus (dataset.generate; audiocert.corpus.generate_corpus)."""

    num_speakers: int = setting(Number(minimum=2, integer=True, strict=True), 10)
    utterances_per_speaker: int = setting(Number(minimum=2, integer=True, strict=True), 24)
    seed: int = setting(Number(minimum=0, integer=True, strict=True), 0)
    subset: str = setting(Text("a directory name such as 'train-clean-360'", plain=True), "train-clean-360")
    sample_rate: int = setting(Number(minimum=8000, integer=True, strict=True), 16000)
    min_seconds: float = setting(Number(minimum=0.25, maximum=120, strict=True), 2.0)
    max_seconds: float = setting(Number(minimum=0.25, maximum=120, strict=True), 5.0)

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        low, high = values.get("min_seconds", 2.0), values.get("max_seconds", 5.0)
        if low > high:
            raise refuse_relation(join(prefix, "min_seconds"), low,
                                  f"exceeds {join(prefix, 'max_seconds')}={high}: utterances have no length")


@dataclass
class DatasetSchema:
    """A LibriSpeech-layout dataset (conf/dataset/): which speakers, which crops, how they are split.

    Integer settings must be integers as written (4, not 4.0): they enter the config hash as they are.
    """

    name: str | None = setting(Name(), None)
    root: str = setting(Text("a path to the LibriSpeech directory"))
    subset: str = setting(Text("a subset directory name like 'train-clean-360'", plain=True), "train-clean-360")
    speakers: list[int] | None = setting(Numbers(Number(integer=True, strict=True), unique=True, per_item=False,
                                                 empty="list speaker IDs, or null for every speaker"), None)
    num_classes: int = setting(Number(minimum=2, integer=True, strict=True))
    sample_rate: int = setting(Number(minimum=1, integer=True, strict=True), 16000)
    crop_samples: int = setting(Number(minimum=1, integer=True, strict=True))
    test_fraction: float = setting(Number(above=0, below=1, strict=True), 0.2)
    train_crops_per_speaker: int = setting(Number(minimum=1, integer=True, strict=True), 300)
    test_crops_per_speaker: int = setting(Number(minimum=1, integer=True, strict=True), 50)
    split_seed: int = setting(Number(minimum=0, integer=True, strict=True), 0)
    resample: bool = flag(True)
    generate: GenerateSchema | None = None
    # Any labelled audio (conf/dataset/folder.yaml): absent from the LibriSpeech configs, so their hashes stay.
    layout: str = setting(Choice(("librispeech", "folder")), "librispeech")
    manifest: str | None = setting(Text("a CSV or TSV file of path,label[,split] rows"), None)
    classes: list[str] | None = setting(Texts(), None)

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        speakers = values.get("speakers")
        if speakers is not None and len(speakers) != values["num_classes"]:
            raise refuse_relation(join(prefix, "num_classes"), values["num_classes"],
                                  f"but {join(prefix, 'speakers')} lists {len(speakers)} speakers: make them agree")


@dataclass
class ModelSchema:
    """The ResCNN's size (conf/model/)."""

    name: str = setting(Name())
    widths: list[int] = setting(Numbers(Number(minimum=1, integer=True), length=4))
    embedding_dim: int = count(512)
    dropout: float = number(0.5, minimum=0, below=1)
    bn_momentum: float = number(0.01, minimum=0, maximum=1)

    @classmethod
    def variant(cls, section: Any) -> type:
        """A model section with ``net`` is a user's network (conf/model/external.yaml)."""
        return ExternalModelSchema if hasattr(section, "get") and "net" in section else cls


@dataclass
class NetSchema:
    """model.net: Hydra instantiate's ``_target_`` (a class path) and the constructor's arguments beside it (any
    other keys, left to the class to check: instantiating it is the check, before anything is written)."""

    _target_: str = setting(Text("an importable class path such as mypkg.nets.KWSNet"))


@dataclass
class ExternalModelSchema:
    """A user's torch.nn.Module (conf/model/external.yaml; audiocert.external)."""

    name: str = setting(Name())
    net: NetSchema = MISSING
    weights: str | None = setting(Text("a path to a state_dict file"), None)
    input: str = setting(Choice(stages), "waveform")
    classes: Any = setting(Anything(), None)  # a list of names or a file (audiocert.external.read_classes)


@dataclass
class FrontendSchema:
    """The Deep Speaker filterbank (conf/frontend/; audiocert.frontend.DeepSpeakerFrontend)."""

    sample_rate: int = count(16000)
    frame_length: int = count(400)
    hop_length: int = count(160)
    nfft: int = count(512)
    num_filters: int = count(64)
    preemphasis: float = number(0.97, minimum=0, below=1)
    low_hz: float = number(0.0, minimum=0)
    high_hz: float | None = number(8000.0, above=0)

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        frame, nfft = values.get("frame_length", 400), values.get("nfft", 512)
        if frame > nfft:
            raise refuse_relation(join(prefix, "frame_length"), frame, f"exceeds {join(prefix, 'nfft')}={nfft}: "
                                  "a frame must fit the FFT")
        low, high = values.get("low_hz", 0.0), values.get("high_hz", 8000.0)
        if high is not None and isinstance(low, numbers.Real) and float(low) >= float(high):
            raise refuse(join(prefix, "low_hz"), low, f"must be below {join(prefix, 'high_hz')}={high}")


@dataclass
class RepresentationSchema:
    """Where the noise enters (conf/representation/): a registered smoothing stage, and what the report says."""

    stage: str = setting(Choice(stages))
    gain_policy: str | None = setting(Text(), None)
    post_noise: str | None = setting(Text(), None)


@dataclass
class SmoothingSchema:
    """The Gaussian noise level (conf/smoothing/): ``smoothing.sigma=inf`` once certified every point at inf."""

    sigma: float = number(MISSING, above=0)


__all__ = ["DatasetSchema", "FrontendSchema", "GenerateSchema", "ModelSchema", "PathsSchema", "RepresentationSchema",
           "SmoothingSchema", "section"]
