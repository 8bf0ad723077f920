"""Planning one config (one Hydra job): check the launcher and the device, inherit the checkpoint's dataset
settings, prepare the data, write plan.json under the config's lock and list its pending shards. Runs nothing."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from audiocert.devices import resolve_device
from audiocert.kinds import CERTIFY, WorkKind, kind_named
from audiocert.launching.locking import config_lock
from audiocert.launching.scheduling import check_launcher_config
from audiocert.launching.slurm import check_slurm_available
from audiocert.locks import ConfigBusyError
from audiocert.shards import inventory, write_plan

log = logging.getLogger(__name__)


def config_dir_for(sweep_dir: Path, plan: Mapping[str, Any]) -> Path:
    """A certification config's directory in its sweep."""
    return CERTIFY.directory(sweep_dir, plan)


# The dataset settings that decide which utterances are test utterances and what a label means: certifying with
# other values than the model was trained with could certify it on its own training audio, or with wrong labels.
SPLIT_KEYS = ("subset", "speakers", "num_classes", "sample_rate", "crop_samples", "test_fraction", "split_seed",
              "resample")


def inherit_dataset(cfg: DictConfig, explicit: Sequence[str]) -> list[str]:
    """Take the dataset settings the checkpoint was trained with, except those set on the command line
    (``explicit``: dotted keys); an explicit value that would change the test split is refused, naming it.

    Returns what was inherited ('dataset.key=value'), for the log. ``root`` (where the data lives now) and
    ``generate`` are never inherited.
    """
    checkpoint = Path(cfg.checkpoint)
    if not checkpoint.is_file():
        return []  # make_plan names the missing checkpoint and how to train it
    trained = checkpoint_dataset(str(checkpoint.resolve()), checkpoint.stat().st_mtime_ns)
    inherited = []
    with open_dict(cfg.dataset):
        for key, value in trained.items():
            if key in ("root", "generate", "name"):
                continue
            current = OmegaConf.to_container(cfg.dataset, resolve=True).get(key)
            if current == value:
                continue
            if f"dataset.{key}" in explicit:
                if key in SPLIT_KEYS:
                    raise ValueError(
                        f"dataset.{key}={current!r} differs from the {value!r} that checkpoint {checkpoint} was "
                        "trained with: the test split (or the labels) would differ from training, so test crops could "
                        f"come from training audio. Drop the dataset.{key} override (certify inherits the training "
                        "value), or train a model with it")
                continue  # e.g. fewer test crops per speaker, asked for explicitly
            cfg.dataset[key] = value
            inherited.append(f"dataset.{key}={value!r}")
    return inherited


@functools.lru_cache(maxsize=8)
def checkpoint_dataset(path: str, mtime_ns: int) -> dict[str, Any]:
    """The dataset section of a checkpoint's training config (read once per file version in a sweep)."""
    from audiocert.checkpoint import read_checkpoint

    state = read_checkpoint(path, "cpu")
    if "config" not in state and all(hasattr(v, "shape") for v in state.values()):
        return {}  # an external model's plain state_dict: no training config to inherit
    state = read_checkpoint(path, "cpu", required=("config",))
    dataset = state["config"].get("dataset") if isinstance(state["config"], dict) else None
    return dict(dataset) if isinstance(dataset, dict) else {}


