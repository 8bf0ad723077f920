"""A reader of W&B offline run files (``run-<id>.wandb``) for the tests: what a run really holds.

wandb 0.31 ships no reader (its old datastore module is gone), so the suite reads the file itself. The format is
public: a 7-byte header (``:W&B``, magic 0xBEE1 little-endian, version 0), then LevelDB's log framing (32 KiB
blocks; each record a 7-byte header of CRC-32 over type byte and data, little-endian length, type FULL / FIRST /
MIDDLE / LAST; a block's last < 7 bytes are zero padding), and each reassembled payload a
``wandb_internal_pb2.Record``. Any damage (a bad header, a CRC mismatch, a record cut short, an unparsable
payload) raises ``DamagedRunFile`` naming the file and offset: a test must never pass on a file it misread.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32768
RECORD_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class DamagedRunFile(ValueError):
    """The run file is not what wandb writes: damaged, cut short or not a run file."""


@dataclass
class RunFile:
    """What one offline run holds, record by record (later records win for config and summary)."""

    path: Path
    run_id: str = ""
    job_type: str = ""
    group: str = ""
    name: str = ""
    project: str = ""
    resumed: bool = False
    runs: int = 0  # run records: 2 or more when the run was resumed into the same file set
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None

    def rows_with(self, key: str) -> list[dict[str, Any]]:
        return [row for row in self.history if key in row]

    def media_dir(self) -> Path:
        return self.path.parent / "files"


def payloads(path: Path) -> list[bytes]:
    """The records' payloads in order, after checking the header and every record's CRC."""
    data = Path(path).read_bytes()
    if data[:len(HEADER)] != HEADER:
        raise DamagedRunFile(f"{path}: not a W&B run file (header {data[:7]!r}, expected {HEADER!r})")
    out: list[bytes] = []
    pending: bytearray | None = None
    offset = len(HEADER)
    while offset < len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < RECORD_HEADER:  # the block's trailer: zeros only
            if data[offset:offset + left_in_block].strip(b"\0"):
                raise DamagedRunFile(f"{path}: non-zero block trailer at offset {offset}")
            offset += left_in_block
            continue
        if len(data) - offset < RECORD_HEADER:
            raise DamagedRunFile(f"{path}: record header cut short at offset {offset}")
        checksum, length, kind = struct.unpack("<IHB", data[offset:offset + RECORD_HEADER])
        if kind == 0 and length == 0 and checksum == 0:  # zero fill after the last record of a block
            if data[offset:offset + left_in_block].strip(b"\0"):
                raise DamagedRunFile(f"{path}: zero record header followed by data at offset {offset}")
            offset += left_in_block
            continue
        start = offset + RECORD_HEADER
        chunk = data[start:start + length]
        if len(chunk) != length or RECORD_HEADER + length > left_in_block:
            raise DamagedRunFile(f"{path}: record at offset {offset} cut short ({len(chunk)} of {length} bytes)")
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise DamagedRunFile(f"{path}: CRC mismatch in the record at offset {offset}")
        offset = start + length
        if kind == FULL and pending is None:
            out.append(bytes(chunk))
        elif kind == FIRST and pending is None:
            pending = bytearray(chunk)
        elif kind in (MIDDLE, LAST) and pending is not None:
            pending += chunk
            if kind == LAST:
                out.append(bytes(pending))
                pending = None
        else:
            raise DamagedRunFile(f"{path}: record type {kind} out of order at offset {offset}")
    if pending is not None:
        raise DamagedRunFile(f"{path}: the last record is cut short (FIRST without LAST)")
    return out


def _history_value(item: Any) -> Any:
    return json.loads(item.value_json) if item.value_json else None


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def _put(target: dict[str, Any], item: Any, value: Any) -> None:
    """A value under its key, or (wandb-core splits a logged dict, a table or a media object, into one item per
    leaf with a nested key) under its nested keys, so ``row["certificates"]["_type"]`` reads as it was logged."""
    if item.key or not item.nested_key:
        target[item.key] = value
        return
    *path, last = item.nested_key
    for part in path:
        target = target.setdefault(part, {})
    target[last] = value


def read_run(path: str | Path) -> RunFile:
    """Parse one ``.wandb`` file (or the run directory holding it)."""
    path = Path(path)
    if path.is_dir():
        [path] = sorted(path.glob("*.wandb"))
    run = RunFile(path=path)
    for position, payload in enumerate(payloads(path)):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception as error:  # protobuf's DecodeError
            raise DamagedRunFile(f"{path}: record {position} is not a wandb Record: {error}") from error
        which = record.WhichOneof("record_type")
        if which == "run":
            r = record.run
            run.runs += 1
            run.run_id, run.job_type, run.group = r.run_id, r.job_type, r.run_group
            run.name, run.project, run.resumed = r.display_name, r.project, run.resumed or r.resumed
            for item in r.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif which == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _put(row, item, _history_value(item))
            if record.history.HasField("step"):
                row.setdefault("_step", record.history.step.num)
            run.history.append(row)
        elif which == "summary":
            for item in record.summary.update:
                _put(run.summary, item, json.loads(item.value_json))
            for item in record.summary.remove:
                run.summary.pop(_key(item), None)
        elif which == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif which == "files":
            run.files += [f.path for f in record.files.files]
        elif which in ("artifact", "use_artifact"):
            a = record.artifact if which == "artifact" else record.use_artifact
            run.artifacts.append({"record": which, "name": getattr(a, "name", ""), "type": getattr(a, "type", ""),
                                  "manifest": [(e.path, e.ref, e.digest) for e in a.manifest.contents]
                                  if which == "artifact" else []})
        elif which == "exit":
            run.exit_code = record.exit.exit_code
    return run


def read_runs(wandb_dir: str | Path) -> dict[str, list[RunFile]]:
    """Every offline run under a ``wandb`` directory, by run id (a resumed run has one file per session)."""
    found: dict[str, list[RunFile]] = {}
    for file in sorted(Path(wandb_dir).glob("offline-run-*/*.wandb")):
        run = read_run(file)
        found.setdefault(run.run_id, []).append(run)
    return found
