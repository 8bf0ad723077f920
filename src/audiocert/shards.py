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
    SEAL_KEY,
    CorruptFileError,
    atomic_write_json,
    atomic_write_sealed,
    check_safe_name,
    check_sealed_bytes,
    code_version,
    file_digest,
    read_json,
    seal,
    seal_problem,
    stable_hash,
)
from audiocert.sampler import MAX_BLOCKS, MAX_EXAMPLES, Smooth, StagedClassifier
from audiocert.settings import check_number
from audiocert.stages import check_stage
from audiocert.statistics import REPORT_RADII

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
SHARD_DIR = "shards"
ROUND_DIR = "rounds"
PREVIOUS_DIR = "previous"  # results of older code versions, set aside when a config is planned again
KEPT_ON_REPLAN = {PLAN_FILE, "jobs.json", PREVIOUS_DIR}  # jobs.json: status.JOBS_FILE (a layer above)
SHARD_FORMAT = 4  # 4: sparse counts, sealed, one line; 3: phase ranges and rounds; 2: input digests, device type
COUNTED_PHASES = ("selection", "estimation")  # the phases CERTIFY counts


class IncompleteSweepError(RuntimeError):
    """Raised when a config's shards are missing, duplicated, foreign, or its rounds are not finished."""


class WorkKind:
    """One kind of shard work on a plan of test points: what a shard computes, what its record holds, how records
    are summed, and whether more rounds follow. Certification (counts) is the built-in kind; attacks and
    perceptibility measurements are kinds of their own, in their own modules (see ``KIND_MODULES``), so that
    planning, sharding, validation, resume, launchers and status serve them all.

    A kind's plan.json has the same envelope as a certification plan (config hash of its quantities, code
    version, label, config, examples and their input digests, shards) plus what the kind adds; its shard records
    have the same envelope (config, code, device type, seed, coverage, inputs, timing, host) plus the kind's
    payload, checked by :meth:`check_payload`.
    """

    name = ""
    range_keys: tuple[str, ...] = ()  # the keys of a shard's ranges (certify: the phases; attack: "eps")
    payload_keys: tuple[str, ...] = ()  # the record fields the kind adds

    def check_plan(self, plan: Mapping[str, Any]) -> None:
        """AssertionError or ValueError unless the plan's kind-specific parts are consistent."""

    def run(self, work: ConfigWork, shard: Shard, on_example: Callable[[int, int], None] | None) -> dict[str, Any]:
        """The payload of one shard's record."""
        raise NotImplementedError

    def check_payload(self, record: Mapping[str, Any], plan: Mapping[str, Any], shard: Shard,
                      inputs: Sequence[Mapping[str, Any]]) -> tuple[str, Any]:
        """('', what the accumulator needs) for a valid payload, else (why not, None)."""
        raise NotImplementedError

    def accumulator(self, plan: Mapping[str, Any]) -> Any:
        """An object with ``add(record, checked)`` (``checked``: what check_payload returned) and ``result()``."""
        raise NotImplementedError

    def next_shards(self, plan: Mapping[str, Any], merged: Mapping[str, Any], shards: Sequence[Shard]) -> list[Shard]:
        """The shards of the next round from the merged results (none: the config is ready to reduce)."""
        return []


def has_results(config_dir: str | Path, plan: Mapping[str, Any] | None = None) -> bool:
    """Whether a config's reduced results are on disk: certificates.tsv and summary.json for certification,
    summary.json (written last by their reducers) for the other kinds."""
    config_dir = Path(config_dir)
    kind = (plan or {}).get("kind") if plan is not None else None
    if kind is None:
        try:
            kind = read_json(config_dir / PLAN_FILE).get("kind", "certify")
        except (OSError, ValueError, AttributeError):
            kind = "certify"
    names = ("certificates.tsv", "summary.json") if kind == "certify" else ("summary.json",)
    return all((config_dir / name).is_file() for name in names)


KINDS: dict[str, WorkKind] = {}
# Where the other kinds live (imported on first use: they sit in layers above this one).
KIND_MODULES = {"attack": "audiocert.adversarial", "perceptibility": "audiocert.perceptibility"}


def register_kind(kind: WorkKind) -> WorkKind:
    KINDS[kind.name] = kind
    return kind


