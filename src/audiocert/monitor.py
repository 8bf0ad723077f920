"""The monitor: the one writer of a sweep's W&B runs, reading the sweep's files (files are the truth).

It runs beside the local and debug launchers (a child process of the command, so W&B never delays a shard: a
slow or failing ``wandb.init`` costs only the live view) and, for SLURM, on the login node (``audiocert status
--watch SECONDS --wandb MODE SWEEP_DIR``, or ``certify`` itself with ``launcher.wait=true``); compute nodes never
talk to W&B. Each poll, for every config: open (or resume) its run,
log the shards that landed and the kind's live rows, or, once the config is reduced, its results, then finish the
run. When every config is logged, one sweep-level run (job_type sweep) gets the table comparing them. A monitor
that dies costs only the live view: the next one resumes each run from its wandb_run.json.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audiocert.kinds import kind_of
from audiocert.provenance import CorruptFileError, atomic_write_json
from audiocert.shards import config_dirs, has_results, read_plan
from audiocert.tracking import (
    RUN_FILE,
    ConfigRun,
    init_run,
    logging_failed,
    logging_off,
    open_config_run,
    read_run_file,
    run_id,
    run_info,
)

log = logging.getLogger(__name__)
LOCK_FILE = ".wandb-monitor.lock"
STARTING_GRACE_S = 5.0  # how long finished work waits for a W&B run that has not started yet


def sweep_name_of(config_dir: Path) -> str:
    """The sweep (W&B group) a config directory belongs to: its plan's, else its parent directory's name."""
    try:
        return str(read_plan(config_dir)["config"]["sweep"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return Path(config_dir).parent.name


class SweepMonitor:
    """Polls a sweep's config directories and keeps each config's W&B run up to date (see the module doc)."""

    def __init__(self, directories: Sequence[str | Path], logger_cfg: Mapping[str, Any],
                 sweep_dir: str | Path | None = None) -> None:
        self.dirs = [Path(d) for d in directories]
        self.logger_cfg = dict(logger_cfg)
        self.sweep_dir = Path(sweep_dir) if sweep_dir else (self.dirs[0].parent if self.dirs else None)
        self.runs: dict[Path, ConfigRun | None] = {}
        self.done: set[Path] = set()
        self.compared = False
        self.lock: Any = None  # the open lock file; False when another monitor holds it

    @classmethod
    def of_sweep(cls, sweep_dir: str | Path, logger_cfg: Mapping[str, Any]) -> SweepMonitor:
        return cls(config_dirs(sweep_dir), logger_cfg, sweep_dir)

    @property
    def enabled(self) -> bool:
        return self.logger_cfg.get("mode", "offline") != "disabled" and not logging_off() and self.lock is not False

    def take_lock(self) -> None:
        """One monitor per sweep (one writer per run): an exclusive lock on SWEEP_DIR/.wandb-monitor.lock, held
        while this process lives; a second monitor says who holds it and logs nothing."""
        if self.lock is not None or self.sweep_dir is None:
            return
        handle = open(self.sweep_dir / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            self.lock = False
            log.warning("W&B: %s already monitors %s (one writer per run): this one logs nothing", holder,
                        self.sweep_dir)
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self.lock = handle

    def poll(self) -> bool:
        """One look at every config; True once every config's final results are logged (or W&B is off)."""
        if self.logger_cfg.get("mode", "offline") != "disabled":
            self.take_lock()
        for config_dir in self.dirs:
            if config_dir in self.done or not self.enabled:
                continue
            try:
                self.poll_config(config_dir)
            except Exception as error:  # a damaged file in one config: its run waits, the others go on
                log.debug("monitor: %s: %s", config_dir, error)
        finished = not self.enabled or len(self.done) == len(self.dirs)
        if finished and self.enabled and not self.compared:
            self.compared = True
            log_comparison(self.dirs, self.logger_cfg, self.sweep_dir)
        return finished

    def poll_config(self, config_dir: Path) -> None:
        plan = read_plan(config_dir)
        reduced = has_results(config_dir, plan)
        if reduced and read_run_file(config_dir).get("final") and config_dir not in self.runs:
            self.done.add(config_dir)  # logged by an earlier writer
            return
        if config_dir not in self.runs:
            self.runs[config_dir] = open_config_run(config_dir, self.logger_cfg, sweep_name_of(config_dir))
        run = self.runs[config_dir]
        if run is None or run.broken:
            self.done.add(config_dir)
            return
        if reduced:
            run.log_results()
            run.finish()
            self.done.add(config_dir)
        else:
            run.log_progress()

    def close(self) -> None:
        """Finish the runs still open (a config not yet reduced): the next monitor resumes them."""
        for config_dir, run in self.runs.items():
            if run is not None and config_dir not in self.done:
                run.finish()
                self.done.add(config_dir)

    def watch(self, interval_s: float, stop: threading.Event | None = None) -> None:
        """Poll every ``interval_s`` until every config is logged or ``stop`` is set; then a last poll."""
        try:
            while not self.poll():
                if stop is not None and stop.wait(interval_s):
                    self.poll()
                    break
                if stop is None:
                    time.sleep(interval_s)
        finally:
            self.close()


