"""Progress of a sweep read from its files: shards done (validated counts files), throughput, ETA, failures.

Completion is never taken from the scheduler (sacct may be absent): a shard is done when its counts file
validates; a failed shard is one whose worker recorded a failure under failures/ (with its log path). A
config is "running" only while a process or SLURM job of it is alive (jobs.json says which); a config
whose processes are gone is "stopped", with no ETA: rerunning the command resumes it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import audiocert.kinds  # noqa: F401  (registers every kind, so a plan of any kind can be read)
from audiocert.progress import progress
from audiocert.provenance import CorruptFileError, read_json, seal_problem
from audiocert.shards import config_dirs, has_results, inventory, read_plan
from audiocert.tracking import read_run_file

JOBS_FILE = "jobs.json"
DEFERRED_FILE = "deferred.json"  # the sweep's configs that wait for room under the site limits
# A shard worker prints this marker and a JSON object when a shard fails for good, to its log as well as to
# failures/: when the disk is full the record cannot be written, and the log line is where the cause is found.
FAILURE_MARK = "AUDIOCERT-SHARD-FAILED"


def failure_line(failure: Mapping[str, Any]) -> str:
    return f"{FAILURE_MARK} {json.dumps(dict(failure), default=str)}"


def failures_in_logs(paths: Iterable[str | Path], config_dir: str | Path | None = None,
                     tail_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """The shard failures marked in these job logs (their last ``tail_bytes``), of ``config_dir`` when given.

    A log's .out and .err twins are both read (submitit writes one of each per job)."""
    found, seen = [], set()
    for path in paths:
        path = Path(path)
        for twin in {path, path.with_suffix(".out"), path.with_suffix(".err")}:
            if twin in seen or not twin.is_file():
                continue
            seen.add(twin)
            try:
                with open(twin, "rb") as handle:
                    handle.seek(max(0, twin.stat().st_size - tail_bytes))
                    text = handle.read().decode(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if FAILURE_MARK not in line:
                    continue
                try:
                    failure = json.loads(line.split(FAILURE_MARK, 1)[1])
                except ValueError:
                    continue
                if isinstance(failure, dict) and (config_dir is None or
                                                  str(failure.get("config_dir")) == str(config_dir)):
                    failure.setdefault("log", str(twin))
                    if failure.get("log") is None:
                        failure["log"] = str(twin)
                    found.append(failure)
    unique = {(f.get("shard"), f.get("error")): f for f in found}
    return list(unique.values())


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


class QueueView:
    """The states of a sweep's SLURM jobs from one squeue call (pending or running; absent = ended)."""

    def __init__(self, job_ids: Iterable[str]) -> None:
        self.states: dict[str, str] = {}
        self.ok = True
        ids = sorted({str(j) for j in job_ids if j})
        if not ids:
            return
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(ids)], capture_output=True,
                                 text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            self.ok = False
            return
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            self.ok = False
            return
        for line in out.stdout.splitlines():
            job, _, state = line.strip().partition(" ")
            if job:
                self.states[job] = state.strip()

    def alive(self, job_ids: Iterable[str]) -> bool:
        """Whether any of these jobs (whole arrays '123' or tasks '123_4') is queued or running."""
        wanted = {str(j) for j in job_ids if j}
        return any(job in wanted or job.split("_")[0] in wanted for job in self.states)


def read_jobs_record(config_dir: Path) -> dict[str, Any] | None:
    path = config_dir / JOBS_FILE
    if not path.is_file():
        return {}
    try:
        record = read_json(path)
    except CorruptFileError:
        return None
    return record if isinstance(record, dict) else None


def slurm_job_ids(record: Mapping[str, Any]) -> list[str]:
    return list(record.get("arrays", [])) + ([record["reducer"]] if record.get("reducer") else [])


def activity(config_dir: Path, queue: QueueView | None = None) -> str:
    """'alive', 'gone' or 'unknown' for the processes or SLURM jobs that jobs.json says work on this config."""
    record = read_jobs_record(config_dir)
    if record is None:
        return "unknown"
    if not record:
        return "gone"
    if record.get("executor") == "slurm":
        queue = queue or QueueView(slurm_job_ids(record))
        if not queue.ok:
            return "unknown"
        return "alive" if queue.alive(slurm_job_ids(record)) else "gone"
    if record.get("ended_at"):  # the command that ran its workers said it is done (even if it is still exiting)
        return "gone"
    if record.get("host") != socket.gethostname():
        return "unknown"
    pid, start = record.get("parent_pid"), record.get("parent_start")
    if isinstance(pid, int) and process_start_time(pid) == start and start is not None:
        return "alive"
    return "gone"


