"""Planning a certification: the checked settings, the quantities its hash covers, its points and rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from audiocert.algorithms import Algorithm, make_algorithm
from audiocert.devices import resolve_device
from audiocert.external import external_quantities, is_external, sha256_of
from audiocert.provenance import (
    code_version,
    file_digest,
    stable_hash,
)
from audiocert.schemas import check_config
from audiocert.settings import require
from audiocert.shards.layout import Shard, cut_shards
from audiocert.shards.worker import load_certified_setup, waveform_digest
from audiocert.statistics import REPORT_RADII

COUNTED_PHASES = ("selection", "estimation")  # the phases CERTIFY counts


def check_certify_config(cfg: DictConfig) -> None:
    """Impossible values fail here, before anything is submitted, naming the field: the config is checked against
    the schema of its command (audiocert.schemas; every number finite and in range: ``smoothing.sigma=inf`` once
    certified every point at radius inf), with the dataset settings it will be certified with."""
    check_config("certify", cfg)


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
        # A user's network: its module path, constructor args, input stage and classes (absent for the ResCNN,
        # whose configs' hashes stay what they were).
        **({"model": external_quantities(resolved["model"])} if is_external(resolved.get("model")) else {}),
    }


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
    if "model" in quantities:  # an external model's weights, by their full SHA-256 (provenance)
        quantities["weights_sha256"] = sha256_of(checkpoint)
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


def check_plan_consistency(plan: Mapping[str, Any]) -> None:
    """ValueError unless the plan's quantities are what its config says (the workers read the config).

    A plan whose config says sigma 0.02 while its quantities (and hash) say 0.25 would count at one sigma and
    certify radii at the other.
    """
    quantities = plan["quantities"]
    expected = certified_quantities(plan["config"], device_type=quantities["device_type"])
    expected["checkpoint_digest"] = quantities.get("checkpoint_digest")
    if "weights_sha256" in quantities:
        expected["weights_sha256"] = quantities["weights_sha256"]
    differ = sorted(k for k in set(expected) | set(quantities) if expected.get(k) != quantities.get(k))
    require(not differ, f"its quantities {differ} differ from what its config says")


def config_label(cfg: DictConfig) -> str:
    return f"{cfg.dataset.name}-{cfg.representation.stage}-sigma{float(cfg.smoothing.sigma):g}"
