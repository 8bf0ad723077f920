"""Progress of a sweep read from its files: shards done (validated counts files), throughput, ETA, failures.

Completion is never taken from the scheduler (sacct may be absent): a shard is done when its counts file
validates; a failed shard is one whose worker recorded a failure under failures/ (with its log path). A
config is "running" only while a process or SLURM job of it is alive (jobs.json says which); a config
whose processes are gone is "stopped", with no ETA: rerunning the command resumes it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from audiocert.provenance import CorruptFileError, read_json
from audiocert.shards import PLAN_FILE, inventory, read_plan

JOBS_FILE = "jobs.json"


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


def process_start_time(pid: int) -> float | None:
    """Start time of a live process in clock ticks since boot (None when gone): tells a pid apart from its reuse."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return float(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0 if not Path("/proc").is_dir() else None


def activity(config_dir: Path) -> str:
    """'alive', 'gone' or 'unknown' for the processes or SLURM jobs that jobs.json says work on this config."""
    path = config_dir / JOBS_FILE
    if not path.is_file():
        return "gone"
    try:
        record = read_json(path)
    except CorruptFileError:
        return "unknown"
    if record.get("executor") == "slurm":
        jobs = list(record.get("arrays", [])) + ([record["reducer"]] if record.get("reducer") else [])
        try:
            return "alive" if slurm_jobs_alive(jobs) else "gone"
        except (OSError, subprocess.SubprocessError):
            return "unknown"
    if record.get("host") != socket.gethostname():
        return "unknown"
    pid, start = record.get("parent_pid"), record.get("parent_start")
    if isinstance(pid, int) and process_start_time(pid) == start and start is not None:
        return "alive"
    return "gone"


def config_status(config_dir: Path) -> dict[str, Any]:
    plan = read_plan(config_dir)
    found = inventory(config_dir, plan)
    records = list(found.records.values())
    total = len(found.shards)  # of the rounds planned so far (a sequential config adds rounds as it goes)
    samples_total = sum(s.samples for s in found.shards)
    rounds = max(s.round for s in found.shards) + 1
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
        try:
            failure = read_json(path)
            if failure["shard"] not in found.records:
                failures.append(failure)
        except (CorruptFileError, KeyError, TypeError):
            failures.append({"shard": path.stem, "error": f"unreadable failure record {path}", "log": None})
    reduced = (config_dir / "certificates.tsv").is_file()
    alive = "gone" if reduced else activity(config_dir)
    eta = (samples_total - samples_done) / rate if alive == "alive" and rate and samples_done < samples_total else 0.0
    logs = {}
    if alive == "gone" and not reduced and (config_dir / JOBS_FILE).is_file():
        try:
            logs = dict(read_json(config_dir / JOBS_FILE).get("logs", {}))
        except CorruptFileError:
            pass
    return {
        "label": plan["label"], "config_dir": str(config_dir), "done": len(records), "total": total,
        "samples_done": samples_done, "samples_total": samples_total, "samples_per_s": rate,
        "samples_per_busy_s": samples_done / busy if busy else 0.0, "eta_s": eta,
        "failed": failures, "invalid": {str(k): v for k, v in found.invalid.items()},
        "duplicated": {str(k): [str(p) for p in v] for k, v in found.duplicated.items()},
        "reduced": reduced, "activity": alive, "logs": logs, "rounds": rounds,
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
        if r["reduced"]:
            state = "reduced"
        elif r["done"] == r["total"] and r["activity"] != "alive":
            state = "planned shards done, not reduced (rerun the command: it plans the next round or reduces)"
        elif r["failed"]:
            state = f"{len(r['failed'])} failed"
        else:
            state = {"alive": "running", "gone": "stopped: no live process or job (rerun the command to resume)",
                     "unknown": "running? (its jobs are on another host or the scheduler does not answer)"
                     }[r["activity"]]
        if r["rounds"] > 1 and not r["reduced"]:
            state += f", round {r['rounds']}"  # a sequential config: the total grows with each round
        eta = format_duration(r["eta_s"]) if r["eta_s"] else "-"
        lines.append(f"{r['label']:<{width}}  {r['done']:>5}/{r['total']:<5}  {r['samples_per_s']:>10.1f}  "
                     f"{eta:>7}  {state}")
        for failure in r["failed"]:
            lines.append(f"    shard {failure['shard']} failed: {failure['error']} (log: {failure['log']})")
        for path, why in r["invalid"].items():
            lines.append(f"    invalid file {path}: {why}")
        for index, paths in r["duplicated"].items():
            lines.append(f"    shard {index} duplicated: {', '.join(paths)}")
        if not r["reduced"] and r["activity"] == "gone" and not r["failed"]:
            for job, log_path in r["logs"].items():
                lines.append(f"    job {job} log: {log_path}")
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
        if not watch or all(r["reduced"] or r["failed"] or r["activity"] != "alive" for r in rows):
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
    def submitted_jobs() -> list[str]:
        jobs = []
        for d in dirs:
            record = read_json(d / JOBS_FILE) if (d / JOBS_FILE).is_file() else {}
            jobs += list(record.get("arrays", [])) + ([record["reducer"]] if record.get("reducer") else [])
        return jobs

    with tqdm(total=0, desc="shards done", dynamic_ncols=True) as bar:
        while True:
            rows = [config_status(d) for d in dirs]
            bar.total = sum(r["total"] for r in rows)  # grows when a sequential config plans another round
            bar.update(sum(r["done"] for r in rows) - bar.n)
            if all(r["reduced"] for r in rows):
                return True
            jobs = submitted_jobs()
            if not slurm_jobs_alive(jobs):
                time.sleep(poll_s)  # the reducer may have just written its files, or submitted the next round
                if submitted_jobs() != jobs:
                    continue
                return all(config_status(d)["reduced"] for d in dirs)
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                return False
            time.sleep(poll_s)


def failure_summary(config_dir: Path) -> str:
    """What keeps a config from being certified, one indented line each: failed shards with their logs, invalid
    or duplicated files, missing shards, and the job logs when no process is left."""
    try:
        r = config_status(config_dir)
    except (OSError, ValueError) as error:
        return f"    {error}"
    lines = [f"    shard {f['shard']} failed: {f['error']} (log: {f['log']})" for f in r["failed"]]
    lines += [f"    invalid file {path}: {why}" for path, why in r["invalid"].items()]
    lines += [f"    shard {i} duplicated: {', '.join(p)}" for i, p in r["duplicated"].items()]
    if r["done"] < r["total"]:
        lines.append(f"    {r['total'] - r['done']} of {r['total']} shard(s) not done")
    lines += [f"    job {job} log: {path}" for job, path in r["logs"].items()]
    return "\n".join(lines)
