"""One command at a time per config: advisory file locks that a killed process cannot leave held.

Two `audiocert certify` commands on the same sweep would both compute every shard (the results agree, the work is
wasted). Each config directory gets a lock file, ``.lock``, taken with ``flock`` for as long as a command works on
the config: the kernel drops the lock when the process ends, however it ends (kill -9 included), so no stale lock
can block a rerun. While holding it, the command writes who it is into the file (pid, host, command, since), so the
second command can say who holds it (or, in the moment before the holder has written that, that a command does).
``launcher.lock_wait=true`` waits for it instead of giving up.

Locks are per process and re-entrant: a sweep that plans the same config twice takes its lock once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lock"

# This process's held locks: lock file path -> open descriptor (closing it would release the lock).
_HELD: dict[str, int] = {}


class ConfigBusyError(RuntimeError):
    """Another live process holds the config's lock; the message says who and what to do."""


def holder_of(path: Path, patience_s: float = 1.0) -> str:
    """Who holds the lock at ``path``, in words.

    A command takes the lock before it writes who it is, so a second command started at the same moment can find
    the file empty, half written, or still naming the previous holder (a process that has ended): it waits up to
    ``patience_s`` for the holder's own entry, then says only that another command holds the lock.
    """
    deadline = time.monotonic() + patience_s
    while (info := _holder_info(path)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if info is None:
        return "another command (starting: it has not yet written who it is)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
    return (f"pid {info['pid']} on {info['host']} ({info.get('purpose', 'working')} since {since}: "
            f"{info.get('command', '?')})")


def _holder_info(path: Path) -> dict | None:
    """The holder's entry of a lock file, or None while it is not (yet) the live holder's own."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(info, dict) and isinstance(info.get("pid"), int) and isinstance(info.get("host"), str)
            and isinstance(info.get("since"), (int, float))):
        return None
    if info["host"] == socket.gethostname():
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return None  # a holder that has ended: its successor has not written its own entry yet
        except PermissionError:
            pass  # alive, another user's
    return info


def acquire(directory: str | Path, wait: bool = False, purpose: str = "working", poll_s: float = 1.0,
            timeout_s: float | None = None) -> Path:
    """Take the lock of ``directory`` for the rest of this process (or until :func:`release`).

    Held by another process: ConfigBusyError naming the holder, or with ``wait`` block until it is free (or
    ``timeout_s`` passes, then ConfigBusyError). A directory this process already holds is a no-op.
    """
    directory = Path(directory)
    path = directory / LOCK_FILE
    key = lock_key(directory)
    if key in _HELD:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    started, announced = time.monotonic(), False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not wait or (timeout_s is not None and time.monotonic() - started > timeout_s):
                who = holder_of(path)
                os.close(fd)
                raise ConfigBusyError(
                    f"{directory} is in use by {who}. Wait for it to finish (`audiocert status` shows its "
                    "progress), stop it, or pass launcher.lock_wait=true to wait for it") from None
            if not announced:
                print(f"waiting for {directory}: in use by {holder_of(path)}", file=sys.stderr, flush=True)
                announced = True
            time.sleep(poll_s)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "purpose": purpose,
            "command": " ".join(sys.argv)[:500]}
    data = json.dumps(info).encode()
    os.pwrite(fd, data, 0)  # then cut what is left of a longer old entry: the file is never empty in between
    os.ftruncate(fd, len(data))
    _HELD[key] = fd
    return path


def held() -> set[str]:
    """The lock keys this process holds."""
    return set(_HELD)


def lock_key(directory: str | Path) -> str:
    """The registry key of a directory's lock: its real path (the same config reached by two paths is one)."""
    return str(Path(directory).resolve() / LOCK_FILE)


def release(directory: str | Path | None = None) -> None:
    """Release this process's lock of ``directory`` (all of them when None)."""
    keys = list(_HELD) if directory is None else [lock_key(directory)]
    for key in keys:
        fd = _HELD.pop(key, None)
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock


@contextlib.contextmanager
def locked(directory: str | Path, wait: bool = True, purpose: str = "working",
           timeout_s: float | None = None) -> Iterator[Path]:
    """Hold the lock of ``directory`` inside a ``with`` block (kept if this process held it already)."""
    held_before = lock_key(directory) in _HELD
    path = acquire(directory, wait=wait, purpose=purpose, timeout_s=timeout_s)
    try:
        yield path
    finally:
        if not held_before:
            release(directory)