def kind_of(plan: Mapping[str, Any]) -> WorkKind:
    """The work kind of a plan (plans without one are certification plans)."""
    name = plan.get("kind", "certify")
    if name not in KINDS and name in KIND_MODULES:
        import importlib

        importlib.import_module(KIND_MODULES[name])
    if name not in KINDS:
        raise ValueError(f"unknown kind of work {name!r}: choose one of {', '.join(['certify', *KIND_MODULES])}")
    return KINDS[name]


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
    """Impossible values fail here, before anything is submitted, naming the field (every number finite and in
    range: ``smoothing.sigma=inf`` once certified every point at radius inf)."""
    c = cfg.certify
    for field in ("n0", "n", "points_per_speaker", "batch_size", "block_size"):
        check_number(c[field], f"certify.{field}", minimum=1, integer=True)
    for field in ("examples", "samples"):
        check_number(c.shard[field], f"certify.shard.{field}", minimum=1, integer=True)
    if int(c.batch_size) < int(c.block_size):
        raise ValueError(f"certify.batch_size={c.batch_size} is below certify.block_size={c.block_size}: "
                         "batches hold whole noise blocks, so raise batch_size or lower block_size")
    check_number(c.alpha, "certify.alpha", above=0, below=0.5)
    check_number(cfg.smoothing.sigma, "smoothing.sigma", above=0)
    if not isinstance(c.get("bf16", False), bool):
        raise ValueError(f"certify.bf16={c.bf16!r} must be true or false")
    if c.algorithm not in ALGORITHMS:
        raise ValueError(f"certify.algorithm={c.algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    if c.algorithm == "sequential":
        seq = c.sequential
        check_number(seq.first, "certify.sequential.first", minimum=1, integer=True)
        check_number(seq.growth, "certify.sequential.growth", above=1)
        check_number(seq.stop_alpha, "certify.sequential.stop_alpha", above=0, below=0.5)
        check_number(seq.get("last_share", 0.75), "certify.sequential.last_share", above=0, below=1)
        if seq.radii is not None:
            if not seq.radii:
                raise ValueError("certify.sequential.radii=[] must list positive radii (or be null)")
            for k, radius in enumerate(seq.radii):
                check_number(radius, f"certify.sequential.radii[{k}]", above=0)
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
    check_number(cfg.dataset.test_crops_per_speaker, "dataset.test_crops_per_speaker", minimum=1, integer=True)
    check_number(cfg.dataset.num_classes, "dataset.num_classes", minimum=2, integer=True)
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


def certified_quantities(cfg: DictConfig | Mapping[str, Any], device_type: str | None = None) -> dict[str, Any]:
    """What determines the counts and their layout; the config hash is computed from this alone (with the
    checkpoint's digest). ``device_type``: the one a plan recorded (else decided here, see shard_device_type)."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
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
        "device_type": device_type or shard_device_type(cfg),  # CPU fp32 and CUDA bf16: two base classifiers
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
        "kind": "certify", "config_hash": config_hash, "code_version": code_version(), "label": config_label(cfg),
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
    done_s, done_e = np.asarray(selection).sum(axis=1), np.asarray(estimation).sum(axis=1)
    target_s, target_e = algorithm.targets_many(selection, estimation)
    if np.any(target_s < done_s) or np.any(target_e < done_e):
        p = int(np.flatnonzero((target_s < done_s) | (target_e < done_e))[0])
        raise ValueError(f"{algorithm.name} asks for fewer samples than already counted: "
                         f"{(int(done_s[p]), int(done_e[p]))} -> {(int(target_s[p]), int(target_e[p]))}")
    groups: dict[tuple, list[int]] = {}
    for position in np.flatnonzero((target_s > done_s) | (target_e > done_e)).tolist():
        ranges = tuple((phase, int(lo), int(hi)) for phase, lo, hi in zip(
            COUNTED_PHASES, (done_s[position], done_e[position]), (target_s[position], target_e[position]),
            strict=True) if hi > lo)
        groups.setdefault(ranges, []).append(position)
    return cut_shards([(points, {phase: (lo, hi) for phase, lo, hi in key}) for key, points in groups.items()],
                      examples_per_shard, samples_per_shard, first_index, round)


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
        assert isinstance(plan["config_hash"], str) and CONFIG_HASH.fullmatch(plan["config_hash"]), \
            f"config_hash {plan['config_hash']!r} is not 12 hex digits"
        assert stable_hash(plan["quantities"]) == plan["config_hash"], "its config hash is not that of its quantities"
        kind = kind_of(plan)
        kind.check_plan(plan)
        check_safe_name(plan["label"], "label")
        assert isinstance(plan["config"], dict) and isinstance(plan["quantities"], dict)
        examples, inputs = plan["examples"], plan["inputs"]
        assert isinstance(examples, list) and all(type(e) is int and e >= 0 for e in examples)
        assert isinstance(inputs, list) and [i["index"] for i in inputs] == examples
        assert all(type(i["label"]) is int and isinstance(i["digest"], str) for i in inputs)
        assert stable_hash([i["digest"] for i in inputs]) == plan["inputs_digest"]
        check_shard_list(plan["shards"], 0, len(examples), 0, kind.range_keys)
        int(plan["config"]["dataset"]["num_classes"])
    except (AssertionError, KeyError, TypeError, ValueError) as error:
        raise CorruptFileError(f"{path} is not a valid plan ({error.__class__.__name__}: {error}): "
                               f"{PLAN_RECOVERY}") from None
    return plan


def check_plan_consistency(plan: Mapping[str, Any]) -> None:
    """AssertionError unless the plan's quantities are what its config says (the workers read the config).

    A plan whose config says sigma 0.02 while its quantities (and hash) say 0.25 would count at one sigma and
    certify radii at the other.
    """
    quantities = plan["quantities"]
    expected = certified_quantities(plan["config"], device_type=quantities["device_type"])
    expected["checkpoint_digest"] = quantities.get("checkpoint_digest")
    differ = sorted(k for k in set(expected) | set(quantities) if expected.get(k) != quantities.get(k))
    assert not differ, f"its quantities {differ} differ from what its config says"


def check_shard_list(shards: Any, first_index: int, num_examples: int, round: int,
                     range_keys: Sequence[str] = COUNTED_PHASES) -> None:
    """AssertionError unless ``shards`` are well-formed shard specs of ``round`` numbered from ``first_index``."""
    assert isinstance(shards, list) and shards, "no shards"
    for k, spec in enumerate(shards):
        assert type(spec["index"]) is int and spec["index"] == first_index + k, f"shard index {spec['index']}"
        assert type(spec["round"]) is int and spec["round"] == round, f"shard {spec['index']} of round {spec['round']}"
        assert all(type(e) is int and 0 <= e < num_examples for e in spec["examples"]) and spec["examples"]
        assert len(set(spec["examples"])) == len(spec["examples"]), f"shard {spec['index']} repeats an example"
        assert isinstance(spec["ranges"], dict) and spec["ranges"] and set(spec["ranges"]) <= set(range_keys)
        assert all(len(r) == 2 and all(type(v) is int for v in r) and 0 <= r[0] < r[1]
                   for r in spec["ranges"].values())


def round_path(config_dir: str | Path, round: int) -> Path:
    return Path(config_dir) / ROUND_DIR / f"{round:03d}.json"


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
            assert data["config_hash"] == plan["config_hash"], "another config's round"
            assert type(data["round"]) is int and data["round"] == round, f"round {data['round']!r}"
            check_shard_list(data["shards"], len(shards), len(plan["examples"]), round, kind_of(plan).range_keys)
        except (AssertionError, KeyError, TypeError) as error:
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


def config_label(cfg: DictConfig) -> str:
    return f"{cfg.dataset.name}-{cfg.representation.stage}-sigma{float(cfg.smoothing.sigma):g}"


def shard_path(config_dir: str | Path, config_hash: str, index: int) -> Path:
    return Path(config_dir) / SHARD_DIR / f"{config_hash}-{index:05d}.json"




def is_int(value: Any) -> bool:
    """An integer read from JSON, not a boolean (bool is an int subclass: a count of True is no count)."""
    return type(value) is int


_is_int = is_int


def select_points(plan: Mapping[str, Any], points_per_speaker: int | None) -> list[int]:
    """Positions of a certification plan's examples that another kind of work covers: all of them (None), or the
    first k of each speaker's (the same test points as the certification, fewer of them)."""
    if points_per_speaker is None:
        return list(range(len(plan["examples"])))
    seen: dict[int, int] = {}
    positions = []
    for position, planned in enumerate(plan["inputs"]):
        seen[planned["label"]] = seen.get(planned["label"], 0) + 1
        if seen[planned["label"]] <= points_per_speaker:
            positions.append(position)
    return positions


def _finite_numbers(values: Any, minimum: float = 0.0) -> bool:
    return isinstance(values, list) and all(
        type(v) in (int, float) and math.isfinite(v) and v >= minimum for v in values)


# ----------------------------------------------------------------------------------------------------------
# Shard records: compact, sparse, sealed
# ----------------------------------------------------------------------------------------------------------
def encode_counts(rows: Sequence[Sequence[Any]]) -> dict[str, list[Any]]:
    """Count rows (one per example of a shard, one entry per class) as their nonzero entries, row-major:
    ``{"rows": [...], "classes": [...], "counts": [...]}``. With 921 speakers most counts are 0: a dense table
    per example made a config's shard files 1.4 GB. Values are kept as given (a float or a boolean stays one,
    for validation to refuse)."""
    out: dict[str, list[Any]] = {"rows": [], "classes": [], "counts": []}
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value != 0 or type(value) is not int:
                out["rows"].append(r)
                out["classes"].append(c)
                out["counts"].append(value)
    return out


def sparse_counts(counts: np.ndarray) -> dict[str, list[int]]:
    """:func:`encode_counts` of an integer array (E, C), vectorised (what a shard writes)."""
    rows, classes = np.nonzero(counts)
    return {"rows": rows.tolist(), "classes": classes.tolist(), "counts": counts[rows, classes].tolist()}


def decode_counts(sparse: Any, num_rows: int, classes: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, classes, counts) int64 arrays of a sparse count table after checking it, else ValueError saying why.

    Checked: three equally long lists of integers (not floats, not booleans); rows in [0, num_rows), classes in
    [0, classes), counts >= 1, entries strictly increasing in (row, class) (so none is listed twice); and every
    row's counts adding up to ``width``, the samples of that phase. Vectorised: the per-entry Python work is
    only the type check, over the nonzero entries.
    """
    if not isinstance(sparse, dict) or set(sparse) != {"rows", "classes", "counts"}:
        raise ValueError("not a sparse table {rows, classes, counts}")
    lists = [sparse["rows"], sparse["classes"], sparse["counts"]]
    if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) != 1:
        raise ValueError("rows, classes and counts are not lists of one length")
    if not all(set(map(type, values)) <= {int} for values in lists):  # no float, no bool (True == 1)
        raise ValueError("entries that are not integers")
    r, c, k = (np.asarray(v, dtype=np.int64).reshape(-1) for v in lists)
    if r.size and (r.min() < 0 or r.max() >= num_rows or c.min() < 0 or c.max() >= classes or k.min() < 1):
        raise ValueError(f"entries outside {num_rows} rows x {classes} classes, or counts below 1")
    key = r * classes + c
    if key.size > 1 and not np.all(np.diff(key) > 0):
        raise ValueError("entries not in strictly increasing (row, class) order (one listed twice?)")
    if not np.array_equal(np.bincount(r, weights=k, minlength=num_rows), np.full(num_rows, float(width))):
        raise ValueError(f"rows do not add up to the shard's {width} samples")
    return r, c, k


SUMMARY_KEYS = ("index", "round", "samples", "elapsed_s", "finished_at", "host", "device", "slurm_job_id",
                "slurm_task", "restart_count")


def check_shard_record(record: Any, plan: Mapping[str, Any], shards: Sequence[Shard], seal_checked: bool = False
                       ) -> tuple[str, Any]:
    """('', checked payload) when ``record`` is a complete record of this plan, else (why not, {}).

    Checks what the results mean, not only their shape: its seal, the same config, code, device type and inputs
    (the digests of the audio they were computed on), the plan's examples, dataset indices and labels, its
    coverage; then the kind's payload (:meth:`WorkKind.check_payload`; for certification, counts that are
    positive integers adding up to the shard's samples: phase -> (rows, classes, counts), rows relative to the
    shard's examples).
    """
    if not isinstance(record, dict) or record.get("format") != SHARD_FORMAT:
        return "not an audiocert shard file of this format", {}
    if not seal_checked and (problem := seal_problem(record)):
        return problem, {}
    if record.get("config_hash") != plan["config_hash"]:
        return f"foreign config {record.get('config_hash')}", {}
    if record.get("kind", "certify") != plan.get("kind", "certify"):
        return f"a {record.get('kind')} record, the plan is a {plan.get('kind', 'certify')} plan", {}
    if record.get("code_version") != plan["code_version"]:
        return f"code version {record.get('code_version')} != plan's {plan['code_version']}", {}
    device_type = plan["quantities"].get("device_type")
    if record.get("device_type") != device_type:
        return f"computed on device type {record.get('device_type')!r}, plan says {device_type!r}", {}
    if record.get("seed") != plan["quantities"]["seed"]:
        return f"seed {record.get('seed')!r} != plan's {plan['quantities']['seed']}", {}
    index = record.get("index")
    if not _is_int(index) or not 0 <= index < len(shards):
        return f"shard index {index!r} not in the rounds planned so far", {}
    expected = shards[index].to_json()
    for key in ("round", "examples", "ranges"):
        # Compared with their types: 0.0 == 0 and True == 1 in Python, but they are no sample index.
        if not same_json(record.get(key), expected[key]):
            return f"covers {key}={record.get(key)}, plan says {expected[key]}", {}
    inputs = [plan["inputs"][p] for p in expected["examples"]]
    for key, field, what in (("dataset_indices", "index", "dataset indices"), ("labels", "label", "labels"),
                             ("input_digests", "digest", "input digests (the audio changed)")):
        if record.get(key) != [i[field] for i in inputs]:
            return f"{what} {record.get(key)} differ from the plan's {[i[field] for i in inputs]}", {}
    classes = int(plan["config"]["dataset"]["num_classes"])
    if any(not 0 <= label < classes for label in record["labels"]):
        return f"labels {record['labels']} outside [0, {classes})", {}
    if record.get("samples") != shards[index].samples:
        return f"samples={record.get('samples')!r} does not match the shard's coverage", {}
    if not _finite_numbers([record.get("elapsed_s"), record.get("finished_at")]):
        return "elapsed_s / finished_at are not finite non-negative numbers", {}
    if not isinstance(record.get("host"), str):
        return "host is missing", {}
    return kind_of(plan).check_payload(record, plan, shards[index], inputs)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, types included (1 != 1.0 != True here, unlike Python's ==)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def validate_shard_file(path: Path, plan: Mapping[str, Any],
                        shards: Sequence[Shard]) -> tuple[dict[str, Any] | None, str]:
    """(record, '') when ``path`` is a complete counts file of this plan (see :func:`check_shard_record`), else
    (None, why not)."""
    record, why, _ = _read_shard(Path(path), plan, shards)
    return record, why


def _read_shard(path: Path, plan: Mapping[str, Any], shards: Sequence[Shard]
                ) -> tuple[dict[str, Any] | None, str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    try:
        data = path.read_bytes()
        record = json.loads(data)
    except (OSError, ValueError) as error:
        return None, f"unreadable ({error.__class__.__name__})", {}
    sealed = check_sealed_bytes(data)
    if sealed not in ("", "unknown"):
        return None, sealed, {}
    why, counts = check_shard_record(record, plan, shards, seal_checked=sealed == "")
    return (None, why, {}) if why else (record, "", counts)


# What this process has already validated: path -> (file signature, plan and layout key, summary or None, why).
# A file that has not changed (same inode, size and mtime) under the same plan and rounds is not parsed again,
# so a command that polls (wait, status --watch, W&B progress) validates each file once.
_VALIDATED: dict[str, tuple[tuple[int, int, int], str, dict[str, Any] | None, str]] = {}


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _layout_key(plan: Mapping[str, Any], shards: Sequence[Shard]) -> str:
    return f"{plan.get(SEAL_KEY)}:{getattr(shards, 'key', '')}:{len(shards)}"


def shard_summary(record: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """What status, progress and the reducer need of a record besides its counts (kept in memory for all)."""
    return {**{k: record.get(k) for k in SUMMARY_KEYS}, "path": str(path), "examples": list(record["examples"])}


def validated_summary(path: Path, plan: Mapping[str, Any], shards: Sequence[Shard]
                      ) -> tuple[dict[str, Any] | None, str]:
    """(summary, '') of a valid shard file, else (None, why); from this process's cache when the file, the plan
    and the layout are unchanged (only for a :class:`Layout`, whose key names the rounds)."""
    signature, key = _signature(path), _layout_key(plan, shards)
    cached = _VALIDATED.get(str(path))
    if signature is not None and isinstance(shards, Layout) and cached and cached[:2] == (signature, key):
        return cached[2], cached[3]
    record, why, _ = _read_shard(path, plan, shards)
    summary = shard_summary(record, path) if record is not None else None
    if signature is not None and isinstance(shards, Layout):
        _VALIDATED[str(path)] = (signature, key, summary, why)
    return summary, why


# status, wait and W&B progress keep what they validated in <config>/.shard-summaries.json (sealed, keyed by plan and
# rounds, each entry by its file's inode, size and mtime), so the next `audiocert status` of a large sweep only
# stats its files. Never used by a merge (reduce, next round): those read every file's counts.
SUMMARY_CACHE = ".shard-summaries.json"


def _load_summaries(config_dir: Path, key: str) -> None:
    path = config_dir / SUMMARY_CACHE
    try:
        data = read_json(path) if path.is_file() else None
    except (OSError, CorruptFileError):
        return
    if not isinstance(data, dict) or data.get("layout") != key or seal_problem(data):
        return
    for name, (signature, summary, why) in data.get("entries", {}).items():
        _VALIDATED.setdefault(str(config_dir / SHARD_DIR / name), (tuple(signature), key, summary, why))


def _save_summaries(config_dir: Path, key: str, paths: Sequence[Path]) -> None:
    entries = {}
    for path in paths:
        cached = _VALIDATED.get(str(path))
        if cached and cached[1] == key:
            entries[path.name] = [list(cached[0]), cached[2], cached[3]]
    try:
        atomic_write_json(config_dir / SUMMARY_CACHE, seal({"layout": key, "entries": entries}), compact=True)
    except OSError:  # a read-only or full disk: the cache only saves time
        pass


def shard_done(config_dir: str | Path, plan: Mapping[str, Any], index: int, shards: Sequence[Shard]) -> bool:
    path = shard_path(config_dir, plan["config_hash"], index)
    return path.is_file() and validated_summary(path, plan, shards)[0] is not None


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


def record_envelope(plan: Mapping[str, Any], shard: Shard, inputs: Sequence[Mapping[str, Any]], elapsed: float,
                    device: torch.device | str) -> dict[str, Any]:
    """What every shard record holds besides its kind's payload: what it covers, on what, where and when."""
    device = torch.device(device)
    return {
        "format": SHARD_FORMAT, "kind": plan.get("kind", "certify"), "config_hash": plan["config_hash"],
        "code_version": code_version(), **shard.to_json(), "dataset_indices": [i["index"] for i in inputs],
        "labels": [i["label"] for i in inputs], "input_digests": [i["digest"] for i in inputs],
        "seed": int(plan["config"]["seed"]), "samples": shard.samples, "elapsed_s": float(elapsed),
        "device": str(device), "device_type": device.type, "host": socket.gethostname(),
        "finished_at": time.time(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_task": slurm_task_id(),
        "restart_count": os.environ.get("SLURM_RESTART_COUNT"),
    }


def make_record(plan: Mapping[str, Any], shard: Shard, counts: Mapping[str, np.ndarray],
                inputs: Sequence[Mapping[str, Any]], stage_norms: Sequence[float], waveform_norms: Sequence[float],
                elapsed: float, device: torch.device | str) -> dict[str, Any]:
    """The sealed counts record of a certification shard (``counts``: phase -> (examples, classes) integers)."""
    return seal({**record_envelope(plan, shard, inputs, elapsed, device),
                 **CERTIFY.payload(counts, stage_norms, waveform_norms)})


class ConfigWork:
    """One config's plan and rounds, read and checked once in this process, to run many of its shards.

    A task that runs hundreds of shards pays for plan.json, the round files and the shard context once, and
    checks each shard's own file only (not the whole inventory) before and after computing it.
    """

    def __init__(self, config_dir: str | Path) -> None:
        self.config_dir = Path(config_dir)
        self.plan = read_plan(self.config_dir)
        self.shards = known_shards(self.config_dir, self.plan)
        self.kind = kind_of(self.plan)

    @property
    def context(self) -> ShardContext:
        """The config's classifier, test examples and smoother in this process (loaded on first use)."""
        return shard_context(self.config_dir, self.plan)

    @property
    def device(self) -> torch.device:
        return self.context.device

    def path(self, index: int) -> Path:
        return shard_path(self.config_dir, self.plan["config_hash"], index)

    def done(self, index: int) -> bool:
        return shard_done(self.config_dir, self.plan, index, self.shards)

    def run(self, index: int, on_example: Callable[[int, int], None] | None = None) -> Path:
        """Compute one shard's results (its kind's payload) and write them atomically; a shard already done is left
        alone.

        ``on_example(done, total)`` is called after each example's counts (progress in a job's log).
        """
        path = self.path(index)
        if self.done(index):
            return path
        if self.plan["code_version"] != code_version():
            # Its record would not validate (and the shard would be resubmitted for ever): refuse before computing.
            raise RuntimeError(f"{self.config_dir} was planned by audiocert {self.plan['code_version']}, this is "
                               f"{code_version()}: shards of two code versions do not merge. Rerun the sweep's "
                               f"`audiocert {self.kind.name}` command with this code to plan it again")
        if not 0 <= index < len(self.shards):
            raise ValueError(f"shard {index} is not in the rounds planned so far of {self.config_dir} "
                             f"({len(self.shards)} shards)")
        shard = self.shards[index]
        started = time.monotonic()
        payload = self.kind.run(self, shard, on_example)
        inputs = [self.plan["inputs"][p] for p in shard.examples]
        record = seal({**record_envelope(self.plan, shard, inputs, time.monotonic() - started, self.device),
                       **payload})
        why, _ = check_shard_record(record, self.plan, self.shards)
        if why:  # a shard that counts nothing must fail its job
            raise RuntimeError(f"shard {index} of {self.config_dir} computed a record that does not validate against "
                               f"the plan: {why}")
        atomic_write_sealed(path, record)
        return path


def run_shard(config_dir: str | Path, plan: Mapping[str, Any] | None, index: int,
              on_example: Callable[[int, int], None] | None = None) -> Path:
    """Compute one shard (see :meth:`ConfigWork.run`); ``plan`` is read again from the directory and checked."""
    return ConfigWork(config_dir).run(index, on_example)


def slurm_task_id() -> str | None:
    """The SLURM job running this process as squeue and submitit name it: '123_4' for an array task."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def set_threads(threads: int | None = None) -> None:
    """Inside a SLURM job use the CPUs it was given: oversubscribed OpenMP threads slow sampling by 10x or more."""
    threads = threads or int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or None
    if threads:
        torch.set_num_threads(int(threads))


def run_shards(work: Sequence[tuple[str, int]], threads: int | None = None, progress: bool = True,
               on_example: Callable[[int, int], None] | None = None) -> list[Path]:
    """Run a list of (config_dir, shard index) in this process, reading each config's plan and loading its
    context once."""
    from audiocert.progress import progress as progress_bar

    set_threads(threads)
    configs: dict[str, ConfigWork] = {}
    written = []
    for config_dir, index in progress_bar(work, desc="shards", unit="shard", disable=not progress):
        config = configs.get(str(config_dir)) or configs.setdefault(str(config_dir), ConfigWork(config_dir))
        if not config.done(index):
            written.append(config.run(index, on_example))
    return written


# ----------------------------------------------------------------------------------------------------------
# Inventory, merging and rounds
# ----------------------------------------------------------------------------------------------------------
SHARD_NAME = re.compile(r"^(?P<hash>[0-9a-f]+)-(?P<index>\d+)\.json$")


class CountsAccumulator:
    """Sums the counts of validated shard records per point and phase as they are read, so a config's files are
    read once and never all held in memory; :meth:`result` checks that the ranges of every (point, phase) tile
    [0, total) with no gap and no overlap (nothing counted twice, whatever was requeued)."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        num_examples, classes = len(plan["examples"]), int(plan["config"]["dataset"]["num_classes"])
        self.classes = classes
        # int32 holds any count a plan can ask for (at most n per point); half the memory of int64 at 921 classes.
        wide = max(int(plan["quantities"]["n0"]), int(plan["quantities"]["n"])) >= 2**31
        self.totals = {phase: np.zeros((num_examples, classes), dtype=np.int64 if wide else np.int32)
                       for phase in COUNTED_PHASES}
        self.seconds = np.zeros(num_examples)
        self.labels = np.asarray([i["label"] for i in plan["inputs"]])  # every record's labels were checked
        self.norms, self.waveform_norms = np.zeros(num_examples), np.zeros(num_examples)
        self.covered: dict[str, list[tuple[np.ndarray, int, int]]] = {phase: [] for phase in COUNTED_PHASES}

    def add(self, record: Mapping[str, Any], counts: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Add one record; ``counts``: phase -> (rows, classes, counts), rows relative to its examples."""
        examples = np.asarray(record["examples"], dtype=np.int64)
        for phase, (lo, hi) in record["ranges"].items():
            rows, classes, values = counts[phase]
            # (row, class) pairs are distinct within a record (validated) and a shard's examples are distinct
            # (check_shard_list), so plain fancy-index addition adds each count once (np.add.at is 10x slower).
            self.totals[phase][examples[rows], classes] += values.astype(self.totals[phase].dtype)
            self.covered[phase].append((examples, int(lo), int(hi)))
        self.seconds[examples] += record["elapsed_s"] / len(examples)  # a shard's time, shared among its examples
        self.norms[examples], self.waveform_norms[examples] = record["stage_norms"], record["waveform_norms"]

    def result(self) -> dict[str, Any]:
        for phase, entries in self.covered.items():
            check_tiling(phase, entries)
        return {**self.totals, "seconds": self.seconds, "labels": self.labels, "norms": self.norms,
                "waveform_norms": self.waveform_norms}


def check_tiling(phase: str, entries: Sequence[tuple[np.ndarray, int, int]]) -> None:
    """IncompleteSweepError unless, for every point, the ranges [lo, hi) of ``entries`` (points, lo, hi) sort into
    one prefix [0, total) of its noise stream: each range starts where the one before ended."""
    if not entries:
        return
    points = np.concatenate([e[0] for e in entries])
    lo = np.concatenate([np.full(e[0].size, e[1]) for e in entries])
    hi = np.concatenate([np.full(e[0].size, e[2]) for e in entries])
    order = np.lexsort((hi, lo, points))
    points, lo, hi = points[order], lo[order], hi[order]
    first = np.r_[True, points[1:] != points[:-1]]
    expected_lo = np.where(first, 0, np.r_[0, hi[:-1]])
    bad = np.flatnonzero(lo != expected_lo)
    if bad.size:
        point = int(points[bad[0]])
        ranges = sorted(zip(lo[points == point].tolist(), hi[points == point].tolist(), strict=True))
        kind = "overlapping" if lo[bad[0]] < expected_lo[bad[0]] else "non-contiguous"
        raise IncompleteSweepError(f"{kind} {phase} ranges of point {point}: {ranges}: its counts would not be one "
                                   "prefix of its noise stream")


def merge_counts(plan: Mapping[str, Any], records: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the counts of records whose counts are dense rows (phase -> one list of class counts per example), after
    checking that the ranges tile (see :class:`CountsAccumulator`). Also per-point compute time, label and norms."""
    accumulator = CountsAccumulator(plan)
    for record in records.values():
        counts = {}
        for phase, rows in record["counts"].items():
            dense = np.asarray(rows, dtype=np.int64).reshape(len(record["examples"]), -1)
            r, c = np.nonzero(dense)
            counts[phase] = (r, c, dense[r, c])
        accumulator.add(record, counts)
    return accumulator.result()


@dataclass
class ShardInventory:
    shards: list[Shard]  # every shard of the rounds planned so far
    records: dict[int, dict[str, Any]]  # index -> summary of its valid file (see shard_summary)
    missing: list[int]
    duplicated: dict[int, list[Path]]
    invalid: dict[Path, str]
    merged: dict[str, Any] | None = None  # the summed counts (inventory(merge=True)), see CountsAccumulator

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


def inventory(config_dir: str | Path, plan: Mapping[str, Any] | None = None, merge: bool = False) -> ShardInventory:
    """Classify every file under shards/ against the rounds planned so far: valid (once), duplicated, invalid,
    missing. ``merge``: also sum the counts of the valid files under their own names, reading each file once
    (``.merged``); without it, files already validated by this process are not read again."""
    config_dir = Path(config_dir)
    plan = plan or read_plan(config_dir)
    shards = known_shards(config_dir, plan)
    accumulator = kind_of(plan).accumulator(plan) if merge else None
    found: dict[int, list[tuple[Path, dict[str, Any]]]] = {}
    invalid: dict[Path, str] = {}
    shard_dir = config_dir / SHARD_DIR
    paths = sorted(shard_dir.glob("*.json")) if shard_dir.is_dir() else []
    key = _layout_key(plan, shards)
    cacheable = isinstance(shards, Layout)
    if accumulator is None and paths and cacheable:
        _load_summaries(config_dir, key)
    known = sum(1 for p in paths if (c := _VALIDATED.get(str(p))) and c[1] == key)
    for path in paths:
        if accumulator is None:
            summary, why = validated_summary(path, plan, shards)
            counts = None
        else:
            signature = _signature(path)
            record, why, counts = _read_shard(path, plan, shards)
            summary = shard_summary(record, path) if record is not None else None
            if signature is not None and cacheable:  # what a later status needs, without the counts
                _VALIDATED[str(path)] = (signature, key, summary, why)
        if summary is None:
            invalid[path] = why
            continue
        found.setdefault(summary["index"], []).append((path, summary))
        match = SHARD_NAME.match(path.name)
        if accumulator is not None and match and match["hash"] == plan["config_hash"] and int(
                match["index"]) == summary["index"]:
            accumulator.add(record, counts)  # only a file under its own name: a stray copy is never counted
    if cacheable and paths and sum(1 for p in paths if (c := _VALIDATED.get(str(p))) and c[1] == key) \
            > known + 100:  # worth saving: a later status then reads no file it has seen
        _save_summaries(config_dir, key, paths)
    duplicated = {i: [p for p, _ in entries] for i, entries in found.items() if len(entries) > 1}
    records = {}
    for index, entries in found.items():
        if len(entries) != 1:
            continue
        path, summary = entries[0]
        match = SHARD_NAME.match(path.name)
        if match and match["hash"] == plan["config_hash"] and int(match["index"]) == index:
            records[index] = summary
        else:  # a valid shard under a name that is not its own: a stray copy
            invalid[path] = f"counts of shard {index} under a name that is not its own"
    missing = [s.index for s in shards if s.index not in records and s.index not in duplicated]
    found_inventory = ShardInventory(shards, records, missing, duplicated, invalid)
    if accumulator is not None and not (missing or duplicated):
        found_inventory.merged = accumulator.result()
    return found_inventory


def next_work(config_dir: str | Path, plan: Mapping[str, Any], found: ShardInventory | None = None) -> list[int]:
    """Indices of the shards to run now: the missing shards of the rounds planned so far or, when those are all
    done, the shards of the next round (planned from the merged counts and written to rounds/). Empty when
    every point is settled: the config is ready to reduce. ``found``: an inventory with merged counts already
    taken (inventory(merge=True)), so a caller that reduces next reads the files once.

    A round's file is written once; a rerun after a kill finds it and runs what is missing of it, so no
    round is planned twice and no sample range is drawn twice.
    """
    config_dir = Path(config_dir)
    found = found if found is not None and (found.merged is not None or found.missing or found.duplicated) \
        else inventory(config_dir, plan, merge=True)
    if found.missing or found.duplicated:
        return found.missing
    last_round = max(s.round for s in found.shards)
    shards = kind_of(plan).next_shards(plan, found.merged, found.shards)
    if not shards:
        return []
    atomic_write_json(round_path(config_dir, last_round + 1), seal({
        "config_hash": plan["config_hash"], "code_version": plan["code_version"], "round": last_round + 1,
        "planned_at": time.time(),
        "shards": [s.to_json() for s in shards]}))
    log.info("%s: round %d asks %d point(s) for more samples (%d shard(s))", plan["label"], last_round + 1,
             len({e for s in shards for e in s.examples}), len(shards))
    return [s.index for s in shards]


def settled(plan: Mapping[str, Any], merged: Mapping[str, np.ndarray]) -> bool:
    """True when the algorithm asks no point for more samples (the config can be reduced)."""
    target_s, target_e = make_algorithm(plan["quantities"]).targets_many(merged["selection"], merged["estimation"])
    return bool(np.array_equal(target_s, merged["selection"].sum(axis=1))
                and np.array_equal(target_e, merged["estimation"].sum(axis=1)))


class CertifyKind(WorkKind):
    """Certification: class counts of f under noise, per point and phase; rounds as the algorithm asks."""

    name = "certify"
    range_keys = COUNTED_PHASES
    payload_keys = ("counts", "stage_norms", "waveform_norms")

    def check_plan(self, plan: Mapping[str, Any]) -> None:
        check_plan_consistency(plan)
        int(plan["quantities"]["n0"]), int(plan["quantities"]["n"])
        make_algorithm(plan["quantities"])

    @staticmethod
    def payload(counts: Mapping[str, np.ndarray], stage_norms: Sequence[float],
                waveform_norms: Sequence[float]) -> dict[str, Any]:
        return {"stage_norms": [float(v) for v in stage_norms], "waveform_norms": [float(v) for v in waveform_norms],
                "counts": {phase: sparse_counts(np.asarray(c, dtype=np.int64)) for phase, c in counts.items()}}

    def run(self, work: ConfigWork, shard: Shard, on_example: Callable[[int, int], None] | None) -> dict[str, Any]:
        context = work.context
        counts: dict[str, list[np.ndarray]] = {phase: [] for phase in shard.ranges}
        stage_norms, waveform_norms = [], []
        for done, position in enumerate(shard.examples, start=1):
            waveform, x_stage, planned = context.example(position)
            for phase, (lo, hi) in shard.ranges.items():
                counts[phase].append(context.smooth.counts(x_stage, phase, lo, hi, context.batch_size,
                                                           example=planned["index"]))
            stage_norms.append(float(torch.linalg.vector_norm(x_stage.double())))
            waveform_norms.append(float(torch.linalg.vector_norm(waveform.double())))
            if on_example is not None:
                on_example(done, len(shard.examples))
        return self.payload({p: np.stack(c) for p, c in counts.items()}, stage_norms, waveform_norms)

    def check_payload(self, record: Mapping[str, Any], plan: Mapping[str, Any], shard: Shard,
                      inputs: Sequence[Mapping[str, Any]]) -> tuple[str, Any]:
        for key in ("stage_norms", "waveform_norms"):
            if not _finite_numbers(record.get(key)) or len(record[key]) != len(inputs):
                return f"{key} are not one finite non-negative number per example", {}
        classes = int(plan["config"]["dataset"]["num_classes"])
        width = {phase: hi - lo for phase, (lo, hi) in shard.ranges.items()}
        counted = record.get("counts")
        if not isinstance(counted, dict) or set(counted) != set(width):
            return f"counts are not one table per phase of {sorted(width)}", {}
        decoded = {}
        for phase in width:
            try:
                decoded[phase] = decode_counts(counted[phase], len(inputs), classes, width[phase])
            except ValueError as error:
                return f"{phase} counts are not {len(inputs)} x {classes} non-negative integers ({error})", {}
        return "", decoded

    def accumulator(self, plan: Mapping[str, Any]) -> CountsAccumulator:
        return CountsAccumulator(plan)

    def next_shards(self, plan: Mapping[str, Any], merged: Mapping[str, Any], shards: Sequence[Shard]) -> list[Shard]:
        return round_shards(make_algorithm(plan["quantities"]), merged["selection"], merged["estimation"],
                            int(plan["quantities"]["shard"]["examples"]), int(plan["quantities"]["shard"]["samples"]),
                            first_index=len(shards), round=max(s.round for s in shards) + 1)


CERTIFY = register_kind(CertifyKind())
