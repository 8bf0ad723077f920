"""Progress of a sweep read from its files: shards done (validated counts files), throughput, ETA, failures.

Completion is never taken from the scheduler (sacct may be absent): a shard is done when its counts file
validates; a failed shard is one whose worker recorded a failure under failures/ (with its log path).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from audiocert.provenance import read_json
from audiocert.reducer import inventory
from audiocert.shards import PLAN_FILE


def config_dirs(directory: str | Path) -> list[Path]:
    """The config directories of a sweep directory (or the directory itself if it is one)."""
    directory = Path(directory)
    if (directory / PLAN_FILE).is_file():
        return [directory]
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist: pass a sweep directory such as runs/sweeps/NAME")
    found = sorted(p.parent for p in directory.glob(f"*/{PLAN_FILE}"))
    if not found:
        raise FileNotFoundError(f"{directory} holds no config directories (no */{PLAN_FILE}): is it a sweep?")
    return found


def config_status(config_dir: Path) -> dict[str, Any]:
    plan = read_json(config_dir / PLAN_FILE)
    found = inventory(config_dir, plan)
    records = list(found.records.values())
    total = len(plan["shards"])
    samples_total = sum(
        len(s["examples"]) * ((s["selection"][1] - s["selection"][0]) + (s["estimation"][1] - s["estimation"][0]))
        for s in plan["shards"])
    samples_done = sum(r["samples"] for r in records)
    busy = sum(r["elapsed_s"] for r in records)
    if records:
        first = min(r["finished_at"] - r["elapsed_s"] for r in records)
        wall = max(max(r["finished_at"] for r in records) - first, 1e-9)
    else:
        wall = 0.0
    rate = samples_done / wall if wall else 0.0
    failures = []
    for path in sorted((config_dir / "failures").glob("*.json")):
        failure = read_json(path)
        if failure["shard"] not in found.records:
            failures.append(failure)
    eta = (samples_total - samples_done) / rate if rate and samples_done < samples_total else 0.0
    return {
        "label": plan["label"], "config_dir": str(config_dir), "done": len(records), "total": total,
        "samples_done": samples_done, "samples_total": samples_total, "samples_per_s": rate,
        "samples_per_busy_s": samples_done / busy if busy else 0.0, "eta_s": eta,
        "failed": failures, "invalid": {str(k): v for k, v in found.invalid.items()},
        "duplicated": {str(k): [str(p) for p in v] for k, v in found.duplicated.items()},
        "reduced": (config_dir / "certificates.tsv").is_file(),
    }


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def format_status(directory: str | Path) -> str:
    rows = [config_status(d) for d in config_dirs(directory)]
    width = max(len(r["label"]) for r in rows)
    lines = [f"{'config':<{width}}  {'shards':>11}  {'samples/s':>10}  {'ETA':>7}  state"]
    for r in rows:
        state = "reduced" if r["reduced"] else ("complete" if r["done"] == r["total"] else "running")
        if r["failed"]:
            state = f"{len(r['failed'])} failed"
        eta = format_duration(r["eta_s"]) if r["eta_s"] else "-"
        lines.append(f"{r['label']:<{width}}  {r['done']:>5}/{r['total']:<5}  {r['samples_per_s']:>10.1f}  "
                     f"{eta:>7}  {state}")
        for failure in r["failed"]:
            lines.append(f"    shard {failure['shard']} failed: {failure['error']} (log: {failure['log']})")
        for path, why in r["invalid"].items():
            lines.append(f"    invalid file {path}: {why}")
        for index, paths in r["duplicated"].items():
            lines.append(f"    shard {index} duplicated: {', '.join(paths)}")
    done = sum(r["done"] for r in rows)
    total = sum(r["total"] for r in rows)
    lines.append(f"{len(rows)} config(s), {done}/{total} shards done, "
                 f"{sum(r['reduced'] for r in rows)} reduced")
    return "\n".join(lines)


def print_status(directory: str | Path, watch: float = 0) -> None:
    while True:
        text = format_status(directory)
        print(text, flush=True)
        rows = [config_status(d) for d in config_dirs(directory)]
        if not watch or all(r["reduced"] or r["failed"] for r in rows):
            return
        time.sleep(watch)
        print()


def slurm_jobs_alive(job_ids: list[str]) -> bool:
    """Whether any of these SLURM jobs is still queued or running (squeue; sacct is not needed)."""
    if not job_ids:
        return False
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True,
                         timeout=60)
    return bool(out.stdout.strip())


def wait_for_configs(dirs: list[Path], poll_s: float = 2.0, timeout_s: float | None = None) -> bool:
    """Block until every config is reduced, or until none of its SLURM jobs is left (True if all reduced)."""
    from tqdm import tqdm

    started = time.monotonic()
    total = sum(len(read_json(d / PLAN_FILE)["shards"]) for d in dirs)
    with tqdm(total=total, desc="shards done", dynamic_ncols=True) as bar:
        while True:
            rows = [config_status(d) for d in dirs]
            bar.update(sum(r["done"] for r in rows) - bar.n)
            if all(r["reduced"] for r in rows):
                return True
            jobs = []
            for d in dirs:
                record = read_json(d / "jobs.json") if (d / "jobs.json").is_file() else {}
                jobs += list(record.get("arrays", [])) + ([record["reducer"]] if record.get("reducer") else [])
            if not slurm_jobs_alive(jobs):
                time.sleep(poll_s)  # the reducer may have just written its files
                return all(config_status(d)["reduced"] for d in dirs)
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                return False
            time.sleep(poll_s)
