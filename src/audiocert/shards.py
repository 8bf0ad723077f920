"""The plan of a certification config and the shard worker.

A config (dataset x representation x sigma x sample counts x seed x checkpoint) certifies P test points
with n0 selection and n estimation samples each. Its plan cuts that into shards: blocks of ``shard.examples``
points times chunks of ``shard.samples`` sample indices; chunk j covers selection samples
[j S, min((j + 1) S, n0)) and estimation samples [j S, min((j + 1) S, n)). Every shard writes one counts file,
``shards/<config_hash>-<index>.json``, atomically; a shard is done when that file exists and validates, never
because a scheduler says so. Noise streams depend only on (seed, example, phase, sample index) (see
``audiocert.sampler``), so the counts, and hence the certificates, do not depend on how the work is cut.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from audiocert.checkpoint import load_checkpoint
from audiocert.data import build_datasets
from audiocert.devices import resolve_device
from audiocert.frontend import check_stage
from audiocert.provenance import atomic_write_json, code_version, file_digest, read_json, stable_hash
from audiocert.sampler import Smooth, StagedClassifier

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
SHARD_DIR = "shards"
SHARD_FORMAT = 1


@dataclass(frozen=True)
class Shard:
    index: int
    examples: tuple[int, ...]  # positions into the plan's example list
    selection: tuple[int, int]  # sample range [lo, hi) of the selection phase (may be empty)
    estimation: tuple[int, int]  # sample range [lo, hi) of the estimation phase (may be empty)

    @property
    def samples(self) -> int:
        width = (self.selection[1] - self.selection[0]) + (self.estimation[1] - self.estimation[0])
        return len(self.examples) * width


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
    check_stage(cfg.representation.stage)
    if int(c.points_per_speaker) > int(cfg.dataset.test_crops_per_speaker):
        raise ValueError(
            f"certify.points_per_speaker={c.points_per_speaker} exceeds "
            f"dataset.test_crops_per_speaker={cfg.dataset.test_crops_per_speaker}"
        )


def select_examples(num_speakers: int, crops_per_speaker: int, points_per_speaker: int) -> list[int]:
    """Test-set indices to certify: ``points_per_speaker`` evenly spread over each speaker's test crops.

    The test set is speaker-major (crop i belongs to speaker i // crops_per_speaker).
    """
    offsets = np.linspace(0, crops_per_speaker, points_per_speaker, endpoint=False).astype(int)
    return [s * crops_per_speaker + int(o) for s in range(num_speakers) for o in offsets]


def make_shards(num_examples: int, n0: int, n: int, examples_per_shard: int, samples_per_shard: int) -> list[Shard]:
    shards = []
    chunks = math.ceil(max(n0, n) / samples_per_shard)
    for first in range(0, num_examples, examples_per_shard):
        examples = tuple(range(first, min(first + examples_per_shard, num_examples)))
        for j in range(chunks):
            lo = j * samples_per_shard
            selection = (min(lo, n0), min(lo + samples_per_shard, n0))
            estimation = (min(lo, n), min(lo + samples_per_shard, n))
            shards.append(Shard(len(shards), examples, selection, estimation))
    return shards


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
        "points_per_speaker": int(resolved["certify"]["points_per_speaker"]),
        "block_size": int(resolved["certify"]["block_size"]),
        "bf16": bool(resolved["certify"].get("bf16", False)),  # bf16 autocast is part of the base classifier f
        "shard": resolved["certify"]["shard"],
        "seed": int(resolved["seed"]),
    }


def make_plan(cfg: DictConfig) -> dict[str, Any]:
    """Plan a config: resolve it, fingerprint its checkpoint, and list its shards."""
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
    num_speakers = int(cfg.dataset.num_classes)
    examples = select_examples(num_speakers, int(cfg.dataset.test_crops_per_speaker),
                               int(cfg.certify.points_per_speaker))
    shards = make_shards(len(examples), int(cfg.certify.n0), int(cfg.certify.n),
                         int(cfg.certify.shard.examples), int(cfg.certify.shard.samples))
    plan = {
        "config_hash": config_hash, "code_version": code_version(), "label": config_label(cfg),
        "config": OmegaConf.to_container(cfg, resolve=True), "quantities": quantities,
        "checkpoint": str(checkpoint.resolve()), "examples": examples,
        "shards": [asdict(s) for s in shards],
    }
    return plan


def write_plan(plan: dict[str, Any], config_dir: str | Path) -> dict[str, Any]:
    """Write plan.json. An existing plan with the same config hash and code version is kept (a rerun
    resumes); a different config is an error naming the directory, so results of two configs never mix.
    """
    config_hash = plan["config_hash"]
    config_dir = Path(config_dir)
    path = config_dir / PLAN_FILE
    if path.is_file():
        existing = read_json(path)
        if existing.get("config_hash") != config_hash:
            raise ValueError(
                f"{config_dir} already holds config {existing.get('config_hash')} ({existing.get('label')}); "
                f"this config hashes to {config_hash}: use another sweep.name or remove that directory"
            )
        if existing.get("code_version") == plan["code_version"]:
            return existing
        log.warning("code version changed (%s -> %s): shards of the old version will be recomputed",
                    existing.get("code_version"), plan["code_version"])
    atomic_write_json(path, plan)
    return plan


def config_label(cfg: DictConfig) -> str:
    return f"{cfg.dataset.name}-{cfg.representation.stage}-sigma{float(cfg.smoothing.sigma):g}"


def shard_path(config_dir: str | Path, config_hash: str, index: int) -> Path:
    return Path(config_dir) / SHARD_DIR / f"{config_hash}-{index:05d}.json"


def plan_shards(plan: Mapping[str, Any]) -> list[Shard]:
    return [Shard(s["index"], tuple(s["examples"]), tuple(s["selection"]), tuple(s["estimation"]))
            for s in plan["shards"]]


def validate_shard_file(path: Path, plan: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(record, '') when ``path`` is a complete counts file of this plan, else (None, why not)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"unreadable ({error.__class__.__name__})"
    if not isinstance(record, dict) or record.get("format") != SHARD_FORMAT:
        return None, "not an audiocert shard file"
    if record.get("config_hash") != plan["config_hash"]:
        return None, f"foreign config {record.get('config_hash')}"
    if record.get("code_version") != plan["code_version"]:
        return None, f"code version {record.get('code_version')} != plan's {plan['code_version']}"
    index = record.get("index")
    if not isinstance(index, int) or not 0 <= index < len(plan["shards"]):
        return None, f"shard index {index!r} not in the plan"
    expected = plan["shards"][index]
    for key in ("examples", "selection", "estimation"):
        if list(record.get(key, [])) != list(expected[key]):
            return None, f"covers {key}={record.get(key)}, plan says {expected[key]}"
    classes = int(plan["config"]["dataset"]["num_classes"])
    width = {"selection": expected["selection"][1] - expected["selection"][0],
             "estimation": expected["estimation"][1] - expected["estimation"][0]}
    for key in ("labels", "stage_norms", "dataset_indices"):
        if not isinstance(record.get(key), list) or len(record[key]) != len(expected["examples"]):
            return None, f"{key} does not have one entry per example"
    for phase in ("selection", "estimation"):
        counts = np.asarray(record.get(f"{phase}_counts"))
        if counts.dtype.kind not in "iu" or (counts < 0).any():
            return None, f"{phase} counts are not non-negative integers"
        if counts.shape != (len(expected["examples"]), classes) or (counts.sum(axis=1) != width[phase]).any():
            return None, f"{phase} counts do not add up to the shard's samples"
    return record, ""


def shard_done(config_dir: str | Path, plan: Mapping[str, Any], index: int) -> bool:
    path = shard_path(config_dir, plan["config_hash"], index)
    return path.is_file() and validate_shard_file(path, plan)[0] is not None


class ShardContext:
    """What every shard of a config needs, loaded once per process: classifier, test examples, smoother."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        cfg = OmegaConf.create(plan["config"])
        self.device = resolve_device(cfg.device)
        if not Path(plan["checkpoint"]).is_file():
            raise FileNotFoundError(f"checkpoint {plan['checkpoint']} of this sweep no longer exists")
        if file_digest(plan["checkpoint"]) != plan["quantities"]["checkpoint_digest"]:
            raise ValueError(f"checkpoint {plan['checkpoint']} changed since the sweep was planned: "
                             "plan a new sweep (another sweep.name) for the new checkpoint")
        loaded = load_checkpoint(plan["checkpoint"], self.device)
        self.test = build_datasets(cfg.dataset).test
        planned_frontend = plan["config"].get("frontend") or {}
        if loaded.config.get("frontend") and dict(loaded.config["frontend"]) != dict(planned_frontend):
            raise ValueError(f"checkpoint {plan['checkpoint']} was trained with frontend {loaded.config['frontend']}, "
                             f"but this config asks for {planned_frontend}: the certificate would describe the "
                             "wrong frontend")
        if loaded.speakers and list(loaded.speakers) != list(self.test.speakers):
            raise ValueError(f"checkpoint {plan['checkpoint']} was trained on speakers {loaded.speakers[:10]}..., "
                             f"but dataset {cfg.dataset.name} has {self.test.speakers[:10]}...: labels would not "
                             "match; certify it with the dataset it was trained on")
        self.staged = StagedClassifier(loaded.frontend, cfg.representation.stage, loaded.model).eval()
        self.smooth = Smooth(self.staged, int(cfg.dataset.num_classes), float(cfg.smoothing.sigma),
                             seed=int(cfg.seed), block_size=int(cfg.certify.block_size),
                             autocast_bf16=bool(cfg.certify.get("bf16", False)) and self.device.type == "cuda")
        self.batch_size = int(cfg.certify.batch_size)

    def example(self, dataset_index: int) -> tuple[torch.Tensor, int]:
        waveform, label = self.test[dataset_index]
        with torch.inference_mode():
            x_stage = self.staged.clean(waveform.to(self.device)[None])[0]
        return x_stage, int(label)


def run_shard(config_dir: str | Path, plan: Mapping[str, Any], index: int,
              context: ShardContext | None = None) -> Path:
    """Compute one shard's counts and write them atomically; a shard already done is left alone."""
    path = shard_path(config_dir, plan["config_hash"], index)
    if shard_done(config_dir, plan, index):
        return path
    context = context or ShardContext(plan)
    shard = plan_shards(plan)[index]
    started = time.monotonic()
    selection, estimation, labels, norms, dataset_indices = [], [], [], [], []
    for position in shard.examples:
        dataset_index = int(plan["examples"][position])
        x_stage, label = context.example(dataset_index)
        selection.append(context.smooth.counts(x_stage, "selection", *shard.selection, context.batch_size,
                                               example=dataset_index).tolist())
        estimation.append(context.smooth.counts(x_stage, "estimation", *shard.estimation, context.batch_size,
                                                example=dataset_index).tolist())
        labels.append(label)
        norms.append(float(torch.linalg.vector_norm(x_stage.double())))
        dataset_indices.append(dataset_index)
    elapsed = time.monotonic() - started
    record = {
        "format": SHARD_FORMAT, "config_hash": plan["config_hash"], "code_version": code_version(),
        "index": index, "examples": list(shard.examples), "selection": list(shard.selection),
        "estimation": list(shard.estimation), "dataset_indices": dataset_indices, "labels": labels,
        "stage_norms": norms, "selection_counts": selection, "estimation_counts": estimation,
        "seed": int(plan["config"]["seed"]), "samples": shard.samples, "elapsed_s": elapsed,
        "device": str(context.device), "host": socket.gethostname(), "finished_at": time.time(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_task": slurm_task_id(),
        "restart_count": os.environ.get("SLURM_RESTART_COUNT"),
    }
    return atomic_write_json(path, record)


def slurm_task_id() -> str | None:
    """The SLURM job running this process as squeue and submitit name it: '123_4' for an array task."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def run_shards(work: Sequence[tuple[str, int]], threads: int | None = None, progress: bool = True) -> list[Path]:
    """Run a list of (config_dir, shard index) in this process, loading each config's context once."""
    from tqdm import tqdm

    # Inside a SLURM job use the CPUs it was given: oversubscribed OpenMP threads slow sampling by 10x or more.
    threads = threads or int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or None
    if threads:
        torch.set_num_threads(int(threads))
    plans: dict[str, dict[str, Any]] = {}
    contexts: dict[str, ShardContext] = {}
    written = []
    for config_dir, index in tqdm(work, desc="shards", disable=not progress, dynamic_ncols=True):
        plan = plans.setdefault(config_dir, read_json(Path(config_dir) / PLAN_FILE))
        if shard_done(config_dir, plan, index):
            continue
        if config_dir not in contexts:
            contexts[config_dir] = ShardContext(plan)
        written.append(run_shard(config_dir, plan, index, contexts[config_dir]))
    return written
