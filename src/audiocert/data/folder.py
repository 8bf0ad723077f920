"""Any labelled audio: a class-per-folder tree (``DIR/<class>/**/*.{wav,flac}``) or a manifest (CSV or TSV rows
``path,label[,split]``), read into the same :class:`Manifest` the LibriSpeech scan gives, so the split, the crops
and every check downstream are the LibriSpeech reader's.

* Labels: the class names (folder names, or the manifest's labels), sorted, or ``dataset.classes`` in its order;
  label i is class i. A :class:`Manifest` keeps integer "speakers" 0 .. K-1 and :class:`FolderScan` the names.
* Split: the manifest's own ``split`` column (train / test) when it has one, else the seeded, utterance-disjoint
  per-class split of :func:`audiocert.data.splits.split_utterances` (``dataset.test_fraction``, ``split_seed``).
* Checks, each naming the file: a missing file (manifest), an unreadable, empty or multi-channel one (header read,
  no decoding), a wrong rate (resampled with torchaudio when ``dataset.resample=true``, else refused), a silent
  one (all samples zero; found when it is read, since finding it earlier means decoding every file); files shorter
  than a crop are skipped with one warning (never padded).
* The scan is cached as JSON beside the corpus (as the LibriSpeech scan is), keyed by the scan's parameters and
  fingerprinted by a digest of every file's relative path, size and mtime (and the manifest's bytes): a cache hit
  stats the files but reads no header.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import soundfile as sf

from audiocert.data.audio import AudioFileError, PathLike
from audiocert.data.manifest import Manifest, Utterance
from audiocert.data.manifest_cache import default_cache_dir
from audiocert.provenance import atomic_write_text, stable_hash

AUDIO_SUFFIXES = (".wav", ".flac")
FOLDER_CACHE_VERSION = 1
SPLITS = ("train", "test")


class FolderDatasetError(ValueError):
    """A folder dataset or manifest that cannot be used; the message (one line) names the file or setting."""


@dataclass
class FolderScan:
    """A scanned folder dataset: the manifest (labels 0 .. K-1), the class names, each file's split (from the
    manifest's split column; empty: a seeded split) and the fingerprint of the listing."""

    manifest: Manifest
    class_names: list[str]
    splits: dict[str, str] = field(default_factory=dict)  # utt_id -> train | test
    fingerprint: str = ""


def _class_dirs(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _audio_files(directory: Path) -> list[Path]:
    found = []
    for base, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(base) / f for f in files if f.lower().endswith(AUDIO_SUFFIXES) and not f.startswith(".")]
    return sorted(found)


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise FolderDatasetError(f"dataset.root={root}: no such directory: point it at a folder with one "
                                 "sub-folder of audio files (.wav, .flac) per class, or give dataset.manifest=FILE")


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def read_manifest_rows(path: Path) -> list[tuple[int, str, str, str | None]]:
    """(line, path, label, split or None) of a CSV/TSV manifest; an optional header names path,label[,split]."""
    if not path.is_file():
        raise FolderDatasetError(f"dataset.manifest={path}: no such file")
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.reader(handle, delimiter=_delimiter(path)), start=1):
            cells = [c.strip() for c in row]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if line == 1 and cells[0].lower() == "path":
                continue
            if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
                raise FolderDatasetError(f"{path} line {line}: expected path,label[,split], got {row}")
            split = cells[2].lower() if len(cells) == 3 and cells[2] else None
            if split is not None and split not in SPLITS:
                raise FolderDatasetError(f"{path} line {line}: split {cells[2]!r} must be train or test")
            rows.append((line, cells[0], cells[1], split))
    if not rows:
        raise FolderDatasetError(f"dataset.manifest={path}: lists no files")
    return rows


