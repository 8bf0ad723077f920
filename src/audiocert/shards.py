"""The plan of a certification config, its rounds of shards, and the shard worker.

A config (dataset x representation x sigma x algorithm x sample counts x seed x checkpoint) certifies P test
points. Work comes in rounds: the certification algorithm (``audiocert.algorithms``) says, from the counts so
far, how many samples of each phase every point should have in all; the points that need more get a range
[done, target) of each such phase. A round is cut into shards: blocks of ``shard.examples`` points asking for
the same ranges, times chunks of ``shard.samples`` sample indices of each range. Round 0 is in plan.json;
round k >= 1 is planned from the merged counts of the rounds before it and written to ``rounds/<k>.json``
(Cohen's CERTIFY has only round 0). Shard indices run on across rounds. Every shard writes one counts file,
``shards/<config_hash>-<index>.json``, atomically; a shard is done when that file exists and validates, never
because a scheduler says so. Noise streams depend only on (seed, example, phase, sample index) (see
``audiocert.sampler``), so the counts, and hence the certificates, do not depend on how the work is cut, and
merging checks that the ranges of every (point, phase) tile [0, total) exactly: nothing is counted twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from audiocert.algorithms import ALGORITHMS, Algorithm, make_algorithm
from audiocert.checkpoint import LoadedClassifier, load_checkpoint
from audiocert.data import CropDataset, build_datasets
from audiocert.devices import resolve_device
from audiocert.provenance import (
    CorruptFileError,
    atomic_write_json,
    check_safe_name,
    code_version,
    file_digest,
    read_json,
    stable_hash,
)
from audiocert.sampler import MAX_BLOCKS, MAX_EXAMPLES, Smooth, StagedClassifier
from audiocert.stages import check_stage
from audiocert.statistics import REPORT_RADII

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
SHARD_DIR = "shards"
ROUND_DIR = "rounds"
PREVIOUS_DIR = "previous"  # results of older code versions, set aside when a config is planned again
KEPT_ON_REPLAN = {PLAN_FILE, "jobs.json", PREVIOUS_DIR}  # jobs.json: status.JOBS_FILE (a layer above)
SHARD_FORMAT = 3  # 3: generic phase ranges and rounds; 2: input digests, device type, labels, waveform norms
COUNTED_PHASES = ("selection", "estimation")  # the phases CERTIFY counts


class IncompleteSweepError(RuntimeError):
    """Raised when a config's shards are missing, duplicated, foreign, or its rounds are not finished."""


