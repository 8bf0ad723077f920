"""A hostile user's commands end in one line, exit status 1, with nothing written: unsafe names (in every
command, `corpus` included), a bad value on a fresh data directory (refused before any corpus is generated),
`radius-table` arguments, two commands racing for a config's lock, and a full disk under a log or under Hydra's
own files. The real CLI where the point is what it prints."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import certify_overrides, run_cli
from test_trust import mounted_tmpfs

from audiocert.locks import ConfigBusyError, acquire, release


def refused(args: list[str], runs: Path):
    """``audiocert ARGS``, which must end in one line on stderr with exit status 1 (and no traceback)."""
    result = run_cli(args, runs, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, \
        (args, result.returncode, result.stderr[-3000:])
    return lines[0]


def refused_each(commands: list[list[str]], runs: Path) -> list[str]:
    """``refused`` for each command, one after another: each is a fork of a process that has imported torch
    (conftest.run_cli), and running two at once would start a second such process."""
    return [refused(args, runs) for args in commands]


def written(root: Path) -> list[Path]:
    return sorted(root.rglob("*")) if root.exists() else []


def test_unsafe_names_and_a_bad_value_on_fresh_data_are_refused_in_one_line_before_anything_is_written(tmp_path):
    """Cases 1-3: names with '/' or '..' in certify, train, stats and corpus (`corpus` accepted them), and
    `smoothing.sigma=-1` on a fresh data directory (the synthetic corpus was written before the refusal)."""
    runs, fresh = tmp_path / "runs", tmp_path / "fresh"
    lines = refused_each([
        ["certify", "sweep.name=../x"], ["train", "model.name=.."], ["corpus", "dataset.name=../../../escape"],
        ["certify", f"paths.data_dir={fresh}", "smoothing.sigma=-1"],
    ], runs)  # every name of every command: tests/test_config_schemas.py
    assert lines[:3] == [
        "audiocert certify: sweep.name='../x': must be a safe name for a directory: letters, digits and . _ = , + - "
        "(no '/', no '..', not starting with a dot)",
        "audiocert train: model.name='..': must be a safe name for a directory: letters, digits and . _ = , + - "
        "(no '/', no '..', not starting with a dot)",
        "audiocert corpus: dataset.name='../../../escape': must be a safe name for a directory: letters, digits and "
        ". _ = , + - (no '/', no '..', not starting with a dot)",
    ]
    assert lines[3] == "audiocert certify: smoothing.sigma=-1: must be finite and > 0"
    assert not written(runs) and not written(fresh) and not list(tmp_path.parent.glob("**/escape"))


def test_radius_table_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    """Case 4: the table's arguments were 15-26-line tracebacks (and sigma=inf tabulated radius inf)."""
    from audiocert import cli

    assert refused(["radius-table", "--alpha", "2"], tmp_path) == \
        "audiocert radius-table: --alpha=2.0: must be finite and in (0, 0.5)"
    for argv, message in ((["--sigma", "0.5", "-1"], "--sigma=-1.0: must be finite and > 0"),
                          (["--sigma", "inf"], "--sigma=inf: must be finite and > 0"),
                          (["--n", "0"], "--n=0: must be an integer >= 1"),
                          (["--alpha", "nan"], "--alpha=nan: must be finite and in (0, 0.5)"),
                          (["--n", "2.5"], "argument --n: invalid int value: '2.5'")):
        with pytest.raises(SystemExit) as stop:
            cli.COMMANDS["radius-table"](argv)
        assert stop.value.code == f"audiocert radius-table: {message}", argv
    cli.COMMANDS["radius-table"](["--sigma", "0.5"])
    assert "| 0.50 |" in capsys.readouterr().out