def command_line_keys() -> list[str]:
    """Dotted keys set on the command line of the running Hydra job (for what certify must not override)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # not inside a Hydra job (a test calling plan_config): nothing was set explicitly
        return []
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides]


def check_device(cfg: DictConfig) -> None:
    """device= must exist where the shards run: here for local and debug, on the nodes for SLURM (asked for with
    launcher.gpus_per_task). Checked before planning, so nothing is planned for a device that cannot run it."""
    name = str(cfg.device)
    if cfg.launcher.name == "slurm":
        if name.startswith("cuda") and not int(cfg.launcher.get("gpus_per_task") or 0):
            raise ValueError(f"device={name} on SLURM needs GPU nodes: set launcher.gpus_per_task=1 (and a GPU "
                             "partition), or use device=auto")
        return
    resolve_device(name)


def plan_config(cfg: DictConfig, work: str = CERTIFY.name) -> dict[str, Any]:
    """One Hydra job: prepare data, check and plan the config, list its pending shards. Runs nothing.

    Everything that could stop the work (dataset, speakers, checkpoint, audio, values, the device, an absent
    cluster, another command working on the same config) fails here, before ``finish_sweep`` starts or submits
    anything. The checkpoint's training dataset settings are inherited where the command line sets none.
    ``work``: "certify", or another kind of work on the same points ("attack", "perceptibility"), planned in a
    directory inside the certification's, whose plan is written as `certify` would write it.
    """
    check_launcher_config(OmegaConf.to_container(cfg.launcher, resolve=True))
    with open_dict(cfg):  # jobs.json, deferred.json and SLURM jobs name configs by path: one spelling, absolute
        cfg.sweep.dir = os.path.abspath(os.path.expanduser(str(cfg.sweep.dir)))
    kind = cfg.launcher.name
    if kind == "slurm":
        check_slurm_available()
    check_device(cfg)
    if cfg.get("inherit_dataset", True):
        if inherited := inherit_dataset(cfg, command_line_keys()):
            log.info("inherited from checkpoint %s (its training config): %s", cfg.checkpoint, ", ".join(inherited))
    from audiocert.prepare import ensure_dataset  # the corpus synthesis imports scipy.signal: not for workers

    ensure_dataset(cfg.dataset)
    plan, config_dir = plan_kind(kind_named(work), cfg, Path(cfg.sweep.dir),
                                 lock_wait=bool(cfg.launcher.get("lock_wait", False)))
    sweep_dir = Path(cfg.sweep.dir)
    found = inventory(config_dir, plan)
    pending = found.missing
    log.info("%s -> %s: %d of %d shard(s) to run", plan["label"], config_dir, len(pending), len(found.shards))
    return {"config_dir": str(config_dir), "label": plan["label"], "pending": pending, "kind": kind,
            "launcher": OmegaConf.to_container(cfg.launcher, resolve=True), "sweep_dir": str(sweep_dir),
            "logger": OmegaConf.to_container(cfg.logger, resolve=True), "sweep_name": str(cfg.sweep.name),
            "config": OmegaConf.to_container(cfg, resolve=True)}


def plan_kind(kind: WorkKind, cfg: DictConfig, sweep_dir: Path, lock_wait: bool) -> tuple[dict[str, Any], Path]:
    """A kind's plan, written under its config's lock, and its directory. A kind that reads another's results
    (attack and perceptibility read a certification) is planned in a directory inside that kind's config, whose
    plan is written first as its own command would write it (so both share one directory and one set of
    points)."""
    if kind.parent is None:
        plan = kind.make_plan(cfg, None, None)
        config_dir = kind.directory(sweep_dir, plan)
    else:
        parent_plan = kind.parent.make_plan(cfg, None, None)
        parent_dir = kind.parent.directory(sweep_dir, parent_plan)
        ensure_certify_plan(parent_plan, parent_dir)
        plan = kind.make_plan(cfg, parent_plan, parent_dir)
        config_dir = kind.directory(parent_dir, plan)
    config_lock(config_dir, wait=lock_wait, purpose=kind.purpose)
    return write_plan(plan, config_dir), config_dir


def ensure_certify_plan(plan: dict[str, Any], config_dir: Path) -> None:
    """The certification plan of a config on disk, as `certify` writes it (so that another kind of work planned
    inside it, and a later `certify`, share one directory and one set of points). Left alone when a certify
    command holds the config (it writes the same plan)."""
    try:
        with config_lock(config_dir, wait=False, purpose="planning"):
            write_plan(plan, config_dir)
    except ConfigBusyError:
        log.info("%s is being certified meanwhile; its plan is that command's", config_dir)