def _listing(root: Path, manifest: Path | None, classes: Sequence[str] | None
             ) -> tuple[list[str], list[tuple[Path, str, str | None]]]:
    """(class names in label order, [(file, class, split)]); a missing file or class is refused naming it."""
    if manifest is None:
        _check_root(root)
        present = _class_dirs(root)
        names = list(classes) if classes else present
        if missing := [c for c in names if c not in present]:
            raise FolderDatasetError(f"dataset.classes names {missing}, which are not folders of {root} "
                                     f"(folders: {present[:20]})")
        return names, [(f, c, None) for c in names for f in _audio_files(root / c)]
    rows = read_manifest_rows(manifest)
    base = manifest.parent
    entries = [((base / p) if not os.path.isabs(p) else Path(p), label, split) for _, p, label, split in rows]
    if missing := [(line, str(e[0])) for (line, *_), e in zip(rows, entries, strict=True) if not e[0].is_file()]:
        line, first = missing[0]
        raise FolderDatasetError(f"{manifest} line {line}: audio file {first} does not exist"
                                 + (f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""))
    present = sorted({label for _, label, _ in entries})
    names = list(classes) if classes else present
    if unknown := sorted(set(present) - set(names)):
        raise FolderDatasetError(f"{manifest} has labels {unknown[:20]} that dataset.classes does not list")
    return names, entries


def class_names(root: PathLike, manifest: PathLike | None = None, classes: Sequence[str] | None = None) -> list[str]:
    """The class names of a folder dataset, in label order (no header reads)."""
    manifest_p = None if manifest is None else Path(manifest).expanduser().resolve()
    if classes:
        return [str(c) for c in classes]
    if manifest_p is None:
        root_p = Path(root).expanduser().resolve()
        _check_root(root_p)
        return _class_dirs(root_p)
    return sorted({label for _, _, label, _ in read_manifest_rows(manifest_p)})


@functools.lru_cache(maxsize=32)
def _count(root: str, manifest: str | None, classes: tuple[str, ...] | None, stamp: tuple) -> int:
    return len(class_names(root, manifest, classes))


def count_classes(root: Any, manifest: Any = None, classes: Any = None) -> int:
    """``${dataset_classes:${dataset.root},${dataset.manifest},${dataset.classes}}``: dataset.num_classes of a
    folder dataset, counted when the config is composed (so every command knows it before it reads audio)."""
    names = None if classes is None else tuple(str(c) for c in classes)
    target = Path(str(manifest if manifest is not None else root)).expanduser()
    try:
        st = target.stat()
        stamp: tuple = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = ()
    count = _count(str(root), None if manifest is None else str(manifest), names, stamp)
    if count < 2:
        raise FolderDatasetError(f"dataset.root={root}: has {count} class(es); a classifier needs at least 2")
    return count