def test_a_lock_whose_holder_has_not_written_who_it_is_is_said_so(tmp_path):
    """Case 5: a command that found the lock taken but its holder not yet written printed "in use by pid None on
    None (since 1970-01-01)". Now it waits a moment for the holder's entry, and names it or says it is starting."""
    config = tmp_path / "config"
    config.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(config / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(ConfigBusyError) as busy:
            acquire(config)
        message = str(busy.value)
        assert "None" not in message and "1970" not in message and "has not yet written who it is" in message
        assert time.monotonic() - started < 10
        # An entry of a holder that has ended (the previous command) is not taken for the live one's.
        (config / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename,
                                                  "since": 0, "command": "old"}))
        with pytest.raises(ConfigBusyError, match="has not yet written who it is"):
            acquire(config)
        (config / ".lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                                  "since": time.time(), "purpose": "certifying", "command": "x"}))
        with pytest.raises(ConfigBusyError, match=rf"in use by pid {holder.pid} on .*certifying"):
            acquire(config)
    finally:
        holder.kill()
        holder.wait()
    acquire(config)  # free again
    assert json.loads((config / ".lock").read_text())["pid"] == os.getpid()
    release(config)


def test_a_log_on_a_full_disk_ends_the_command_in_one_line_naming_it(tmp_path, capsys):
    """Case 6, in-process: logging's default prints a '--- Logging error ---' traceback per record and goes on."""
    from audiocert.progress import LogWriteError, stop_on_unwritable_logs

    with mounted_tmpfs(tmp_path / "full", "size=4k") as full:
        with pytest.raises(OSError), open(full / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 1024)
                handle.flush()
        handler = logging.FileHandler(full / "job.log")
        log = logging.getLogger("audiocert.test_refusals")
        log.addHandler(handler)
        original = logging.Handler.handleError
        try:
            stop_on_unwritable_logs()
            with pytest.raises(LogWriteError) as stop:
                log.warning("x" * 8192)
            assert stop.value.code == (f"cannot write {full / 'job.log'}: No space left on device (the file system "
                                       "is full: free space there and rerun)")
            log.warning("after")  # the handler is off: no second error
            handler.close()
        finally:
            logging.Handler.handleError = original
            log.removeHandler(handler)
    assert "Logging error" not in capsys.readouterr().err


def test_a_full_disk_under_the_logs_or_hydras_files_is_said_in_one_line(tmp_path):
    """Case 6, the CLI: a job's log on a full disk, and a runs directory too full for Hydra's own .hydra/ files."""
    fresh = tmp_path / "fresh"
    with mounted_tmpfs(tmp_path / "full", "size=4k") as full:
        with pytest.raises(OSError), open(full / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 1024)
                handle.flush()
        log, hydra = refused_each([
            ["corpus", f"paths.data_dir={fresh}", f"hydra.job_logging.handlers.file.filename={full}/c.log"],
            ["stats", f"paths.data_dir={fresh}", f"hydra.run.dir={full}/run"],
        ], tmp_path / "runs")
    assert log == (f"audiocert corpus: cannot write {full}/c.log: No space left on device (the file system is full: "
                   "free space there and rerun)")
    assert hydra.startswith(f"audiocert stats: cannot write {full}/run/.hydra/") and \
        hydra.endswith(": No space left on device (the file system is full: free space there and rerun)")
    assert not list(fresh.rglob("*.flac"))


@pytest.mark.slow
def test_certify_with_its_log_on_a_full_disk_ends_in_one_line(trained, tmp_path):
    """Case 6 as found: `certify` on a full disk printed hundreds of '--- Logging error ---' tracebacks."""
    with mounted_tmpfs(tmp_path / "full", "size=4k") as full:
        with pytest.raises(OSError), open(full / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 1024)
                handle.flush()
        line = refused(["certify", *certify_overrides(trained, "full-log", "launcher=debug"),
                        f"hydra.job_logging.handlers.file.filename={full}/certify.log"], trained["runs"])
    assert line == (f"audiocert certify: cannot write {full}/certify.log: No space left on device (the file system "
                    "is full: free space there and rerun)")


def test_the_flock_is_the_lock(tmp_path):
    """The lock file alone (without flock) holds nothing: a stale entry never blocks a rerun."""
    config = tmp_path / "c"
    config.mkdir()
    (config / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": 0}))
    acquire(config)
    with open(config / ".lock") as handle, pytest.raises(BlockingIOError):
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    release(config)
