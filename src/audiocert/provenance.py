"""Where results come from and how they reach the disk: code version, config hashes, atomic writes."""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping
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


class WriteError(OSError):
    """A result file could not be written; the message names the file and what to do."""


def _write_error(path: Path, error: OSError) -> WriteError:
    hint = {errno.ENOSPC: "the file system is full: free space there (or point AUDIOCERT_RUNS_DIR elsewhere) and "
                          "rerun; results already written are intact",
            errno.EDQUOT: "the disk quota is exhausted: free space and rerun; results already written are intact",
            errno.EROFS: "the file system is read-only: point AUDIOCERT_RUNS_DIR at a writable directory",
            errno.EACCES: "no permission to write there: fix the directory's permissions or point "
                          "AUDIOCERT_RUNS_DIR at a writable directory",
            errno.EPERM: "no permission to write there: fix the directory's permissions or point "
                         "AUDIOCERT_RUNS_DIR at a writable directory"}.get(error.errno, "check the directory")
    return WriteError(error.errno, f"cannot write {path}: {error.strerror or error} ({hint})")


def atomic_write_with(path: str | Path, write: Callable[[str], None]) -> Path:
    """Let ``write(tmp_path)`` fill a temporary file in the same directory, then rename it over ``path``.

    A reader sees either the old file or the complete new one; a writer killed mid-way leaves only a
    ``.tmp`` file that nothing reads. The data and then the directory entry are fsynced, so a crashed node
    cannot leave a renamed but empty file. Permissions follow the umask (mkstemp alone would make them private).
    A full disk or an unwritable directory raises :class:`WriteError` naming ``path``; the old file stays.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _write_error(path, error) from error
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise _write_error(path, error) from error
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


def atomic_write_json(path: str | Path, payload: Any, compact: bool = False) -> Path:
    """Write ``payload`` as JSON atomically: indented for files people read, ``compact`` for the many small
    result files a sweep writes (a shard's counts on one line: a pretty-printed count per line cost 1.4 GB a
    config at 921 speakers)."""
    text = (json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str) if compact
            else json.dumps(payload, indent=2, sort_keys=True, default=str))
    return atomic_write_text(path, text + "\n")


# Every file a sweep reads back (plan, rounds, shard results) carries the SHA-256 of its own content under this
# key, so a file damaged on disk or edited by hand is refused before anything it says is trusted.
SEAL_KEY = "content_sha256"


def content_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 of ``payload`` without its seal, as canonical JSON (sorted keys, no spaces).

    JSON round-trips the values exactly (floats by their shortest repr), so a parsed file hashes as it was written.
    """
    body = {k: v for k, v in payload.items() if k != SEAL_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def seal(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with its content digest under :data:`SEAL_KEY`."""
    return {**payload, SEAL_KEY: content_digest(payload)}


def sealed_json_bytes(payload: Mapping[str, Any]) -> bytes:
    """``payload`` as one line of JSON whose first member is its seal, followed by the canonical text the seal is
    the digest of: a reader checks the seal by hashing those bytes (:func:`check_sealed_bytes`), with no second
    serialisation (0.2 ms a file, 40% of validating a shard)."""
    body = json.dumps({k: v for k, v in payload.items() if k != SEAL_KEY}, sort_keys=True, separators=(",", ":"),
                      default=str).encode()
    digest = hashlib.sha256(body).hexdigest()
    return b'{"' + SEAL_KEY.encode() + b'":"' + digest.encode() + b'",' + body[1:] + b"\n"


_SEAL_PREFIX = b'{"' + SEAL_KEY.encode() + b'":"'


def check_sealed_bytes(data: bytes) -> str:
    """'' when ``data`` (a file written by :func:`sealed_json_bytes`) matches its seal, 'unknown' when it is not in
    that layout (check the parsed dict with :func:`seal_problem` instead), else why not."""
    start = len(_SEAL_PREFIX)
    if not data.startswith(_SEAL_PREFIX) or data[start + 64 : start + 66] != b'",':
        return "unknown"
    body = b"{" + data[start + 66 :].rstrip(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != data[start : start + 64]:
        return f"its content does not match its {SEAL_KEY} (edited by hand or damaged on disk)"
    return ""


def atomic_write_sealed(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` sealed, on one line (see :func:`sealed_json_bytes`), atomically."""
    return atomic_write_bytes(path, sealed_json_bytes(payload))


def seal_problem(payload: Any) -> str:
    """'' when ``payload`` is a dict whose seal matches its content, else why not (for error messages)."""
    if not isinstance(payload, dict):
        return f"not a JSON object but {type(payload).__name__}"
    recorded = payload.get(SEAL_KEY)
    if not isinstance(recorded, str):
        return f"it carries no {SEAL_KEY} (written by older code, or damaged)"
    if recorded != content_digest(payload):
        return f"its content does not match its {SEAL_KEY} (edited by hand or damaged on disk)"
    return ""


class CorruptFileError(ValueError):
    """A result or plan file that cannot be parsed; the message names it and how to recover."""


def read_json(path: str | Path, recover: str = "") -> Any:
    """Parse a JSON file; a damaged one raises :class:`CorruptFileError` naming it (and ``recover``, the fix)."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{path} is corrupt (not valid JSON: {error})" + (f": {recover}" if recover else "")
                               ) from None


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")


def check_safe_name(value: Any, field: str) -> str:
    """A name that becomes part of a path (sweep, dataset, model, label) must stay one path component."""
    text = str(value)
    if not SAFE_NAME.fullmatch(text) or ".." in text or len(text) > 200:
        raise ValueError(f"{field}={text!r} is not a safe name for a directory: use letters, digits and . _ = , + - "
                         "(no '/', no '..', not starting with a dot)")
    return text


def register_resolvers() -> None:
    """``${safe_name:VALUE,FIELD}`` in conf/: a name that becomes part of a path is checked while Hydra composes,
    before it creates any directory, for every command (the error names FIELD). ``${abspath:PATH}``: PATH made
    absolute against the directory the command runs from."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("safe_name"):
        OmegaConf.register_new_resolver("safe_name",
                                        lambda value, field="sweep.name": check_safe_name(value, str(field)))
    if not OmegaConf.has_resolver("abspath"):
        # Results are named by absolute paths in jobs.json, deferred.json and logs: a SLURM job, a later
        # `status` or a rerun from another directory must find the same files.
        OmegaConf.register_new_resolver("abspath", lambda value: os.path.abspath(os.path.expanduser(str(value))))
    if not OmegaConf.has_resolver("or_default"):
        # ``checkpoint``: an external model's model.weights when set, else the model `audiocert train` wrote.
        OmegaConf.register_new_resolver("or_default", lambda value, default: default if value is None else value)


def inside(path: str | Path, root: str | Path) -> Path:
    """``path`` resolved, after checking it lies inside ``root`` (results never land outside their directory)."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise ValueError(f"refusing to write {path}: it lies outside {root}")
    return resolved