@dataclass(frozen=True)
class Shard:
    index: int
    examples: tuple[int, ...]  # positions into the plan's example list
    ranges: dict[str, tuple[int, int]]  # phase -> sample range [lo, hi) of that phase, for every example
    round: int = 0

    @property
    def samples(self) -> int:
        return len(self.examples) * sum(hi - lo for lo, hi in self.ranges.values())

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "round": self.round, "examples": list(self.examples),
                "ranges": {phase: list(r) for phase, r in self.ranges.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Shard:
        return cls(int(data["index"]), tuple(data["examples"]),
                   {str(phase): (int(r[0]), int(r[1])) for phase, r in data["ranges"].items()}, int(data["round"]))


def check_certify_config(cfg: DictConfig) -> None:
    """Impossible values fail here, before anything is submitted, naming the field."""
    c = cfg.certify
    for field in ("n0", "n", "points_per_speaker", "batch_size", "block_size"):
        if int(c[field]) < 1:
            raise ValueError(f"certify.{field}={c[field]} must be a positive integer")
    for field in ("examples", "samples"):
        if int(c.shard[field]) < 1:
            raise ValueError(f"certify.shard.{field}={c.shard[field]} must be a positive integer")
    if int(c.batch_size) < int(c.block_size):
        raise ValueError(f"certify.batch_size={c.batch_size} is below certify.block_size={c.block_size}: "
                         "batches hold whole noise blocks, so raise batch_size or lower block_size")
    if not 0 < float(c.alpha) < 0.5:
        raise ValueError(f"certify.alpha={c.alpha} must lie in (0, 0.5)")
    if not float(cfg.smoothing.sigma) > 0:
        raise ValueError(f"smoothing.sigma={cfg.smoothing.sigma} must be positive")
    if c.algorithm not in ALGORITHMS:
        raise ValueError(f"certify.algorithm={c.algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    if c.algorithm == "sequential":
        seq = c.sequential
        if int(seq.first) < 1:
            raise ValueError(f"certify.sequential.first={seq.first} must be a positive integer")
        if not float(seq.growth) > 1:
            raise ValueError(f"certify.sequential.growth={seq.growth} must exceed 1")
        if not 0 < float(seq.stop_alpha) < 0.5:
            raise ValueError(f"certify.sequential.stop_alpha={seq.stop_alpha} must lie in (0, 0.5)")
        if not 0 < float(seq.get("last_share", 0.75)) < 1:
            raise ValueError(f"certify.sequential.last_share={seq.last_share} must lie in (0, 1)")
        if seq.radii is not None and (not seq.radii or any(not float(r) > 0 for r in seq.radii)):
            raise ValueError(f"certify.sequential.radii={list(seq.radii or [])} must be positive radii")
    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 63:
        raise ValueError(f"seed={seed!r} must be an integer in [0, 2**63)")
    samples = max(int(c.n0), int(c.n))
    if math.ceil(samples / int(c.block_size)) > MAX_BLOCKS:
        raise ValueError(f"certify.n={c.n} needs more than {MAX_BLOCKS} noise blocks of certify.block_size="
                         f"{c.block_size}: raise block_size to at least {math.ceil(samples / MAX_BLOCKS)}")
    check_stage(cfg.representation.stage)
    for field in ("dataset.name", "model.name", "certify.name", "sweep.name"):
        check_safe_name(OmegaConf.select(cfg, field), field)
    if int(c.points_per_speaker) > int(cfg.dataset.test_crops_per_speaker):
        raise ValueError(
            f"certify.points_per_speaker={c.points_per_speaker} exceeds "
            f"dataset.test_crops_per_speaker={cfg.dataset.test_crops_per_speaker}"
        )
    if int(cfg.dataset.num_classes) * int(cfg.dataset.test_crops_per_speaker) > MAX_EXAMPLES:
        raise ValueError(f"the test set of dataset.num_classes x dataset.test_crops_per_speaker = "
                         f"{int(cfg.dataset.num_classes) * int(cfg.dataset.test_crops_per_speaker)} crops exceeds "
                         f"the {MAX_EXAMPLES} examples that noise streams can key: lower test_crops_per_speaker")


def shard_device_type(cfg: DictConfig) -> str:
    """The device type the shards compute on ('cpu' or 'cuda'): part of the base classifier f (bf16, kernels).

    device=auto means CUDA on SLURM when the launcher asks for GPUs, else whatever this machine has.
    """
    name = str(cfg.device)
    if name != "auto":
        return torch.device(name).type
    if cfg.launcher.name == "slurm":
        return "cuda" if int(cfg.launcher.get("gpus_per_task") or 0) > 0 else "cpu"
    return resolve_device("auto").type


def select_examples(num_speakers: int, crops_per_speaker: int, points_per_speaker: int) -> list[int]:
    """Test-set indices to certify: ``points_per_speaker`` evenly spread over each speaker's test crops.

    The test set is speaker-major (crop i belongs to speaker i // crops_per_speaker).
    """
    offsets = np.linspace(0, crops_per_speaker, points_per_speaker, endpoint=False).astype(int)
    return [s * crops_per_speaker + int(o) for s in range(num_speakers) for o in offsets]


def cut_shards(groups: Sequence[tuple[Sequence[int], Mapping[str, tuple[int, int]]]], examples_per_shard: int,
               samples_per_shard: int, first_index: int = 0, round: int = 0) -> list[Shard]:
    """Shards of a round: each group (points, phase -> [lo, hi)) cut into blocks of points times chunks of
    samples; chunk j covers [lo + j S, lo + (j + 1) S) of every phase's range (ranges left empty are dropped)."""
    shards: list[Shard] = []
    for examples, ranges in groups:
        examples = list(examples)
        chunks = math.ceil(max(hi - lo for lo, hi in ranges.values()) / samples_per_shard)
        for first in range(0, len(examples), examples_per_shard):
            block = tuple(examples[first : first + examples_per_shard])
            for j in range(chunks):
                chunk = {phase: (min(lo + j * samples_per_shard, hi), min(lo + (j + 1) * samples_per_shard, hi))
                         for phase, (lo, hi) in ranges.items()}
                chunk = {phase: r for phase, r in chunk.items() if r[1] > r[0]}
                shards.append(Shard(first_index + len(shards), block, chunk, round))
    return shards


def make_shards(num_examples: int, n0: int, n: int, examples_per_shard: int, samples_per_shard: int) -> list[Shard]:
    """Cohen's single round: every point gets selection [0, n0) and estimation [0, n)."""
    return cut_shards([(range(num_examples), {"selection": (0, n0), "estimation": (0, n)})],
                      examples_per_shard, samples_per_shard)


def certified_quantities(cfg: DictConfig) -> dict[str, Any]:
    """What determines the counts and their layout; the config hash is computed from this alone."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return {
        "dataset": {k: v for k, v in resolved["dataset"].items() if k not in ("generate",)},
        "frontend": resolved.get("frontend"),
        "stage": resolved["representation"]["stage"],
        "sigma": float(resolved["smoothing"]["sigma"]),
        "n0": int(resolved["certify"]["n0"]), "n": int(resolved["certify"]["n"]),
        "alpha": float(resolved["certify"]["alpha"]),
        "algorithm": resolved["certify"]["algorithm"],
        # The sequential options decide which samples are drawn and at which level: part of the counts' meaning.
        **({"sequential": {**resolved["certify"]["sequential"],
                           "radii": list(resolved["certify"]["sequential"]["radii"] or REPORT_RADII)}}
           if resolved["certify"]["algorithm"] == "sequential" else {}),
        "points_per_speaker": int(resolved["certify"]["points_per_speaker"]),
        "block_size": int(resolved["certify"]["block_size"]),
        "bf16": bool(resolved["certify"].get("bf16", False)),  # bf16 autocast is part of the base classifier f
        "device_type": shard_device_type(cfg),  # CPU fp32 and CUDA bf16 are different base classifiers
        "shard": resolved["certify"]["shard"],
        "seed": int(resolved["seed"]),
    }


def waveform_digest(waveform: torch.Tensor) -> str:
    """Fingerprint of one certified input: SHA-256 of its float32 samples (what the counts were computed on)."""
    data = waveform.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def load_certified_setup(config: Mapping[str, Any], checkpoint: str | Path,
                         device: torch.device | str = "cpu") -> tuple[LoadedClassifier, CropDataset]:
    """The base classifier and the test set of a config, checked against each other; errors name the file."""
    loaded = load_checkpoint(checkpoint, device)
    test = build_datasets(config["dataset"]).test
    planned_frontend = dict(config.get("frontend") or {})
    if loaded.config.get("frontend") and dict(loaded.config["frontend"]) != planned_frontend:
        raise ValueError(f"checkpoint {checkpoint} was trained with frontend {loaded.config['frontend']}, "
                         f"but this config asks for {planned_frontend}: the certificate would describe the "
                         "wrong frontend")
    if loaded.speakers and list(loaded.speakers) != list(test.speakers):
        raise ValueError(f"checkpoint {checkpoint} was trained on speakers {loaded.speakers[:10]}..., "
                         f"but dataset {config['dataset']['name']} has {test.speakers[:10]}...: labels would not "
                         "match; certify it with the dataset it was trained on")
    return loaded, test


def make_plan(cfg: DictConfig) -> dict[str, Any]:
    """Plan a config: check it, fingerprint its checkpoint and its certified inputs, and list its shards.

    Everything a shard needs is loaded once here (checkpoint with weights_only, dataset, every certified
    example's audio), so a config that cannot run fails before any work starts or is submitted.
    """
    check_certify_config(cfg)
    checkpoint = Path(cfg.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"checkpoint={checkpoint} does not exist: train it first with "
            f"`audiocert train dataset={cfg.dataset.name} model={cfg.model.name}` or pass checkpoint=PATH"
        )
    quantities = certified_quantities(cfg)
    quantities["checkpoint_digest"] = file_digest(checkpoint)
    config_hash = stable_hash(quantities)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    _, test = load_certified_setup(resolved, checkpoint)
    num_speakers = int(cfg.dataset.num_classes)
    examples = select_examples(num_speakers, int(cfg.dataset.test_crops_per_speaker),
                               int(cfg.certify.points_per_speaker))
    inputs = []
    for index in examples:
        waveform, label = test[index]
        where = test.describe(index)
        inputs.append({"index": index, "label": int(label), "digest": waveform_digest(waveform),
                       "path": str(where["path"]), "offset": int(where["offset"])})
    algorithm = make_algorithm(quantities)
    classes = int(cfg.dataset.num_classes)
    shards = round_shards(algorithm, np.zeros((len(examples), classes), np.int64),
                          np.zeros((len(examples), classes), np.int64), int(cfg.certify.shard.examples),
                          int(cfg.certify.shard.samples), first_index=0, round=0)
    plan = {
        "config_hash": config_hash, "code_version": code_version(), "label": config_label(cfg),
        "config": resolved, "quantities": quantities,
        "checkpoint": str(checkpoint.resolve()), "examples": examples, "inputs": inputs,
        "inputs_digest": stable_hash([i["digest"] for i in inputs]),
        "shards": [s.to_json() for s in shards],
    }
    return plan


def round_shards(algorithm: Algorithm, selection: np.ndarray, estimation: np.ndarray, examples_per_shard: int,
                 samples_per_shard: int, first_index: int, round: int) -> list[Shard]:
    """The shards of the next round: for every point whose algorithm targets exceed its counts, the missing
    ranges [done, target) of each phase. Points asking for the same ranges share shards. Empty when settled."""
    groups: dict[tuple, list[int]] = {}
    for position in range(selection.shape[0]):
        done = (int(selection[position].sum()), int(estimation[position].sum()))
        target = algorithm.targets(selection[position], estimation[position])
        ranges = tuple((phase, lo, hi) for phase, lo, hi in zip(COUNTED_PHASES, done, target, strict=True) if hi > lo)
        if any(hi < lo for lo, hi in zip(done, target, strict=True)):
            raise ValueError(f"{algorithm.name} asks for fewer samples than already counted: {done} -> {target}")
        if ranges:
            groups.setdefault(ranges, []).append(position)
    return cut_shards([(points, {phase: (lo, hi) for phase, lo, hi in key}) for key, points in groups.items()],
                      examples_per_shard, samples_per_shard, first_index, round)


PLAN_RECOVERY = ("rerun the `audiocert certify` command that made this sweep: it rewrites plan.json from the config "
                 "and keeps every shard that still validates (or remove the config directory to start it over)")
CONFIG_HASH = re.compile(r"^[0-9a-f]{12}$")


def read_plan(config_dir: str | Path) -> dict[str, Any]:
    """plan.json of a config directory, checked for the structure every reader relies on.

    A damaged plan raises :class:`CorruptFileError` naming the file and how to recover; names taken from it
    (hash, label) are checked so that no path built from a plan leaves the sweep directory.
    """
    path = Path(config_dir) / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{config_dir} has no {PLAN_FILE}: is it a config directory of a sweep?")
    plan = read_json(path, recover=PLAN_RECOVERY)
    try:
        assert isinstance(plan, dict)
        assert isinstance(plan["config_hash"], str) and CONFIG_HASH.fullmatch(plan["config_hash"])
        check_safe_name(plan["label"], "label")
        assert isinstance(plan["config"], dict) and isinstance(plan["quantities"], dict)
        examples, inputs = plan["examples"], plan["inputs"]
        assert isinstance(examples, list) and all(type(e) is int and e >= 0 for e in examples)
        assert isinstance(inputs, list) and [i["index"] for i in inputs] == examples
        assert all(type(i["label"]) is int and isinstance(i["digest"], str) for i in inputs)
        assert stable_hash([i["digest"] for i in inputs]) == plan["inputs_digest"]
        check_shard_list(plan["shards"], 0, len(examples), 0)
        int(plan["config"]["dataset"]["num_classes"]), int(plan["quantities"]["n0"]), int(plan["quantities"]["n"])
        make_algorithm(plan["quantities"])
    except (AssertionError, KeyError, TypeError, ValueError) as error:
        raise CorruptFileError(f"{path} is not a valid plan ({error.__class__.__name__}: {error}): "
                               f"{PLAN_RECOVERY}") from None
    return plan


def check_shard_list(shards: Any, first_index: int, num_examples: int, round: int) -> None:
    """AssertionError unless ``shards`` are well-formed shard specs of ``round`` numbered from ``first_index``."""
    assert isinstance(shards, list) and shards, "no shards"
    for k, spec in enumerate(shards):
        assert type(spec["index"]) is int and spec["index"] == first_index + k, f"shard index {spec['index']}"
        assert type(spec["round"]) is int and spec["round"] == round, f"shard {spec['index']} of round {spec['round']}"
        assert all(type(e) is int and 0 <= e < num_examples for e in spec["examples"]) and spec["examples"]
        assert isinstance(spec["ranges"], dict) and spec["ranges"] and set(spec["ranges"]) <= set(COUNTED_PHASES)
        assert all(len(r) == 2 and all(type(v) is int for v in r) and 0 <= r[0] < r[1]
                   for r in spec["ranges"].values())


def round_path(config_dir: str | Path, round: int) -> Path:
    return Path(config_dir) / ROUND_DIR / f"{round:03d}.json"


ROUND_RECOVERY = ("remove it: the next `audiocert certify` of this sweep plans that round again from the counts "
                  "(rounds are a function of the counts, so nothing is lost)")


def known_shards(config_dir: str | Path, plan: Mapping[str, Any]) -> list[Shard]:
    """The shards of every round planned so far: round 0 from the plan, then rounds/001.json, 002.json, ..."""
    shards = [Shard.from_json(s) for s in plan["shards"]]
    round = 1
    while (path := round_path(config_dir, round)).is_file():
        data = read_json(path, recover=ROUND_RECOVERY)
        try:
            assert isinstance(data, dict) and data["config_hash"] == plan["config_hash"], "another config's round"
            assert type(data["round"]) is int and data["round"] == round, f"round {data['round']!r}"
            check_shard_list(data["shards"], len(shards), len(plan["examples"]), round)
        except (AssertionError, KeyError, TypeError) as error:
            raise CorruptFileError(f"{path} is not round {round} of config {plan['config_hash']} "
                                   f"({error.__class__.__name__}: {error}): {ROUND_RECOVERY}") from None
        if data.get("code_version") != plan["code_version"]:
            break  # planned by other code (its shards were recomputed too): next_work plans this round again
        shards += [Shard.from_json(s) for s in data["shards"]]
        round += 1
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


def config_label(cfg: DictConfig) -> str:
    return f"{cfg.dataset.name}-{cfg.representation.stage}-sigma{float(cfg.smoothing.sigma):g}"


def shard_path(config_dir: str | Path, config_hash: str, index: int) -> Path:
    return Path(config_dir) / SHARD_DIR / f"{config_hash}-{index:05d}.json"




def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is an int subclass: a count of True is no count


def _finite_numbers(values: Any, minimum: float = 0.0) -> bool:
    return isinstance(values, list) and all(
        type(v) in (int, float) and math.isfinite(v) and v >= minimum for v in values)


def validate_shard_file(path: Path, plan: Mapping[str, Any],
                        shards: Sequence[Shard]) -> tuple[dict[str, Any] | None, str]:
    """(record, '') when ``path`` is a complete counts file of this plan, else (None, why not).

    Checks what the counts mean, not only their sums: the same config, code, device type and inputs (the
    digests of the audio the counts were computed on), the plan's examples, dataset indices and labels, and
    counts that are non-negative integers adding up to the shard's samples.
    """
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"unreadable ({error.__class__.__name__})"
    if not isinstance(record, dict) or record.get("format") != SHARD_FORMAT:
        return None, "not an audiocert shard file of this format"
    if record.get("config_hash") != plan["config_hash"]:
        return None, f"foreign config {record.get('config_hash')}"
    if record.get("code_version") != plan["code_version"]:
        return None, f"code version {record.get('code_version')} != plan's {plan['code_version']}"
    device_type = plan["quantities"].get("device_type")
    if record.get("device_type") != device_type:
        return None, f"computed on device type {record.get('device_type')!r}, plan says {device_type!r}"
    if record.get("seed") != plan["quantities"]["seed"]:
        return None, f"seed {record.get('seed')!r} != plan's {plan['quantities']['seed']}"
    index = record.get("index")
    if not _is_int(index) or not 0 <= index < len(shards):
        return None, f"shard index {index!r} not in the rounds planned so far"
    expected = shards[index].to_json()
    for key in ("round", "examples", "ranges"):
        # Compared as JSON text: 0.0 == 0 and True == 1 in Python, but they are no sample index.
        if json.dumps(record.get(key), sort_keys=True) != json.dumps(expected[key], sort_keys=True):
            return None, f"covers {key}={record.get(key)}, plan says {expected[key]}"
    inputs = [plan["inputs"][p] for p in expected["examples"]]
    for key, field, what in (("dataset_indices", "index", "dataset indices"), ("labels", "label", "labels"),
                             ("input_digests", "digest", "input digests (the audio changed)")):
        if record.get(key) != [i[field] for i in inputs]:
            return None, f"{what} {record.get(key)} differ from the plan's {[i[field] for i in inputs]}"
    for key in ("stage_norms", "waveform_norms"):
        if not _finite_numbers(record.get(key)) or len(record[key]) != len(inputs):
            return None, f"{key} are not one finite non-negative number per example"
    classes = int(plan["config"]["dataset"]["num_classes"])
    if any(not 0 <= label < classes for label in record["labels"]):
        return None, f"labels {record['labels']} outside [0, {classes})"
    width = {phase: hi - lo for phase, (lo, hi) in expected["ranges"].items()}
    counted = record.get("counts")
    if not isinstance(counted, dict) or set(counted) != set(width):
        return None, f"counts are not one table per phase of {sorted(width)}"
    for phase in width:
        counts = counted[phase]
        rows_ok = isinstance(counts, list) and len(counts) == len(inputs) and all(
            isinstance(row, list) and len(row) == classes and all(_is_int(c) and c >= 0 for c in row)
            for row in counts)
        if not rows_ok:
            return None, f"{phase} counts are not {len(inputs)} x {classes} non-negative integers"
        if any(sum(row) != width[phase] for row in counts):
            return None, f"{phase} counts do not add up to the shard's {width[phase]} samples"
    if record.get("samples") != len(inputs) * sum(width.values()):
        return None, f"samples={record.get('samples')!r} does not match the shard's coverage"
    if not _finite_numbers([record.get("elapsed_s"), record.get("finished_at")]):
        return None, "elapsed_s / finished_at are not finite non-negative numbers"
    if not isinstance(record.get("host"), str):
        return None, "host is missing"
    return record, ""


def shard_done(config_dir: str | Path, plan: Mapping[str, Any], index: int, shards: Sequence[Shard]) -> bool:
    path = shard_path(config_dir, plan["config_hash"], index)
    return path.is_file() and validate_shard_file(path, plan, shards)[0] is not None


class ShardContext:
    """What every shard of a config needs, loaded once per process: classifier, test examples, smoother."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        cfg = OmegaConf.create(plan["config"])
        self.plan = plan
        self.device = resolve_device(cfg.device)
        planned_type = plan["quantities"]["device_type"]
        if self.device.type != planned_type:
            raise RuntimeError(
                f"this sweep was planned for device type {planned_type!r} but this process computes on "
                f"{self.device.type!r} (device={cfg.device}): counts from another device type come from another "
                "base classifier and are never merged; run the shards where that device exists, or plan a new "
                "sweep with device=" + self.device.type)
        if not Path(plan["checkpoint"]).is_file():
            raise FileNotFoundError(f"checkpoint {plan['checkpoint']} of this sweep no longer exists")
        if file_digest(plan["checkpoint"]) != plan["quantities"]["checkpoint_digest"]:
            raise ValueError(f"checkpoint {plan['checkpoint']} changed since the sweep was planned: "
                             "plan a new sweep (another sweep.name) for the new checkpoint")
        loaded, self.test = load_certified_setup(plan["config"], plan["checkpoint"], self.device)
        self.staged = StagedClassifier(loaded.frontend, cfg.representation.stage, loaded.model).eval()
        self.smooth = Smooth(self.staged, int(cfg.dataset.num_classes), float(cfg.smoothing.sigma),
                             seed=int(cfg.seed), block_size=int(cfg.certify.block_size),
                             autocast_bf16=bool(cfg.certify.get("bf16", False)) and self.device.type == "cuda")
        self.batch_size = int(cfg.certify.batch_size)

    def example(self, position: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(waveform, x_stage, planned input) of the plan's example ``position``; audio that changed since the
        plan was made is refused, naming the file."""
        planned = self.plan["inputs"][position]
        waveform, label = self.test[planned["index"]]
        if waveform_digest(waveform) != planned["digest"] or int(label) != planned["label"]:
            raise ValueError(f"test example {planned['index']} ({self.test.describe(planned['index'])['path']}) "
                             "differs from the audio this sweep was planned on: its counts would certify another "
                             "input. Restore the file, or remove the config directory to certify the new audio")
        with torch.inference_mode():
            x_stage = self.staged.clean(waveform.to(self.device)[None])[0]
        return waveform, x_stage, planned


# Contexts of this process, one per config (a worker that runs many shards loads each checkpoint once).
_CONTEXTS: OrderedDict[tuple[str, str, str], ShardContext] = OrderedDict()
MAX_CONTEXTS = 4


def shard_context(config_dir: str | Path, plan: Mapping[str, Any]) -> ShardContext:
    """The cached context of a config in this process (keyed by directory, config hash and inputs)."""
    key = (str(Path(config_dir).resolve()), plan["config_hash"], plan["inputs_digest"])
    if key in _CONTEXTS:
        _CONTEXTS.move_to_end(key)
        return _CONTEXTS[key]
    context = _CONTEXTS[key] = ShardContext(plan)
    while len(_CONTEXTS) > MAX_CONTEXTS:
        _CONTEXTS.popitem(last=False)
    return context


def clear_shard_contexts() -> None:
    _CONTEXTS.clear()


def run_shard(config_dir: str | Path, plan: Mapping[str, Any], index: int,
              context: ShardContext | None = None, on_example: Callable[[int, int], None] | None = None) -> Path:
    """Compute one shard's counts and write them atomically; a shard already done is left alone.

    ``on_example(done, total)`` is called after each example's counts (progress in a job's log).
    """
    path = shard_path(config_dir, plan["config_hash"], index)
    shards = known_shards(config_dir, plan)
    if shard_done(config_dir, plan, index, shards):
        return path
    if plan["code_version"] != code_version():
        # Its record would not validate (and the shard would be resubmitted for ever): refuse before computing.
        raise RuntimeError(f"{config_dir} was planned by audiocert {plan['code_version']}, this is "
                           f"{code_version()}: shards of two code versions do not merge. Rerun the sweep's "
                           "`audiocert certify` command with this code to plan it again")
    context = context or shard_context(config_dir, plan)
    shard = shards[index]
    started = time.monotonic()
    counts: dict[str, list[list[int]]] = {phase: [] for phase in shard.ranges}
    stage_norms, waveform_norms, inputs = [], [], []
    for position in shard.examples:
        waveform, x_stage, planned = context.example(position)
        for phase, (lo, hi) in shard.ranges.items():
            counts[phase].append(context.smooth.counts(x_stage, phase, lo, hi, context.batch_size,
                                                       example=planned["index"]).tolist())
        stage_norms.append(float(torch.linalg.vector_norm(x_stage.double())))
        waveform_norms.append(float(torch.linalg.vector_norm(waveform.double())))
        inputs.append(planned)
        if on_example is not None:
            on_example(len(inputs), len(shard.examples))
    elapsed = time.monotonic() - started
    record = {
        "format": SHARD_FORMAT, "config_hash": plan["config_hash"], "code_version": code_version(),
        **shard.to_json(), "dataset_indices": [i["index"] for i in inputs],
        "labels": [i["label"] for i in inputs], "input_digests": [i["digest"] for i in inputs],
        "stage_norms": stage_norms, "waveform_norms": waveform_norms,
        "counts": counts,
        "seed": int(plan["config"]["seed"]), "samples": shard.samples, "elapsed_s": elapsed,
        "device": str(context.device), "device_type": context.device.type, "host": socket.gethostname(),
        "finished_at": time.time(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_task": slurm_task_id(),
        "restart_count": os.environ.get("SLURM_RESTART_COUNT"),
    }
    atomic_write_json(path, record)
    if validate_shard_file(path, plan, shards)[0] is None:  # a shard that counts nothing must fail its job
        raise RuntimeError(f"shard {index} of {config_dir} wrote {path}, which does not validate against the plan: "
                           f"{validate_shard_file(path, plan, shards)[1]}")
    return path


def slurm_task_id() -> str | None:
    """The SLURM job running this process as squeue and submitit name it: '123_4' for an array task."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def run_shards(work: Sequence[tuple[str, int]], threads: int | None = None, progress: bool = True,
               on_example: Callable[[int, int], None] | None = None) -> list[Path]:
    """Run a list of (config_dir, shard index) in this process, loading each config's context once."""
    from tqdm import tqdm

    # Inside a SLURM job use the CPUs it was given: oversubscribed OpenMP threads slow sampling by 10x or more.
    threads = threads or int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or None
    if threads:
        torch.set_num_threads(int(threads))
    plans: dict[str, dict[str, Any]] = {}
    written = []
    for config_dir, index in tqdm(work, desc="shards", disable=not progress, dynamic_ncols=True):
        plan = plans.setdefault(config_dir, read_plan(config_dir))
        if shard_done(config_dir, plan, index, known_shards(config_dir, plan)):
            continue
        written.append(run_shard(config_dir, plan, index, shard_context(config_dir, plan), on_example))
    return written


# ----------------------------------------------------------------------------------------------------------
# Inventory, merging and rounds
# ----------------------------------------------------------------------------------------------------------
SHARD_NAME = re.compile(r"^(?P<hash>[0-9a-f]+)-(?P<index>\d+)\.json$")


@dataclass
class ShardInventory:
    shards: list[Shard]  # every shard of the rounds planned so far
    records: dict[int, dict[str, Any]]
    missing: list[int]
    duplicated: dict[int, list[Path]]
    invalid: dict[Path, str]

    @property
    def complete(self) -> bool:
        return not (self.missing or self.duplicated or self.invalid)

    def problems(self, config_dir: Path) -> str:
        lines = []
        if self.missing:
            shown = ", ".join(str(i) for i in self.missing[:20])
            lines.append(f"{len(self.missing)} missing shard(s): {shown}{' ...' if len(self.missing) > 20 else ''}")
        for index, paths in self.duplicated.items():
            lines.append(f"shard {index} present {len(paths)} times: {', '.join(str(p) for p in paths)}")
        for path, why in self.invalid.items():
            lines.append(f"{path}: {why}")
        return f"{config_dir}: cannot finalise:\n  " + "\n  ".join(lines)


def inventory(config_dir: str | Path, plan: Mapping[str, Any] | None = None) -> ShardInventory:
    """Classify every file under shards/ against the rounds planned so far: valid (once), duplicated,
    invalid, missing."""
    config_dir = Path(config_dir)
    plan = plan or read_plan(config_dir)
    shards = known_shards(config_dir, plan)
    found: dict[int, list[tuple[Path, dict[str, Any]]]] = {}
    invalid: dict[Path, str] = {}
    shard_dir = config_dir / SHARD_DIR
    for path in sorted(shard_dir.glob("*.json")) if shard_dir.is_dir() else []:
        record, why = validate_shard_file(path, plan, shards)
        if record is None:
            invalid[path] = why
        else:
            found.setdefault(record["index"], []).append((path, record))
    duplicated = {i: [p for p, _ in entries] for i, entries in found.items() if len(entries) > 1}
    records = {}
    for index, entries in found.items():
        if len(entries) != 1:
            continue
        path, record = entries[0]
        match = SHARD_NAME.match(path.name)
        if match and match["hash"] == plan["config_hash"] and int(match["index"]) == index:
            records[index] = record
        else:  # a valid shard under a name that is not its own: a stray copy
            invalid[path] = f"counts of shard {index} under a name that is not its own"
    missing = [s.index for s in shards if s.index not in records and s.index not in duplicated]
    return ShardInventory(shards, records, missing, duplicated, invalid)


def merge_counts(plan: Mapping[str, Any], records: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Sum counts per point and phase over shards, after checking that the ranges of every (point, phase)
    tile [0, total) with no gap and no overlap (so no sample is counted twice, whatever was requeued).

    Also the per-point compute time, label, stage norm and waveform norm."""
    num_examples, classes = len(plan["examples"]), int(plan["config"]["dataset"]["num_classes"])
    totals = {phase: np.zeros((num_examples, classes), dtype=np.int64) for phase in COUNTED_PHASES}
    covered: dict[tuple[int, str], list[tuple[int, int]]] = {}
    seconds = np.zeros(num_examples)
    labels = np.asarray([i["label"] for i in plan["inputs"]])  # every shard's labels were checked against these
    norms, waveform_norms = np.zeros(num_examples), np.zeros(num_examples)
    for record in records.values():
        rows = np.asarray(record["examples"])
        for phase, (lo, hi) in record["ranges"].items():
            totals[phase][rows] += np.asarray(record["counts"][phase], dtype=np.int64)
            for row in record["examples"]:
                covered.setdefault((row, phase), []).append((lo, hi))
        seconds[rows] += record["elapsed_s"] / len(rows)  # a shard's time, shared among its examples
        norms[rows], waveform_norms[rows] = record["stage_norms"], record["waveform_norms"]
    for (row, phase), ranges in covered.items():
        end = 0
        for lo, hi in sorted(ranges):
            if lo != end:
                raise IncompleteSweepError(
                    f"{'overlapping' if lo < end else 'non-contiguous'} {phase} ranges of point {row}: "
                    f"{sorted(ranges)}: its counts would not be one prefix of its noise stream")
            end = hi
    return {**totals, "seconds": seconds, "labels": labels, "norms": norms, "waveform_norms": waveform_norms}


def next_work(config_dir: str | Path, plan: Mapping[str, Any]) -> list[int]:
    """Indices of the shards to run now: the missing shards of the rounds planned so far or, when those are all
    done, the shards of the next round (planned from the merged counts and written to rounds/). Empty when
    every point is settled: the config is ready to reduce.

    A round's file is written once; a rerun after a kill finds it and runs what is missing of it, so no
    round is planned twice and no sample range is drawn twice.
    """
    config_dir = Path(config_dir)
    found = inventory(config_dir, plan)
    if found.missing or found.duplicated:
        return found.missing
    merged = merge_counts(plan, found.records)
    last_round = max(s.round for s in found.shards)
    shards = round_shards(make_algorithm(plan["quantities"]), merged["selection"], merged["estimation"],
                          int(plan["quantities"]["shard"]["examples"]), int(plan["quantities"]["shard"]["samples"]),
                          first_index=len(found.shards), round=last_round + 1)
    if not shards:
        return []
    atomic_write_json(round_path(config_dir, last_round + 1), {
        "config_hash": plan["config_hash"], "code_version": plan["code_version"], "round": last_round + 1,
        "planned_at": time.time(),
        "shards": [s.to_json() for s in shards]})
    log.info("%s: round %d asks %d point(s) for more samples (%d shard(s))", plan["label"], last_round + 1,
             len({e for s in shards for e in s.examples}), len(shards))
    return [s.index for s in shards]


def settled(plan: Mapping[str, Any], merged: Mapping[str, np.ndarray]) -> bool:
    """True when the algorithm asks no point for more samples (the config can be reduced)."""
    algorithm = make_algorithm(plan["quantities"])
    return all(algorithm.targets(merged["selection"][p], merged["estimation"][p])
               == (int(merged["selection"][p].sum()), int(merged["estimation"][p].sum()))
               for p in range(len(plan["examples"])))
