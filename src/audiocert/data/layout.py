"""The LibriSpeech directory layout: the corpus root, the subset's speaker directories, chapter FLAC entries.

Missing pieces raise :class:`DatasetNotFoundError` saying what is there and how to obtain the corpus; a file
where the layout says it cannot be raises :class:`DatasetLayoutError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_FLAC_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$")


class DatasetNotFoundError(FileNotFoundError):
    """The corpus root, the subset directory, or a requested speaker is not on disk."""


class DatasetLayoutError(ValueError):
    """A file is where the LibriSpeech layout says it cannot be (e.g. speaker ID of name != dir)."""


def _missing_root_message(root: Path, subset: str) -> str:
    return (
        f"LibriSpeech root directory not found: {root}\n"
        f"dataset.root must be the `LibriSpeech` directory itself (the one that contains SPEAKERS.TXT and "
        f"{subset}/).\n"
        "  * Real corpus: download train-clean-360.tar.gz from https://www.openslr.org/12 (OpenSLR resource "
        "12), extract it (`tar xzf train-clean-360.tar.gz` creates LibriSpeech/train-clean-360/), and set "
        "dataset.root=/path/to/LibriSpeech.\n"
        "  * Synthetic corpus: generate it with `audiocert corpus` and point dataset.root at the LibriSpeech "
        "directory it writes."
    )


def _list_for_message(items: Sequence[Any], limit: int = 50) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in total)" if len(items) > limit else "")


def _numeric_subdirs(directory: Path) -> dict[int, Path]:
    """Subdirectories whose names are all digits (speaker / chapter dirs); others are ignored."""
    out: dict[int, Path] = {}
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.isdigit() and entry.is_dir():
                out[int(entry.name)] = Path(entry.path)
    return out


def _flac_entries(chap_dir: str) -> list[os.DirEntry]:
    """The FLAC entries of a chapter directory, sorted by name (hidden files, e.g. macOS ``._*``, ignored)."""
    with os.scandir(chap_dir) as it:
        return sorted(
            (e for e in it if e.name.endswith(".flac") and not e.name.startswith(".")), key=lambda e: e.name
        )


def _speaker_dirs(root_p: Path, subset: str) -> tuple[Path, dict[int, Path]]:
    """The subset directory of ``root_p`` and its speaker directories; DatasetNotFoundError naming what is there."""
    if not root_p.is_dir():
        raise DatasetNotFoundError(_missing_root_message(root_p, subset))
    subset_dir = root_p / subset
    if not subset_dir.is_dir():
        present = sorted(p.name for p in root_p.iterdir() if p.is_dir() and not p.name.startswith("."))
        hint = ""
        if (root_p / "LibriSpeech").is_dir():
            hint = f" It looks like dataset.root should be {root_p / 'LibriSpeech'}."
        elif root_p.name == subset:
            hint = f" dataset.root points at the subset itself; it should be {root_p.parent}."
        raise DatasetNotFoundError(
            f"subset directory not found: {subset_dir}. Directories in {root_p}: "
            f"{_list_for_message(present) or '(none)'}.{hint} Set dataset.subset to one of them, or "
            "download/extract the subset (https://www.openslr.org/12) or generate it with `audiocert corpus`."
        )
    available = _numeric_subdirs(subset_dir)
    if not available:
        raise DatasetNotFoundError(
            f"no speaker directories (numeric names) in {subset_dir}; the layout must be "
            "<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac"
        )
    return subset_dir, available


def _speakers_in_scope(speakers: Iterable[int] | None, available: Mapping[int, Path], subset_dir: Path
                       ) -> tuple[list[int] | None, list[int]]:
    """(the requested speaker IDs, None for every speaker; the sorted IDs in scope), checked against ``available``."""
    if speakers is None:
        requested: list[int] | None = None
        in_scope = sorted(available)
    else:
        given = list(speakers)
        requested = []
        for s in given:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                raise ValueError(f"speaker IDs must be integers, got {s!r} in {given!r}")
            requested.append(int(s))
        if not requested:
            raise ValueError("speakers is an empty list; use None for every speaker in the subset")
        if len(set(requested)) != len(requested):
            raise ValueError(f"speakers contains duplicates: {requested}")
        missing = sorted(set(requested) - set(available))
        if missing:
            present = sorted(available)
            raise DatasetNotFoundError(
                f"speaker(s) {missing} not found in {subset_dir}. Speakers present "
                f"({len(available)}): {_list_for_message(present)}. Choose the speakers with "
                f"dataset.speakers=[{','.join(str(s) for s in present[:10])}] "
                f"dataset.num_classes={min(len(present), 10)} (or dataset.speakers=null for every speaker)."
            )
        in_scope = sorted(requested)
    return requested, in_scope
