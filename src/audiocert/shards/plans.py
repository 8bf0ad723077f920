"""plan.json and the round files: written sealed, read back checked before anything in them is trusted.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiocert.provenance import (
    SEAL_KEY,
    CorruptFileError,
    atomic_write_json,
    check_safe_name,
    read_json,
    seal,
    seal_problem,
    stable_hash,
)
from audiocert.settings import require
from audiocert.shards.kind import kind_of
from audiocert.shards.layout import KEPT_ON_REPLAN, PLAN_FILE, PREVIOUS_DIR, Shard, check_shard_list, log, round_path

PLAN_RECOVERY = ("rerun the `audiocert certify` command that made this sweep: it rewrites plan.json from the config "
                 "and keeps every shard that still validates (or remove the config directory to start it over)")


CONFIG_HASH = re.compile(r"^[0-9a-f]{12}$")


def read_plan(config_dir: str | Path) -> dict[str, Any]:
    """plan.json of a config directory, checked before anything in it is trusted.

    Checked: its seal (the SHA-256 of its own content: a plan edited by hand or damaged on disk is refused), its
    config hash against its quantities, and its quantities against its config (the settings the shards read
    from the config must be the ones the hash covers), then the structure every reader relies on. A refused
    plan raises :class:`CorruptFileError` naming the file and how to recover; names taken from it (hash, label)
    are checked so that no path built from a plan leaves the sweep directory.
    """
    path = Path(config_dir) / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{config_dir} has no {PLAN_FILE}: is it a config directory of a sweep?")
    plan = read_json(path, recover=PLAN_RECOVERY)
    if problem := seal_problem(plan):
        raise CorruptFileError(f"{path} cannot be trusted: {problem}: {PLAN_RECOVERY}")
    try:
        require(isinstance(plan["config_hash"], str) and CONFIG_HASH.fullmatch(plan["config_hash"]),
                f"config_hash {plan['config_hash']!r} is not 12 hex digits")
        require(stable_hash(plan["quantities"]) == plan["config_hash"], "its config hash is not that of its quantities")
        kind = kind_of(plan)
        kind.check_plan(plan)
        check_safe_name(plan["label"], "label")
        require(isinstance(plan["config"], dict) and isinstance(plan["quantities"], dict))
        examples, inputs = plan["examples"], plan["inputs"]
        require(isinstance(examples, list) and all(type(e) is int and e >= 0 for e in examples))
        require(isinstance(inputs, list) and [i["index"] for i in inputs] == examples)
        require(all(type(i["label"]) is int and isinstance(i["digest"], str) for i in inputs))
        require(stable_hash([i["digest"] for i in inputs]) == plan["inputs_digest"])
        check_shard_list(plan["shards"], 0, len(examples), 0, kind.range_keys)
        int(plan["config"]["dataset"]["num_classes"])
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptFileError(f"{path} is not a valid plan ({error.__class__.__name__}: {error}): "
                               f"{PLAN_RECOVERY}") from None
    return plan


ROUND_RECOVERY = ("remove it: the next `audiocert certify` of this sweep plans that round again from the counts "
                  "(rounds are a function of the counts, so nothing is lost)")


class Layout(list):
    """The shards of every round planned so far (a list of :class:`Shard`), with ``key``: a digest of the plan
    and round files they come from, so a validation result can be reused while the layout stays the same."""

    key: str = ""


def known_shards(config_dir: str | Path, plan: Mapping[str, Any]) -> Layout:
    """The shards of every round planned so far: round 0 from the plan, then rounds/001.json, 002.json, ...

    Each round file is checked against its own seal and the plan before its shards are trusted.
    """
    shards = Layout(Shard.from_json(s) for s in plan["shards"])
    seals = [plan.get(SEAL_KEY) or stable_hash(plan)]
    round = 1
    while (path := round_path(config_dir, round)).is_file():
        data = read_json(path, recover=ROUND_RECOVERY)
        if problem := seal_problem(data):
            raise CorruptFileError(f"{path} cannot be trusted: {problem}: {ROUND_RECOVERY}")
        try:
            require(data["config_hash"] == plan["config_hash"], "another config's round")
            require(type(data["round"]) is int and data["round"] == round, f"round {data['round']!r}")
            check_shard_list(data["shards"], len(shards), len(plan["examples"]), round, kind_of(plan).range_keys)
        except (KeyError, TypeError, ValueError) as error:
            raise CorruptFileError(f"{path} is not round {round} of config {plan['config_hash']} "
                                   f"({error.__class__.__name__}: {error}): {ROUND_RECOVERY}") from None
        if data.get("code_version") != plan["code_version"]:
            break  # planned by other code (its shards were recomputed too): next_work plans this round again
        shards += [Shard.from_json(s) for s in data["shards"]]
        seals.append(data[SEAL_KEY])
        round += 1
    shards.key = stable_hash(seals)
    return shards


def write_plan(plan: dict[str, Any], config_dir: str | Path) -> dict[str, Any]:
    """Write plan.json. An existing plan with the same config hash, inputs and code version is kept (a rerun
    resumes); a different config, or the same config over changed audio, is an error naming the directory,
    so counts of two configs or of two versions of the test audio never mix. A damaged plan is rewritten. A plan
    of another code version is replaced, and what that version computed is set aside under previous/.
    """
    config_hash = plan["config_hash"]
    config_dir = Path(config_dir)
    path = config_dir / PLAN_FILE
    if path.is_file():
        try:
            existing = read_plan(config_dir)
        except CorruptFileError as error:
            log.warning("%s; writing a new plan: shards are kept only where they validate against it", error)
            existing = None
        if existing is not None:
            if existing.get("config_hash") != config_hash:
                raise ValueError(
                    f"{config_dir} already holds config {existing.get('config_hash')} ({existing.get('label')}); "
                    f"this config hashes to {config_hash}: use another sweep.name or remove that directory"
                )
            if existing["inputs_digest"] != plan["inputs_digest"]:
                changed = [f"{new['path']} (example {new['index']})" for old, new in zip(
                    existing["inputs"], plan["inputs"], strict=True) if old["digest"] != new["digest"]]
                raise ValueError(
                    f"the test audio of {config_dir} changed since it was planned: {', '.join(changed[:5])}"
                    f"{' ...' if len(changed) > 5 else ''}. Its shards were counted on the old audio and cannot be "
                    "merged with new ones: remove that directory (or use another sweep.name) to certify the new audio"
                )
            if existing.get("code_version") == plan["code_version"]:
                return existing
            moved = set_aside_results(config_dir, str(existing.get("code_version")))
            log.warning("code version changed (%s -> %s): every shard is recomputed%s", existing.get("code_version"),
                        plan["code_version"], f"; the old version's results are kept in {moved}" if moved else "")
    plan = seal(plan)
    atomic_write_json(path, plan)
    return plan


def set_aside_results(config_dir: Path, old_version: str) -> Path | None:
    """Move what a config's old code version computed (shards, rounds, failures, certificates, summary, ...) and
    a copy of its plan to previous/<time>-<version>/. None of it validates against the new plan, and left in
    place it would pass for the new plan's: a stale certificates.tsv reads as reduced, and stale shard files
    beyond the new rounds would block the reducer for good. jobs.json stays: it tracks live jobs."""
    entries = [p for p in config_dir.iterdir() if p.name not in KEPT_ON_REPLAN and not p.name.startswith(".")]
    if not entries:
        return None
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", f"{time.strftime('%Y%m%d-%H%M%S')}-{old_version}")
    target = config_dir / PREVIOUS_DIR / name
    suffix = 1
    while target.exists():
        target, suffix = config_dir / PREVIOUS_DIR / f"{name}.{suffix}", suffix + 1
    target.mkdir(parents=True)
    shutil.copy2(config_dir / PLAN_FILE, target / PLAN_FILE)
    for entry in entries:
        entry.rename(target / entry.name)
    return target


def config_dirs(directory: str | Path) -> list[Path]:
    """The config directories of a sweep directory (or the directory itself if it is one)."""
    directory = Path(directory)
    if (directory / PLAN_FILE).is_file():
        return [directory]
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist: pass a sweep directory such as runs/sweeps/NAME")
    # Certification configs, and the configs of other kinds inside them (attack-*/, perceptibility-*/).
    found = sorted(p.parent for pattern in (f"*/{PLAN_FILE}", f"*/*-*/{PLAN_FILE}") for p in directory.glob(pattern)
                   if p.parent.parent.name != "previous")
    if not found:
        raise FileNotFoundError(f"{directory} holds no config directories (no */{PLAN_FILE}): is it a sweep?")
    return found