def busy_span(records: Iterable[Mapping[str, Any]]) -> float:
    """Seconds during which at least one shard of these records was computing (the union of their
    [finished_at - elapsed_s, finished_at] intervals): wall time without the waits between rounds or for
    workers busy with other configs."""
    intervals = sorted((float(r["finished_at"]) - float(r["elapsed_s"]), float(r["finished_at"])) for r in records)
    span, end = 0.0, -float("inf")
    for lo, hi in intervals:
        if hi <= end:
            continue
        span += hi - max(lo, end)
        end = hi
    return span


def task_counts(record: Mapping[str, Any], queue: QueueView | None) -> dict[str, int] | None:
    """SLURM array tasks of a config's last submission: pending, running and ended (None when not on SLURM)."""
    if record.get("executor") != "slurm" or queue is None or not queue.ok:
        return None
    tasks = set(record.get("tasks") or {}) or set(record.get("shards", {}).values())
    counts = {"pending": 0, "running": 0, "ended": 0}
    for task in tasks:
        state = queue.states.get(task) or queue.states.get(task.split("_")[0])
        if state is None:
            counts["ended"] += 1
        elif state in ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "SUSPENDED"):
            counts["pending"] += 1
        else:
            counts["running"] += 1
    return counts


def config_status(config_dir: Path, queue: QueueView | None = None) -> dict[str, Any]:
    plan = read_plan(config_dir)
    found = inventory(config_dir, plan)
    records = list(found.records.values())
    total = len(found.shards)  # of the rounds planned so far (a sequential config adds rounds as it goes)
    samples_total = sum(s.samples for s in found.shards)
    rounds = max(s.round for s in found.shards) + 1
    samples_done = sum(r["samples"] for r in records)
    busy = sum(r["elapsed_s"] for r in records)
    span = busy_span(records)
    # Throughput from shard run times: per task (samples per second of shard computation) and for the config
    # (samples per second while any of its shards computed). Never from first start to last finish, which
    # counts waits between rounds and workers busy with other configs.
    rate = samples_done / span if span else 0.0
    jobs = read_jobs_record(config_dir) or {}
    if queue is None and jobs.get("executor") == "slurm":
        queue = QueueView(slurm_job_ids(jobs) + list(jobs.get("tasks") or {}))
    failures = []
    for path in sorted((config_dir / "failures").glob("*.json")):
        try:
            failure = read_json(path)
            if failure["shard"] not in found.records:
                failures.append(failure)
        except (CorruptFileError, KeyError, TypeError):
            failures.append({"shard": path.stem, "error": f"unreadable failure record {path}", "log": None})
    recorded = {f.get("shard") for f in failures}
    logs = dict(jobs.get("logs", {}))
    if found.missing:  # a failure whose record could not be written (a full disk) is still in its job's log
        failures += [f for f in failures_in_logs(logs.values(), config_dir)
                     if f.get("shard") in found.missing and f.get("shard") not in recorded]
    results = has_results(config_dir, plan)
    reduced = results and found.complete
    alive = "gone" if reduced else activity(config_dir, queue)
    eta = (samples_total - samples_done) / rate if alive == "alive" and rate and samples_done < samples_total else 0.0
    return {
        "label": plan["label"], "config_dir": str(config_dir), "done": len(records), "total": total,
        "samples_done": samples_done, "samples_total": samples_total, "samples_per_s": rate,
        "samples_per_busy_s": samples_done / busy if busy else 0.0, "busy_span_s": span, "eta_s": eta,
        "failed": failures, "invalid": {str(k): v for k, v in found.invalid.items()},
        "duplicated": {str(k): [str(p) for p in v] for k, v in found.duplicated.items()},
        "reduced": reduced, "stale_results": results and not found.complete, "activity": alive,
        "logs": logs if alive != "alive" and not reduced else {}, "rounds": rounds,
        "tasks": task_counts(jobs, queue), "deferred": None, "quantities": plan["quantities"],
        "wandb": wandb_location(config_dir),
    }


