"""The JSON scan cache of a :class:`Manifest`: where it lives, its key, reading (trusted or stale) and writing."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from audiocert.data.audio import AudioDataWarning, PathLike
from audiocert.data.cache_trust import _stale_reason
from audiocert.data.manifest import CACHE_VERSION, Manifest
from audiocert.provenance import atomic_write_text, stable_hash

log = logging.getLogger("audiocert.data.scan")  # the name the scan's log lines have always carried


def default_cache_dir(root: PathLike) -> Path | None:
    """``<root>/../.audiocert-cache`` if writable, else ``$XDG_CACHE_HOME/audiocert`` (``~/.cache``),
    else None (no caching)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for candidate in (Path(root).resolve().parent / ".audiocert-cache", Path(xdg) / "audiocert"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: building ~100k small lists and Utterances would otherwise trigger
    full collections over every object of a process that imported torch (0.2 s of a 0.3 s cache hit)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_cache(path: Path, key: str, subset_dir: Path, in_scope: Sequence[int]) -> Manifest | None:
    """The cached manifest when its parameters match and the corpus still looks as it recorded, else None."""
    if not path.is_file():
        return None
    try:
        with _gc_paused():
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
            if d.get("version") != CACHE_VERSION or d.get("key") != key:
                return None  # stale: the scan parameters or SPEAKERS.TXT changed
            if why := _stale_reason(subset_dir, in_scope, d["trust"]):
                log.info("manifest cache %s is stale (%s): rescanning", path, why)
                return None
            manifest = Manifest._from_json(d)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        warnings.warn(
            f"ignoring corrupt manifest cache {path} ({exc}); rescanning", AudioDataWarning, stacklevel=3
        )
        return None
    manifest.cache_path = str(path)
    manifest.from_cache = True
    return manifest


def _write_cache(path: Path, manifest: Manifest, key: str, trust: Mapping[str, Any]) -> None:
    """Atomic write: temp file in the same directory, then os.replace. Failures only warn."""
    try:
        atomic_write_text(path, json.dumps(manifest._to_json(key, trust), separators=(",", ":")))
        manifest.cache_path = str(path)
    except OSError as exc:
        warnings.warn(
            f"could not write manifest cache {path} ({exc}); the next run will rescan",
            AudioDataWarning,
            stacklevel=3,
        )


def _cache_key_and_path(root_p: Path, subset: str, requested: list[int] | None, min_samples: int, sample_rate: int,
                        cache_dir: PathLike | None | Literal[False]) -> tuple[str, Path | None]:
    """The cache key (scan parameters and SPEAKERS.TXT's size and mtime) and the cache file (None: no cache)."""
    speakers_txt = root_p / "SPEAKERS.TXT"
    spk_txt_stat = None
    if speakers_txt.is_file():
        st = speakers_txt.stat()
        spk_txt_stat = [st.st_size, st.st_mtime_ns]

    params = {
        "version": CACHE_VERSION,
        "root": str(root_p),
        "subset": subset,
        "speakers": requested,
        "min_samples": min_samples,
        "sample_rate": sample_rate,
    }
    key = stable_hash({**params, "speakers_txt": spk_txt_stat}, length=64)
    cache_path: Path | None = None
    if cache_dir is not False:
        cdir = default_cache_dir(root_p) if cache_dir is None else Path(cache_dir).expanduser()
        if cdir is not None:
            cache_path = cdir / f"manifest-{subset}-{stable_hash(params)}.json"
    return key, cache_path
