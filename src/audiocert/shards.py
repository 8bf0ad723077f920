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

import hashlib
import json
import logging
import math
import os
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from audiocert.checkpoint import LoadedClassifier, load_checkpoint
from audiocert.data import CropDataset, build_datasets
from audiocert.devices import resolve_device
from audiocert.frontend import check_stage
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

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
SHARD_DIR = "shards"
SHARD_FORMAT = 2  # 2: input digests, device type, labels and waveform norms checked against the plan


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
    shards = make_shards(len(examples), int(cfg.certify.n0), int(cfg.certify.n),
                         int(cfg.certify.shard.examples), int(cfg.certify.shard.samples))
    plan = {
        "config_hash": config_hash, "code_version": code_version(), "label": config_label(cfg),
        "config": resolved, "quantities": quantities,
        "checkpoint": str(checkpoint.resolve()), "examples": examples, "inputs": inputs,
        "inputs_digest": stable_hash([i["digest"] for i in inputs]),
        "shards": [asdict(s) for s in shards],
    }
    return plan


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
        assert all(type(s["index"]) is int and s["index"] == k for k, s in enumerate(plan["shards"]))
        assert all(0 <= e < len(examples) for s in plan["shards"] for e in s["examples"])
        int(plan["config"]["dataset"]["num_classes"]), int(plan["quantities"]["n0"]), int(plan["quantities"]["n"])
    except (AssertionError, KeyError, TypeError, ValueError) as error:
        raise CorruptFileError(f"{path} is not a valid plan ({error.__class__.__name__}: {error}): "
                               f"{PLAN_RECOVERY}") from None
    return plan


def write_plan(plan: dict[str, Any], config_dir: str | Path) -> dict[str, Any]:
    """Write plan.json. An existing plan with the same config hash, inputs and code version is kept (a rerun
    resumes); a different config, or the same config over changed audio, is an error naming the directory,
    so counts of two configs or of two versions of the test audio never mix. A damaged plan is rewritten.
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


def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is an int subclass: a count of True is no count


def _finite_numbers(values: Any, minimum: float = 0.0) -> bool:
    return isinstance(values, list) and all(
        type(v) in (int, float) and math.isfinite(v) and v >= minimum for v in values)


def validate_shard_file(path: Path, plan: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
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
    if not _is_int(index) or not 0 <= index < len(plan["shards"]):
        return None, f"shard index {index!r} not in the plan"
    expected = plan["shards"][index]
    for key in ("examples", "selection", "estimation"):
        if record.get(key) != list(expected[key]):
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
    width = {"selection": expected["selection"][1] - expected["selection"][0],
             "estimation": expected["estimation"][1] - expected["estimation"][0]}
    for phase in ("selection", "estimation"):
        counts = record.get(f"{phase}_counts")
        rows_ok = isinstance(counts, list) and len(counts) == len(inputs) and all(
            isinstance(row, list) and len(row) == classes and all(_is_int(c) and c >= 0 for c in row)
            for row in counts)
        if not rows_ok:
            return None, f"{phase} counts are not {len(inputs)} x {classes} non-negative integers"
        if any(sum(row) != width[phase] for row in counts):
            return None, f"{phase} counts do not add up to the shard's {width[phase]} samples"
    if record.get("samples") != len(inputs) * (width["selection"] + width["estimation"]):
        return None, f"samples={record.get('samples')!r} does not match the shard's coverage"
    if not _finite_numbers([record.get("elapsed_s"), record.get("finished_at")]):
        return None, "elapsed_s / finished_at are not finite non-negative numbers"
    if not isinstance(record.get("host"), str):
        return None, "host is missing"
    return record, ""


def shard_done(config_dir: str | Path, plan: Mapping[str, Any], index: int) -> bool:
    path = shard_path(config_dir, plan["config_hash"], index)
    return path.is_file() and validate_shard_file(path, plan)[0] is not None


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
    if shard_done(config_dir, plan, index):
        return path
    context = context or shard_context(config_dir, plan)
    shard = plan_shards(plan)[index]
    started = time.monotonic()
    selection, estimation, stage_norms, waveform_norms, inputs = [], [], [], [], []
    for position in shard.examples:
        waveform, x_stage, planned = context.example(position)
        selection.append(context.smooth.counts(x_stage, "selection", *shard.selection, context.batch_size,
                                               example=planned["index"]).tolist())
        estimation.append(context.smooth.counts(x_stage, "estimation", *shard.estimation, context.batch_size,
                                                example=planned["index"]).tolist())
        stage_norms.append(float(torch.linalg.vector_norm(x_stage.double())))
        waveform_norms.append(float(torch.linalg.vector_norm(waveform.double())))
        inputs.append(planned)
        if on_example is not None:
            on_example(len(inputs), len(shard.examples))
    elapsed = time.monotonic() - started
    record = {
        "format": SHARD_FORMAT, "config_hash": plan["config_hash"], "code_version": code_version(),
        "index": index, "examples": list(shard.examples), "selection": list(shard.selection),
        "estimation": list(shard.estimation), "dataset_indices": [i["index"] for i in inputs],
        "labels": [i["label"] for i in inputs], "input_digests": [i["digest"] for i in inputs],
        "stage_norms": stage_norms, "waveform_norms": waveform_norms,
        "selection_counts": selection, "estimation_counts": estimation,
        "seed": int(plan["config"]["seed"]), "samples": shard.samples, "elapsed_s": elapsed,
        "device": str(context.device), "device_type": context.device.type, "host": socket.gethostname(),
        "finished_at": time.time(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_task": slurm_task_id(),
        "restart_count": os.environ.get("SLURM_RESTART_COUNT"),
    }
    return atomic_write_json(path, record)


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
        if shard_done(config_dir, plan, index):
            continue
        written.append(run_shard(config_dir, plan, index, shard_context(config_dir, plan), on_example))
    return written
