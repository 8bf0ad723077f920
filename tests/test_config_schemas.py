"""The typed config schemas (audiocert.schemas): every shipped config passes its command's schema unchanged, every
setting of every command is covered by a schema field (and every number has a range), refusals read
``key=value: rule`` in one line, a -m sweep is checked config by config, and the schemas are in Hydra's ConfigStore.
Fast: composition only, no command runs."""

from __future__ import annotations

import copy
import dataclasses
import math
import typing

import pytest
from omegaconf import OmegaConf

from audiocert.schemas import COMMAND_SCHEMAS, SettingError, check_config
from audiocert.schemas.compose import CompositionError, composed_jobs
from audiocert.schemas.launcher import DebugLauncherSchema, LocalLauncherSchema, SlurmLauncherSchema
from audiocert.schemas.rules import Anything, Number, Numbers, Table

CONF = "audiocert.conf"

# Each command with the presets and options it ships (each composed and checked).
SHIPPED = [
    ("corpus", []), ("train", []), ("train", ["dataset=librispeech921", "model=rescnn"]), ("stats", []),
    ("examples", []), ("certify", []), ("certify", ["certify=paper"]), ("certify", ["certify=max"]),
    ("certify", ["certify.algorithm=sequential"]), ("certify", ["launcher=slurm"]), ("certify", ["launcher=slurm_gpu"]),
    ("certify", ["launcher=debug", "logger=disabled"]), ("certify", ["-m", "experiment=seed10_all"]),
    ("certify", ["-m", "experiment=seed921"]), ("attack", []), ("attack", ["attack=paper"]),
    ("perceptibility", []), ("perceptibility", ["perceptibility=paper"]),
]


def jobs(command: str, argv: list[str]) -> list:
    return list(composed_jobs(CONF, command, argv, None))


@pytest.mark.parametrize("command,argv", SHIPPED, ids=[" ".join([c, *a]) for c, a in SHIPPED])
def test_every_shipped_config_passes_its_schema_unchanged(command, argv):
    composed = jobs(command, argv)
    assert composed
    for _, cfg in composed:
        before = OmegaConf.to_container(cfg)
        check_config(command, cfg)
        assert OmegaConf.to_container(cfg) == before  # checked, never filled in: plans and hashes stay as they were


