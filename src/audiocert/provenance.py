"""Where results come from and how they reach the disk: code version, config hashes, atomic writes."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


@functools.cache
def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one.

    Uncommitted changes add '.dirty' and a hash of the diff, so two different uncommitted states never share
    a version (shards of one are then foreign to the other).
    """
    try:
        package = version("audiocert")
    except PackageNotFoundError:  # running from a source tree that was not installed
        package = "0+unknown"
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        diff = subprocess.run(
            ["git", "-C", str(source), "diff", "HEAD", "--", "."],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return package
    return f"{package}+g{commit}" + (f".dirty{hashlib.sha256(diff.encode()).hexdigest()[:8]}" if diff else "")


def stable_hash(payload: Any, length: int = 12) -> str:
    """A short hex digest of a JSON-serialisable object, independent of key order."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: str | Path, length: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def atomic_write_with(path: str | Path, write: Callable[[str], None]) -> Path:
    """Let ``write(tmp_path)`` fill a temporary file in the same directory, then rename it over ``path``.

    A reader sees either the old file or the complete new one; a writer killed mid-way leaves only a
    ``.tmp`` file that nothing reads. The data and then the directory entry are fsynced, so a crashed node
    cannot leave a renamed but empty file. Permissions follow the umask (mkstemp alone would make them private).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return path


def _fsync(path: str | Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    return atomic_write_with(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path) as handle:
        return json.load(handle)
