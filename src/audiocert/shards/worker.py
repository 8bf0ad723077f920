"""The shard worker: a config's classifier and points loaded once per process, and shards run and written.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from audiocert.checkpoint import LoadedClassifier, load_checkpoint, load_external
from audiocert.data import CropDataset, build_datasets
from audiocert.devices import resolve_device
from audiocert.external import is_external
from audiocert.provenance import (
    atomic_write_sealed,
    code_version,
    file_digest,
    seal,
)
from audiocert.sampler import Smooth, StagedClassifier
from audiocert.shards.kind import kind_of
from audiocert.shards.layout import SHARD_FORMAT, Shard, shard_path
from audiocert.shards.plans import known_shards, read_plan
from audiocert.shards.records import check_shard_record, shard_done


def waveform_digest(waveform: torch.Tensor) -> str:
    """Fingerprint of one certified input: SHA-256 of its float32 samples (what the counts were computed on)."""
    data = waveform.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def load_certified_setup(config: Mapping[str, Any], checkpoint: str | Path,
                         device: torch.device | str = "cpu") -> tuple[LoadedClassifier, CropDataset]:
    """The base classifier and the test set of a config, checked against each other; errors name the file."""
    if is_external(config.get("model")):
        test = build_datasets(config["dataset"]).test
        loaded = load_external(checkpoint, config["model"], config.get("frontend"), test.class_names, device)
    else:
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
        "format": SHARD_FORMAT, "kind": plan["kind"], "config_hash": plan["config_hash"],
        "code_version": code_version(), **shard.to_json(), "dataset_indices": [i["index"] for i in inputs],
        "labels": [i["label"] for i in inputs], "input_digests": [i["digest"] for i in inputs],
        "seed": int(plan["config"]["seed"]), "samples": shard.samples, "elapsed_s": float(elapsed),
        "device": str(device), "device_type": device.type, "host": socket.gethostname(),
        "finished_at": time.time(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_task": slurm_task_id(),
        "restart_count": os.environ.get("SLURM_RESTART_COUNT"),
    }


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