def wandb_location(directory: Path) -> str | None:
    """Where a config's W&B run is, in one line: its URL (online) or its directory and sync command (offline)."""
    record = read_run_file(directory)
    if not record.get("run_id"):
        return None
    return record.get("url") or f"{record.get('run_dir')} (offline: `{record.get('sync')}`)"


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def sweep_status(directory: str | Path) -> list[dict[str, Any]]:
    """config_status of every config of a sweep (or of one config directory), with one squeue call in all."""
    dirs = config_dirs(directory)
    job_ids: list[str] = []
    for d in dirs:
        record = read_jobs_record(d) or {}
        if record.get("executor") == "slurm":
            job_ids += slurm_job_ids(record) + list(record.get("tasks") or {})
    queue = QueueView(job_ids) if job_ids else None
    rows = distinct_labels([config_status(d, queue) for d in dirs])
    waiting = deferred_configs(Path(directory))
    for row in rows:
        row["deferred"] = waiting.get(os.path.abspath(str(row["config_dir"])))
    return rows


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def distinct_labels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose configs share a label get the settings that tell them apart (at most three; else the config
    directory's name), so no two rows of a status read alike."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    for label, same in by_label.items():
        if len(same) < 2:
            continue
        flat = [_flat(r["quantities"]) for r in same]
        differ = [k for k in sorted(set().union(*flat)) if len({repr(f.get(k)) for f in flat}) > 1
                  and not k.endswith(("checkpoint_digest", "root"))]
        for row, values in zip(same, flat, strict=True):
            what = ", ".join(f"{k}={values.get(k)}" for k in differ[:3]) if differ and len(differ) <= 3 else \
                Path(row["config_dir"]).name
            row["label"] = f"{label} ({what})"
    return rows


def read_deferred(sweep_dir: Path) -> dict[str, Any]:
    """config_dir (absolute) -> {why it waits, the config to submit it with}: the sweep's configs that wait for room
    under the site limits (deferred.json; written by launch.submit_configs). A damaged file reads as none waiting."""
    path = Path(sweep_dir) / DEFERRED_FILE
    try:
        data = read_json(path) if path.is_file() else {}
    except CorruptFileError:
        return {}
    if not isinstance(data, dict) or seal_problem(data):
        return {}
    waiting = data.get("configs", {})
    return {os.path.abspath(str(k)): v for k, v in waiting.items()} if isinstance(waiting, dict) else {}


def deferred_configs(sweep_dir: Path) -> dict[str, str]:
    """config_dir (absolute) -> why it waits for submission."""
    return {k: str(v.get("why", v) if isinstance(v, dict) else v) for k, v in read_deferred(sweep_dir).items()}


def state_of(r: Mapping[str, Any]) -> str:
    """A config's state in words, for the status table."""
    if r["reduced"]:
        state = "reduced"
    elif r["stale_results"]:
        state = "DAMAGED: its results are older than what the shard files say now (see below); rerun the command"
    elif r["failed"]:
        state = f"{len(r['failed'])} failed"
    elif r["done"] == r["total"] and r["activity"] != "alive":
        state = "planned shards done, not reduced (rerun the command: it plans the next round or reduces)"
    elif r.get("deferred") and r["activity"] != "alive":
        state = f"waiting for submission ({r['deferred']})"
    else:
        state = {"alive": "running", "gone": "stopped: no live process or job (rerun the command to resume)",
                 "unknown": "running? (its jobs are on another host or the scheduler does not answer)"
                 }[r["activity"]]
    if r["rounds"] > 1 and not r["reduced"]:
        state += f", round {r['rounds']}"  # a sequential config: the total grows with each round
    if r.get("tasks") and not r["reduced"]:
        t = r["tasks"]
        state += f"; tasks {t['pending']} pending, {t['running']} running, {t['ended']} ended"
    return state


def format_status(directory: str | Path, rows: list[dict[str, Any]] | None = None) -> str:
    rows = rows if rows is not None else sweep_status(directory)
    width = max(len(r["label"]) for r in rows)
    lines = [f"{'config':<{width}}  {'shards':>11}  {'samples/s':>10}  {'per-task':>9}  {'ETA':>7}  state"]
    for r in rows:
        eta = format_duration(r["eta_s"]) if r["eta_s"] else "-"
        lines.append(f"{r['label']:<{width}}  {r['done']:>5}/{r['total']:<5}  {r['samples_per_s']:>10.1f}  "
                     f"{r['samples_per_busy_s']:>9.1f}  {eta:>7}  {state_of(r)}")
        for failure in r["failed"]:
            lines.append(f"    shard {failure['shard']} failed: {failure['error']} (log: {failure['log']})")
        for path, why in r["invalid"].items():
            lines.append(f"    invalid file {path}: {why}")
        for index, paths in r["duplicated"].items():
            lines.append(f"    shard {index} duplicated: {', '.join(paths)}")
        if not r["reduced"] and r["activity"] == "gone" and not r["failed"]:
            for job, log_path in r["logs"].items():
                lines.append(f"    job {job} log: {log_path}")
        if r.get("wandb"):
            lines.append(f"    W&B run: {r['wandb']}")
    done = sum(r["done"] for r in rows)
    total = sum(r["total"] for r in rows)
    lines.append(f"{len(rows)} config(s), {done}/{total} shards done, "
                 f"{sum(r['reduced'] for r in rows)} reduced. samples/s: while the config's shards computed "
                 "(all workers); per-task: one worker's rate")
    return "\n".join(lines)


def print_status(directory: str | Path, watch: float = 0, monitor: Any = None, sync: bool = False) -> None:
    """The status table, every ``watch`` seconds until no config is running. ``monitor``: a
    :class:`audiocert.monitor.SweepMonitor` to poll at each refresh (the login-node W&B monitor of a SLURM sweep),
    which also keeps going until every config's results are logged; ``sync``: `wandb sync` its runs each time."""
    idle = 0
    try:
        while True:
            logged = monitor.poll() if monitor is not None else True
            if sync:
                sync_runs(directory)
            rows = sweep_status(directory)
            print(format_status(directory, rows), flush=True)
            running = any(not (r["reduced"] or r["failed"] or r["activity"] != "alive") for r in rows)
            idle = 0 if running else idle + 1  # nothing runs: one more poll logs what was reduced meanwhile
            if not watch or (not running and (logged or idle > 1)):
                return
            time.sleep(watch)
            print()
    finally:
        if monitor is not None:
            monitor.close()


def sync_runs(directory: str | Path) -> None:
    """`wandb sync` every offline run of the sweep's configs (a run synced before is synced again: cheap)."""
    for config_dir in config_dirs(directory):
        record = read_run_file(config_dir)
        if record.get("mode") == "offline" and record.get("run_dir"):
            try:
                subprocess.run(["wandb", "sync", record["run_dir"]], capture_output=True, timeout=120, check=True)
            except (OSError, subprocess.SubprocessError) as error:
                print(f"wandb sync {record['run_dir']} failed: {error}", file=sys.stderr)


def slurm_jobs_alive(job_ids: list[str]) -> bool:
    """Whether any of these SLURM jobs is still queued or running (squeue; sacct is not needed)."""
    if not job_ids:
        return False
    view = QueueView(job_ids)
    if not view.ok:
        raise subprocess.SubprocessError("squeue does not answer")
    return view.alive(job_ids)


def sweep_jobs_alive(sweep_dir: Path) -> bool:
    """Whether any SLURM job of the sweep's configs is queued or running (or squeue cannot say): then a dependent
    job is left to submit the configs that wait for room (deferred.json)."""
    ids = [j for d in config_dirs(sweep_dir) for j in slurm_job_ids(read_jobs_record(d) or {})]
    if not ids:
        return False
    view = QueueView(ids)
    return not view.ok or view.alive(ids)


def wait_for_configs(dirs: list[Path], poll_s: float = 2.0, timeout_s: float | None = None,
                     on_poll: Callable[[], None] | None = None, sweep_dir: Path | None = None) -> bool:
    """Block until every config is reduced, or until none of its SLURM jobs is left and none waits for room under
    the site limits in ``sweep_dir``'s deferred.json (True if all reduced).

    ``on_poll`` runs at each look (launch: submit the configs that waited for room under the site limits).
    ``sweep_dir``: where deferred.json is; by default the first config's sweep (an attack or perceptibility
    config lies one level deeper than a certify config, inside its certification's directory)."""
    started = time.monotonic()
    if sweep_dir is None and dirs:
        sweep_dir = next((p for p in Path(dirs[0]).resolve().parents if (p / DEFERRED_FILE).is_file()),
                         Path(dirs[0]).parent)

    def submitted_jobs() -> list[str]:
        jobs = []
        for d in dirs:
            jobs += slurm_job_ids(read_jobs_record(d) or {})
        return jobs

    with progress(total=0, desc="shards done", unit="shard") as bar:
        while True:
            if on_poll is not None:
                on_poll()
            rows = [config_status(d) for d in dirs]
            bar.total = sum(r["total"] for r in rows)  # grows when a sequential config plans another round
            bar.update(sum(r["done"] for r in rows) - bar.n)
            if all(r["reduced"] for r in rows):
                return True
            jobs = submitted_jobs()
            waiting = deferred_configs(sweep_dir) if sweep_dir is not None else {}
            if not slurm_jobs_alive(jobs) and not any(os.path.abspath(d) in waiting for d in dirs):
                time.sleep(poll_s)  # the reducer may have just written its files, or submitted the next round
                if submitted_jobs() != jobs:
                    continue
                return all(config_status(d)["reduced"] for d in dirs)
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                return False
            time.sleep(poll_s)


def failure_summary(config_dir: Path) -> str:
    """What keeps a config from being certified, one indented line each: failed shards with their logs (from
    failures/ or, when that could not be written, from the job logs), invalid or duplicated files, missing
    shards, and the job logs when no process is left."""
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