class MonitorProcess:
    """A SweepMonitor in a child process of the command (``python -m audiocert.monitor``), started before the first
    shard: W&B never runs in the command's own process, so it never delays a shard or a result. ``stop`` (after
    the reducers) asks it for a last poll and waits for it, but when no run could even start by then (W&B
    unreachable, a wrong key: wandb.init would wait ``init_timeout_s``) only ``STARTING_GRACE_S`` more; then the
    child and its wandb service are killed, with the one warning, and the command ends with its results."""

    def __init__(self, directories: Sequence[Path], logger_cfg: Mapping[str, Any], sweep_dir: Path,
                 interval_s: float = 20.0) -> None:
        self.dirs, self.logger_cfg, self.sweep_dir = [Path(d) for d in directories], dict(logger_cfg), sweep_dir
        self.interval_s, self.process, self.started = interval_s, None, 0.0

    def start(self) -> MonitorProcess:
        if self.logger_cfg.get("mode", "offline") == "disabled" or logging_off():
            return self
        self.started = time.time()
        command = [sys.executable, "-m", "audiocert.monitor", "--logger", json.dumps(self.logger_cfg),
                   "--interval", str(self.interval_s), "--sweep-dir", str(self.sweep_dir), *map(str, self.dirs)]
        try:  # its own session: stopping it stops the wandb service it started too
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            start_new_session=True, text=True)
        except OSError as error:
            logging_failed("starting the W&B monitor", error)
        return self

    def runs_opened(self) -> bool:
        """Whether the child has opened a run of this command's configs (it writes wandb_run.json on opening)."""
        return any(float(read_run_file(d).get("updated_at") or 0) >= self.started for d in self.dirs)

    def stop(self, grace_s: float | None = None) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        except OSError:  # it ended meanwhile
            pass
        grace = (120.0 if self.runs_opened() else STARTING_GRACE_S) if grace_s is None else grace_s
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            logging_failed("W&B (no run started before the results were written)",
                           TimeoutError(f"no answer within {grace:.0f} s; the monitor was stopped"))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m audiocert.monitor``: the child of MonitorProcess; a line on stdin (or its end) means stop."""
    parser = argparse.ArgumentParser(prog="python -m audiocert.monitor")
    parser.add_argument("--logger", required=True, help="the logger config as JSON")
    parser.add_argument("--interval", type=float, default=20.0)
    parser.add_argument("--sweep-dir", type=Path, required=True)
    parser.add_argument("dirs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    SweepMonitor(args.dirs, json.loads(args.logger), args.sweep_dir).watch(args.interval, stop)


def comparison_rows(directories: Sequence[Path]) -> tuple[list[str], list[list[Any]]]:
    """Every reduced config's row of the comparison table (its kind's spec says what it compares)."""
    rows: list[dict[str, Any]] = []
    for config_dir in directories:
        try:
            plan = read_plan(config_dir)
            if has_results(config_dir, plan):
                row = kind_of(plan).wandb_spec(config_dir, plan).get("comparison")
                if row:
                    rows.append({**row, "run_id": read_run_file(config_dir).get("run_id")})
        except (OSError, ValueError, KeyError, CorruptFileError) as error:
            log.debug("comparison: %s: %s", config_dir, error)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return columns, [[row.get(c) for c in columns] for row in rows]


def log_comparison(directories: Sequence[Path], logger_cfg: Mapping[str, Any], sweep_dir: Path | None) -> None:
    """The sweep-level run (job_type sweep): one table comparing every config of the sweep directory (not only
    this command's), resumed by each command that finishes configs of the sweep; its place in wandb_run.json."""
    if sweep_dir is None:
        return
    try:
        columns, data = comparison_rows(config_dirs(sweep_dir) or list(directories))
    except (OSError, ValueError) as error:
        log.debug("comparison: %s: %s", sweep_dir, error)
        columns, data = comparison_rows(directories)
    if not data:
        return
    try:
        import wandb

        name = sweep_dir.name
        stored = read_run_file(sweep_dir)
        step = int(stored.get("step", -1)) + 1  # W&B keeps a resumed run's steps increasing
        run = init_run(wandb, logger_cfg, Path(logger_cfg.get("dir") or sweep_dir), group=name, job_type="sweep",
                       name=f"{name} (sweep)", id=stored.get("run_id") or run_id(name, "sweep"),
                       config={"sweep": name})
        run.log({"sweep/comparison": wandb.Table(columns=columns, data=data)}, step=step)
        run.summary["configs"] = len(data)
        for row in data:
            run.summary[f"configs/{row[0]}"] = {c: v for c, v in zip(columns, row, strict=True)}
        info = run_info(run, logger_cfg.get("mode", "offline"))
        run.finish()
        atomic_write_json(sweep_dir / RUN_FILE, {**stored, **info, "configs": len(data), "step": step,
                                                 "updated_at": time.time()})
    except Exception as error:
        logging_failed("logging the sweep's comparison", error)


def log_report(sweep_dirs: Sequence[Path], report: Path, logger_cfg: Mapping[str, Any]) -> None:
    """The report's figures as images and the report itself as an artifact, in each sweep's run (resumed)."""
    if logger_cfg.get("mode", "offline") == "disabled":
        return
    figures = sorted(Path(report).parent.glob("*.png"))
    for sweep_dir in sweep_dirs:
        try:
            import wandb

            name = Path(sweep_dir).name
            stored = read_run_file(Path(sweep_dir))
            run = init_run(wandb, logger_cfg, Path(logger_cfg.get("dir") or sweep_dir), group=name,
                           job_type="sweep", name=f"{name} (sweep)", id=stored.get("run_id") or run_id(name, "sweep"))
            step = int(stored.get("step", 0)) + 1  # after the comparison's row: W&B keeps steps increasing
            run.log({f"report/{f.stem}": wandb.Image(str(f), caption=f.name) for f in figures}, step=step)
            artifact = wandb.Artifact(f"report-{name}", type="report")
            artifact.add_file(str(report), name=Path(report).name)
            for figure in figures:
                artifact.add_file(str(figure), name=figure.name)
            run.log_artifact(artifact)
            info = run_info(run, logger_cfg.get("mode", "offline"))
            run.finish()
            atomic_write_json(Path(sweep_dir) / RUN_FILE, {**stored, **info, "step": step, "report": str(report),
                                                           "updated_at": time.time()})
        except Exception as error:
            logging_failed("logging the report", error)


if __name__ == "__main__":
    main()
