"""The schema of each command's config (conf/<command>.yaml): its groups, its own top-level settings, and the
rules between groups; :func:`check_config` checks a composed config against its command's schema.

Rules that read the dataset's split (points per speaker against test crops per speaker, the 16 kHz of the
psychoacoustic model) are ``dataset_rules``: `certify`, `attack` and `perceptibility` take the dataset settings a
checkpoint was trained with where the command line sets none, so these rules are checked on the config after that
(``dataset_final``), never on values the checkpoint is about to replace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audiocert.sampler import MAX_EXAMPLES
from audiocert.schemas.attack import AttackSchema
from audiocert.schemas.certify import CertifySchema, LoggerSchema, SweepSchema
from audiocert.schemas.data import (
    PATH,
    DatasetSchema,
    FrontendSchema,
    ModelSchema,
    PathsSchema,
    RepresentationSchema,
    SmoothingSchema,
    stages,
)
from audiocert.schemas.launcher import LauncherSchema
from audiocert.schemas.perceptibility import PerceptibilitySchema, check_perceptible_dataset
from audiocert.schemas.rules import (
    MISSING,
    Name,
    Number,
    Numbers,
    Table,
    Text,
    check_section,
    count,
    flag,
    refuse,
    refuse_relation,
    setting,
)
from audiocert.schemas.train import TrainSchema

DEVICE = Text("a torch device such as auto, cpu or cuda")
# Epoch e of training shuffles with seed * 1000 + e, and torch takes seeds below 2**63 (signed).
TRAIN_SEEDS = (2**63 - 1) // 1000


@dataclass
class CorpusConfig:
    """audiocert corpus: a synthetic dataset's corpus."""

    paths: PathsSchema = MISSING
    dataset: DatasetSchema = MISSING

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        if values["dataset"].get("generate") is None:
            raise refuse("dataset.generate", None, f"must be set: dataset={values['dataset'].get('name')} is not "
                         "synthetic, so there is nothing to generate")


@dataclass
class TrainConfig:
    """audiocert train: a base classifier."""

    paths: PathsSchema = MISSING
    dataset: DatasetSchema = MISSING
    model: ModelSchema = MISSING
    frontend: FrontendSchema = MISSING
    seed: int = count(0, minimum=0)
    device: str = setting(DEVICE, "auto")
    run_name: str = setting(Name())
    output_dir: str = setting(PATH)
    train: TrainSchema = MISSING
    logger: LoggerSchema = MISSING  # the training run on W&B (job_type train), logged after training

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        model, stage = values.get("model") or {}, ((values.get("train") or {}).get("augment") or {}).get("stage")
        if "net" in model and stage in stages() and \
                stages().index(stage) > stages().index(model.get("input", "waveform")):
            raise refuse_relation("train.augment.stage", stage,
                                  f"comes after model.input={model.get('input', 'waveform')}: the model never sees it")
        if "seed" in values and "train" in values:
            Number(minimum=0, maximum=TRAIN_SEEDS - int(values["train"]["epochs"]), integer=True).check(
                "seed", values["seed"])


@dataclass
class CertifyConfig:
    """audiocert certify: the groups that make a smoothed classifier, how it is certified and launched."""

    paths: PathsSchema = MISSING
    dataset: DatasetSchema = MISSING
    model: ModelSchema = MISSING
    frontend: FrontendSchema = MISSING
    representation: RepresentationSchema = MISSING
    smoothing: SmoothingSchema = MISSING
    certify: CertifySchema = MISSING
    launcher: LauncherSchema = MISSING
    logger: LoggerSchema = MISSING
    seed: int = setting(Number(minimum=0, maximum=2**63 - 1, integer=True, strict=True), 0)
    device: str = setting(DEVICE, "auto")
    checkpoint: str = setting(PATH)
    inherit_dataset: bool = flag(True)
    sweep: SweepSchema = MISSING

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        model, stage = values.get("model") or {}, (values.get("representation") or {}).get("stage")
        if "net" in model and stage in stages():
            order = stages()
            if order.index(stage) > order.index(model.get("input", "waveform")):
                raise refuse_relation("representation.stage", stage,
                                      f"comes after model.input={model.get('input', 'waveform')}: the model never "
                                      f"sees that stage; smooth at one of "
                                      f"{', '.join(order[:order.index(model.get('input', 'waveform')) + 1])}")

    @classmethod
    def dataset_rules(cls, values: dict[str, Any]) -> None:
        dataset, points = values["dataset"], values["certify"]["points_per_speaker"]
        crops, classes = int(dataset.get("test_crops_per_speaker", 50)), int(dataset["num_classes"])
        if int(points) > crops:
            raise refuse_relation("certify.points_per_speaker", points,
                                  f"exceeds dataset.test_crops_per_speaker={crops}")
        if classes * crops > MAX_EXAMPLES:
            raise refuse_relation("dataset.test_crops_per_speaker", crops,
                                  f"with dataset.num_classes={classes} makes a test set of {classes * crops} crops, "
                                  f"more than the {MAX_EXAMPLES} examples that noise streams can key: lower "
                                  "test_crops_per_speaker")


@dataclass
class AttackConfig(CertifyConfig):
    """audiocert attack: certify's config plus attack/."""

    attack: AttackSchema = MISSING
    certified: str | None = setting(Text("a certified config directory or a sweep directory"), None)


@dataclass
class PerceptibilityConfig(CertifyConfig):
    """audiocert perceptibility: certify's config plus perceptibility/."""

    perceptibility: PerceptibilitySchema = MISSING
    certified: str | None = setting(Text("a certified config directory or a sweep directory"), None)

    @classmethod
    def dataset_rules(cls, values: dict[str, Any]) -> None:
        super().dataset_rules(values)
        check_perceptible_dataset(values["dataset"])


@dataclass
class StatsConfig:
    """audiocert stats: statistics of a dataset's test crops."""

    paths: PathsSchema = MISSING
    dataset: DatasetSchema = MISSING
    frontend: FrontendSchema = MISSING
    max_crops: int = count()
    output: str = setting(PATH)


@dataclass
class ExamplesConfig:
    """audiocert examples: noisy examples at each stage and sigma."""

    paths: PathsSchema = MISSING
    dataset: DatasetSchema = MISSING
    frontend: FrontendSchema = MISSING
    sigmas: dict[str, list[float]] = setting(Table(Numbers(Number(minimum=0), allow_empty=True), names=stages), {})
    speakers: int = count()
    seed: int = count(0, minimum=0, maximum=2**64 - 1)
    output_dir: str = setting(PATH)


COMMAND_SCHEMAS: dict[str, type] = {"corpus": CorpusConfig, "train": TrainConfig, "certify": CertifyConfig,
                                    "attack": AttackConfig, "perceptibility": PerceptibilityConfig,
                                    "stats": StatsConfig, "examples": ExamplesConfig}


def check_config(command: str, cfg: Any, dataset_final: bool = True) -> dict[str, Any]:
    """Check the composed config of ``audiocert <command>`` (a DictConfig or a mapping) against its schema and
    return its values, resolved; SettingError naming the first refused setting. ``dataset_final``: the dataset
    settings are those the work will use (no checkpoint is about to replace them), so their rules are checked too.
    """
    schema = COMMAND_SCHEMAS[command]
    values = check_section(schema, cfg)
    if dataset_final and hasattr(schema, "dataset_rules"):
        schema.dataset_rules(values)
    return values