def schema_keys(schema: type, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every dotted key a schema names (the launcher's: those of every launcher), with its field."""
    hints = typing.get_type_hints(schema)
    keys = {}
    for spec in dataclasses.fields(schema):
        key = f"{prefix}.{spec.name}" if prefix else spec.name
        inner = [a for a in (typing.get_args(hints[spec.name]) or (hints[spec.name],)) if a is not type(None)][0]
        nested = [DebugLauncherSchema, LocalLauncherSchema, SlurmLauncherSchema] if spec.name == "launcher" else \
            [inner] if dataclasses.is_dataclass(inner) else []
        for schema_of in nested:
            keys.update(schema_keys(schema_of, key))
        if not nested:
            keys[key] = spec
    return keys


def leaves(value, prefix: str = "") -> dict:
    if isinstance(value, dict) and value:
        return {k: v for name, item in value.items() for k, v in leaves(item, f"{prefix}.{name}" if prefix
                                                                         else name).items()}
    return {prefix: value}


@pytest.mark.parametrize("command,argv", SHIPPED[:12], ids=[" ".join([c, *a]) for c, a in SHIPPED[:12]])
def test_every_setting_of_every_command_has_a_schema_field_and_every_number_a_range(command, argv):
    known = schema_keys(COMMAND_SCHEMAS[command])
    [(_, cfg)] = jobs(command, argv)[:1]
    for key, value in leaves(OmegaConf.to_container(cfg, resolve=True)).items():
        spec = known.get(key) or next((known[k] for k in known if key.startswith(k + ".")), None)
        assert spec is not None, f"audiocert {command}: {key} has no schema field"
        rule = spec.metadata.get("rule")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert isinstance(rule, (Number, Numbers, Table)) or (isinstance(rule, Anything) and key.startswith(
                "launcher.additional")), f"{key}={value} is a number without a range ({rule})"


@pytest.mark.parametrize("command,override,message", [
    ("certify", "smoothing.sigma=inf", "smoothing.sigma=inf: must be finite and > 0"),
    ("certify", "smoothing.sigma=-1", "smoothing.sigma=-1: must be finite and > 0"),
    ("certify", "certify.alpha=nan", "certify.alpha=nan: must be finite and in (0, 0.5)"),
    ("certify", "certify.n=2.5", "certify.n=2.5: must be an integer >= 1"),
    ("certify", "seed=-1", "seed=-1: must be an integer in [0, 9223372036854775807]"),
    ("certify", "certify.bf16=yes", "certify.bf16='yes': must be true or false"),
    ("certify", "certify.algorithm=bayes", "certify.algorithm='bayes': must be one of cohen, sequential"),
    ("certify", "certify.sequential.growth=1", "certify.sequential.growth=1: must be finite and > 1"),
    ("certify", "certify.batch_size=10", "certify.batch_size=10 is below certify.block_size=50: batches hold whole "
                                         "noise blocks, so raise batch_size or lower block_size"),
    ("certify", "certify.points_per_speaker=51",
     "certify.points_per_speaker=51 exceeds dataset.test_crops_per_speaker=50"),
    ("certify", "launcher.workers=0", "launcher.workers=0: must be an integer >= 1"),
    ("certify", "launcher.threads=0", "launcher.threads=0: must be an integer >= 1"),
    ("certify", "representation.stage=logmel", "representation.stage='logmel': must be one of waveform, magspec, "
                                               "mfbe"),
    ("certify", "frontend.frame_length=1024",
     "frontend.frame_length=1024 exceeds frontend.nfft=512: a frame must fit the FFT"),
    ("certify", "model.widths=[4,8]", "model.widths=[4, 8]: must be a list of 4 numbers, each an integer >= 1"),
    ("certify", "dataset.test_fraction=1", "dataset.test_fraction=1: must be finite and in (0, 1)"),
    ("certify", "dataset.num_classes=2.0", "dataset.num_classes=2.0: must be an integer >= 2"),
    ("train", "train.lr=nan", "train.lr=nan: must be finite and > 0"),
    ("train", "train.max_minutes=inf", "train.max_minutes=inf: must be finite and > 0"),
    ("train", "train.augment.stage=cepstrum", "train.augment.stage='cepstrum': must be one of waveform, magspec, "
                                              "mfbe"),
    ("attack", "attack.eps=[0.5,-1]", "attack.eps[1]=-1: must be finite and > 0"),
    ("attack", "attack.judge.max_n=10", "attack.judge.max_n=10 is below attack.n=100: the judge's last look must be "
                                        "at least its first (null: PREDICT at n only)"),
    ("perceptibility", "perceptibility.attack.judge.max_n=0", "perceptibility.attack.judge.max_n=0: must be an "
                                                              "integer >= 1"),
    ("attack", "attack.judge.max_n=0", "attack.judge.max_n=0: must be an integer >= 1"),
    ("perceptibility", "perceptibility.quality_draws=9",
     "perceptibility.quality_draws=9: must be an integer in [0, 4] (at most perceptibility.draws)"),
    ("perceptibility", "perceptibility.attack.lambda_down=2",
     "perceptibility.attack.lambda_down=2: must be finite and in (0, 1]"),
    ("perceptibility", "dataset.sample_rate=8000", "dataset.sample_rate=8000: must be 16000"),
    ("stats", "max_crops=0", "max_crops=0: must be an integer >= 1"),
    ("examples", "sigmas.mfbe=[-1]", "sigmas.mfbe[0]=-1: must be finite and >= 0"),
    ("examples", "+sigmas.logmel=[1]", "sigmas.logmel is not one of waveform, magspec, mfbe"),
    ("corpus", "dataset.generate.max_seconds=1000", "dataset.generate.max_seconds=1000: must be finite and in "
                                                   "[0.25, 120]"),
    ("corpus", "dataset=librispeech10", "dataset.generate=null: must be set"),
])
def test_a_refusal_names_the_setting_and_its_rule_in_one_line(command, override, message):
    with pytest.raises(SettingError) as refused:
        for _, cfg in jobs(command, [override]):
            check_config(command, cfg)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value), str(refused.value)
    assert refused.value.key == message.split("=")[0].split(" ")[0]


@pytest.mark.parametrize("command,override", [
    ("certify", "sweep.name=../x"), ("certify", "sweep.name=a/b"), ("certify", "dataset.name=a/b"),
    ("certify", "model.name=.."), ("certify", "certify.name=.hidden"), ("train", "run_name=../up"),
    ("attack", "attack.name=../a"), ("perceptibility", "perceptibility.name=p/q"), ("corpus", "dataset.name=.."),
    ("stats", "dataset.name=../../../escape"), ("examples", "dataset.name=a/../b"),
])
def test_names_that_become_directories_are_refused_while_composing(command, override):
    key, value = override.split("=", 1)
    with pytest.raises(SettingError, match=r"must be a safe name for a directory") as refused:
        for _, cfg in jobs(command, [override]):
            check_config(command, cfg)
    assert str(refused.value).startswith(f"{key}={value!r}: ")


def test_a_sweep_is_checked_config_by_config_with_the_experiment_params():
    demo = jobs("certify", ["-m", "experiment=demo"])
    assert len(demo) == 9 and {(c.representation.stage, c.smoothing.sigma) for _, c in demo} == {
        (stage, sigma) for stage in ("waveform", "magspec", "mfbe") for sigma in (0.05, 0.25, 0.5)}
    overridden = jobs("certify", ["-m", "experiment=demo", "smoothing.sigma=0.1,inf"])
    assert len(overridden) == 6 and sorted({c.smoothing.sigma for _, c in overridden}) == [0.1, math.inf]
    with pytest.raises(SettingError, match="smoothing.sigma=inf"):
        for _, cfg in overridden:
            check_config("certify", cfg)
    assert jobs("certify", ["--cfg", "job"]) == []  # printing a config runs no job: nothing to check first
    with pytest.raises(CompositionError, match="Ambiguous value for argument 'smoothing.sigma=0.1,0.2'"):
        jobs("certify", ["smoothing.sigma=0.1,0.2"])  # a sweep without -m, as Hydra says it
    with pytest.raises(CompositionError, match=r"Could not override 'certify.nn'"):
        jobs("certify", ["certify.nn=3"])


def test_dataset_rules_wait_for_the_dataset_a_checkpoint_will_give():
    """certify takes the checkpoint's dataset settings where the command line sets none: a rule on the split is
    checked on the final values only (here 60 points of 50 test crops, which a checkpoint may raise)."""
    [(_, cfg)] = jobs("certify", ["certify.points_per_speaker=60"])
    check_config("certify", cfg, dataset_final=False)
    with pytest.raises(SettingError, match="certify.points_per_speaker=60 exceeds"):
        check_config("certify", cfg)
    inherited = copy.deepcopy(cfg)
    inherited.dataset.test_crops_per_speaker = 100
    check_config("certify", inherited)


def test_the_schemas_are_in_hydras_config_store():
    from hydra.core.config_store import ConfigStore

    from audiocert.schemas.store import GROUP_SCHEMAS, store_schemas

    store_schemas()
    store = ConfigStore.instance()
    assert {f"base_{c}.yaml" for c in COMMAND_SCHEMAS} <= set(store.list(""))
    for group in GROUP_SCHEMAS:
        assert f"base_{group}.yaml" in store.list(group), group
    assert {"base_debug.yaml", "base_local.yaml", "base_slurm.yaml"} <= set(store.list("launcher"))
    slurm = store.load("launcher/base_slurm.yaml").node
    assert slurm.task_minutes == 20 and OmegaConf.is_missing(slurm, "time_min")


def test_the_attack_schema_knows_the_attack_spaces():
    from audiocert.attacks.space import SPACES
    from audiocert.schemas.attack import SPACES as SCHEMA_SPACES

    assert SCHEMA_SPACES == SPACES
