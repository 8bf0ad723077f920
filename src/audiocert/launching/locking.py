"""The locks a sweep takes: one per config (planning, submitting, advancing, certifying it) and one per sweep
(one submission pass at a time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audiocert.locks import acquire, held, lock_key, locked, release


def config_lock(config_dir: Path, wait: bool, purpose: str) -> Any:
    """Take the config's lock (see audiocert.locks); as a context manager it is released at the end of the block,
    else it is held until this process ends or finish_sweep releases it."""
    return _LockHandle(config_dir, wait, purpose)


class _LockHandle:
    def __init__(self, config_dir: Path, wait: bool, purpose: str) -> None:
        self.config_dir, self.held_before = Path(config_dir), lock_key(config_dir) in held()
        acquire(self.config_dir, wait=wait, purpose=purpose)

    def __enter__(self) -> _LockHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.held_before:
            release(self.config_dir)


def sweep_lock(sweep_dir: Path) -> Any:
    """The sweep's submission lock: one submission pass at a time (dependent jobs may run side by side)."""
    return locked(Path(sweep_dir) / "logs", wait=True, purpose="submitting")
