"""Commands that follow a certification's config: ``audiocert attack certified=DIR`` (and ``perceptibility``) take
every setting that makes the smoothed classifier and its points (dataset, model, frontend, representation,
smoothing, certify, seed, device, checkpoint, paths, sweep) from the sealed plan.json of the certified config
directory DIR, so that an attack cannot land on another config because an override was left out.

DIR is one certified config directory (``runs/sweeps/S/<label>-<hash>``) or a sweep directory (every certified
config in it, as a multirun). The command line then sets only what belongs to the attack (``attack.*``,
``perceptibility.*``, ``launcher.*``, ``logger.*``); an override of a certified setting is refused in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

import audiocert.kinds  # noqa: F401 (registers the kinds read_plan recognises)
from audiocert.provenance import code_version
from audiocert.shards import config_dirs, read_plan

KEY = "certified"
# The sections of a kind's config that the certification decided (what its plan's config holds for them).
CERTIFIED: tuple[str, ...] = ("paths", "dataset", "model", "frontend", "representation", "smoothing", "certify",
                              "seed", "device", "checkpoint", "sweep", "inherit_dataset")
# Command-line groups that choose those sections (experiment= sets several of them).
CHOOSERS: tuple[str, ...] = (*CERTIFIED, "experiment")


def given(argv: Sequence[str]) -> str | None:
    """The DIR of ``certified=DIR`` on a command line, or None."""
    found = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].lstrip("+~") == KEY and "=" in a]
    return found[-1] if found else None


def certified_plans(directory: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """(config dir, plan) of each certified config in DIR (a config directory or a sweep); ValueError naming DIR."""
    path = Path(directory).expanduser()
    if not path.exists():
        raise ValueError(f"{KEY}={directory}: no such directory: pass a certified config directory "
                         "(runs/sweeps/NAME/<label>-<hash>) or a sweep directory (runs/sweeps/NAME)")
    plans = []
    for config_dir in config_dirs(path):
        plan = read_plan(config_dir)
        if plan["kind"] == "certify":
            plans.append((config_dir.resolve(), plan))
    if not plans:
        raise ValueError(f"{KEY}={directory}: holds no certified config (no plan.json of `audiocert certify`)")
    return plans


def follow_certified(command: str, argv: list[str]) -> list[str]:
    """The command line of ``audiocert <command> certified=DIR ...`` as Hydra should run it: the certified config
    directories as ``certified=`` values (a multirun over a sweep's), and the sweep the certification wrote to;
    an override of a certified setting is refused, naming it."""
    directory = given(argv)
    if directory is None:
        return argv
    for argument in argv:
        key = argument.split("=", 1)[0].lstrip("+~")
        if "=" in argument and key != KEY and key.split(".")[0] in CHOOSERS:
            raise ValueError(f"{argument}: {command} certified={directory} takes this setting from the certified "
                             "config (its plan.json); drop it, or leave certified= out to give every setting yourself")
    plans = certified_plans(directory)
    if stale := [d for d, p in plans if p["code_version"] != code_version()]:
        raise ValueError(f"{KEY}={directory}: {stale[0]} was certified by audiocert {plans[0][1]['code_version']}, "
                         f"this is {code_version()}: rerun its `audiocert certify` command with this code first (a "
                         f"{command} now would plan the certification again and set its results aside)")
    sweeps = {(str(p["config"]["sweep"]["name"]), str(p["config"]["sweep"]["dir"])) for _, p in plans}
    if len(sweeps) != 1:
        raise ValueError(f"{KEY}={directory}: its configs belong to several sweeps {sorted(sweeps)}")
    (name, sweep_dir), = sweeps
    rest = [a for a in argv if a.split("=", 1)[0].lstrip("+~") != KEY]
    values = ",".join(f"'{d}'" for d, _ in plans)
    multirun = len(plans) > 1 and not any(a in ("-m", "--multirun") for a in rest)
    return [*(["-m"] if multirun else []), *rest, f"{KEY}={values}", f"sweep.name='{name}'",
            f"sweep.dir='{sweep_dir}'"]


def adopt_certified(cfg: Any) -> Any:
    """``cfg`` with the certified sections of the plan in ``cfg.certified`` (when set) in place of its own; the
    dataset settings are then final (nothing is inherited from the checkpoint on top)."""
    directory = cfg.get(KEY) if hasattr(cfg, "get") else None
    if not directory:
        return cfg
    plan = read_plan(directory)
    if plan["kind"] != "certify":
        raise ValueError(f"{KEY}={directory}: is a {plan['kind']} config, not a certified one")
    with open_dict(cfg):
        for section in CERTIFIED:
            if section in plan["config"]:
                cfg[section] = OmegaConf.create(plan["config"][section]) if isinstance(
                    plan["config"][section], dict) else plan["config"][section]
        cfg.inherit_dataset = False
    return cfg