def _fingerprint(entries: Sequence[tuple[Path, str, str | None]], manifest: Path | None) -> str:
    digest = hashlib.sha256()
    if manifest is not None:
        digest.update(manifest.read_bytes())
    for path, label, split in entries:
        st = path.stat()
        digest.update(f"{path}\t{label}\t{split}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _headers(entries: Sequence[tuple[Path, str, str | None]]) -> list[tuple[int, int]]:
    """(frames, rate) of each file from its header; every unusable file refused in one line naming it."""
    out, bad = [], []
    for path, _, _ in entries:
        try:
            if path.stat().st_size == 0:
                raise ValueError("file is empty (0 bytes)")
            info = sf.info(str(path))
            if info.channels != 1:
                raise ValueError(f"has {info.channels} channels; multi-channel audio is refused, not down-mixed")
            if info.frames <= 0 or info.frames >= 2**62:
                raise ValueError("contains no audio or does not record its length")
            out.append((int(info.frames), int(info.samplerate)))
        except Exception as error:  # soundfile raises several types for a corrupt file
            bad.append(f"{path}: {' '.join(str(error).split())}")
    if bad:
        more = f" (and {len(bad) - 1} more unusable file(s))" if len(bad) > 1 else ""
        raise AudioFileError(f"unusable audio file {bad[0]}{more}: replace or remove it", bad[0].split(":")[0])
    return out


def scan_folder(root: PathLike, manifest: PathLike | None = None, classes: Sequence[str] | None = None, *,
                sample_rate: int = 16000, min_samples: int = 0,
                cache_dir: PathLike | None | Literal[False] = None) -> FolderScan:
    """Scan a class-per-folder tree or a manifest into a :class:`FolderScan` (headers only; cached)."""
    root_p = Path(root).expanduser().resolve()
    manifest_p = None if manifest is None else Path(manifest).expanduser().resolve()
    names, entries = _listing(root_p, manifest_p, classes)
    if empty := [c for c in names if not any(label == c for _, label, _ in entries)]:
        raise FolderDatasetError(f"class(es) {empty[:10]} of {manifest_p or root_p} have no .wav or .flac files")
    fingerprint = _fingerprint(entries, manifest_p)
    params = {"version": FOLDER_CACHE_VERSION, "root": str(root_p), "manifest": str(manifest_p),
              "classes": names, "min_samples": min_samples, "sample_rate": sample_rate}
    cache = None
    if cache_dir is not False:
        cdir = default_cache_dir(manifest_p.parent if manifest_p else root_p) if cache_dir is None else Path(cache_dir)
        cache = None if cdir is None else cdir / f"folder-{stable_hash(params)}.json"
    headers = _cached_headers(cache, fingerprint, len(entries))
    if headers is None:
        headers = _headers(entries)
        if cache is not None:
            try:
                atomic_write_text(cache, json.dumps({"fingerprint": fingerprint, "headers": headers}))
            except OSError:
                pass  # the next scan reads the headers again
    return _build(root_p, manifest_p, names, entries, headers, sample_rate, min_samples, fingerprint, cache)


def _cached_headers(cache: Path | None, fingerprint: str, count: int) -> list[tuple[int, int]] | None:
    if cache is None or not cache.is_file():
        return None
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        headers = [(int(f), int(r)) for f, r in data["headers"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return headers if data.get("fingerprint") == fingerprint and len(headers) == count else None


def _build(root: Path, manifest: Path | None, names: list[str], entries: Sequence[tuple[Path, str, str | None]],
           headers: Sequence[tuple[int, int]], sample_rate: int, min_samples: int, fingerprint: str,
           cache: Path | None) -> FolderScan:
    from audiocert.data.audio import _resampled_length

    label_of = {c: i for i, c in enumerate(names)}
    base = manifest.parent if manifest else root
    utterances, splits, skipped = [], {}, []
    for (path, label, split), (frames, rate) in zip(entries, headers, strict=True):
        if _resampled_length(frames, rate, sample_rate) < min_samples:
            skipped.append(str(path))
            continue
        utt_id = os.path.relpath(path, base)
        utterances.append(Utterance(label_of[label], 0, utt_id, str(path), frames, rate))
        if split is not None:
            splits[utt_id] = split
    utterances.sort(key=lambda u: (u.speaker, u.chapter, u.utt_id))
    result = Manifest(root=str(base), subset="", speakers=list(range(len(names))), utterances=utterances,
                      sample_rate=sample_rate, min_samples=min_samples, num_skipped_short=len(skipped),
                      skipped_short_example=skipped[0] if skipped else None,
                      cache_path=None if cache is None else str(cache))
    if splits and len(splits) != len(utterances):
        unsplit = next(u.path for u in utterances if u.utt_id not in splits)
        raise FolderDatasetError(f"{manifest}: some rows give a split and others do not (e.g. {unsplit}): give "
                                 "every row a split, or none (a seeded split)")
    return FolderScan(result, names, splits, fingerprint)


def manifest_split(scan: FolderScan) -> tuple[list[Utterance], list[Utterance]]:
    """The manifest's own train / test split; a class with no file in one of them is refused, naming it."""
    train = [u for u in scan.manifest.utterances if scan.splits[u.utt_id] == "train"]
    test = [u for u in scan.manifest.utterances if scan.splits[u.utt_id] == "test"]
    for part, utts in (("train", train), ("test", test)):
        if missing := [scan.class_names[i] for i in scan.manifest.speakers if all(u.speaker != i for u in utts)]:
            raise FolderDatasetError(f"the manifest's {part} split has no file of class(es) {missing[:10]}")
    return train, test


def register_folder_resolver() -> None:
    """``${dataset_classes:ROOT,MANIFEST,CLASSES}`` (conf/dataset/folder.yaml's num_classes)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("dataset_classes"):
        OmegaConf.register_new_resolver("dataset_classes", count_classes)
