"""Shard records: compact, sparse, sealed; validated once per file and summarised for status and merging.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiocert.provenance import (
    SEAL_KEY,
    CorruptFileError,
    atomic_write_json,
    check_sealed_bytes,
    read_json,
    seal,
    seal_problem,
)
from audiocert.shards.kind import kind_of
from audiocert.shards.layout import SHARD_DIR, SHARD_FORMAT, Shard, is_int, shard_path
from audiocert.shards.plans import Layout


def finite_numbers(values: Any, minimum: float = 0.0) -> bool:
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
    if record.get("kind") != plan["kind"]:
        return f"a {record.get('kind')} record, the plan is a {plan['kind']} plan", {}
    if record.get("code_version") != plan["code_version"]:
        return f"code version {record.get('code_version')} != plan's {plan['code_version']}", {}
    device_type = plan["quantities"].get("device_type")
    if record.get("device_type") != device_type:
        return f"computed on device type {record.get('device_type')!r}, plan says {device_type!r}", {}
    if record.get("seed") != plan["quantities"]["seed"]:
        return f"seed {record.get('seed')!r} != plan's {plan['quantities']['seed']}", {}
    index = record.get("index")
    if not is_int(index) or not 0 <= index < len(shards):
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
    if not finite_numbers([record.get("elapsed_s"), record.get("finished_at")]):
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
