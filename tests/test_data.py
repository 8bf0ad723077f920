"""Tests for audiocert.data on a tiny LibriSpeech tree written into tmp_path with real FLAC files."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from audiocert.data import (
    AudioDataWarning,
    AudioFileError,
    CropDataset,
    DatasetLayoutError,
    DatasetNotFoundError,
    Manifest,
    build_datasets,
    load_audio,
    scan_librispeech,
    split_utterances,
)
from audiocert.data.cache_trust import SAMPLED_FILES

SR = 16000
SUBSET = "train-clean-360"
SPEAKERS = {19: ("F", "Kara Shallenberg"), 26: ("M", "Denny Sayers"), 103: ("F", "Karen Savage")}
CHAPTER = {19: 198, 26: 495, 103: 1240}
CROP = 8000  # 0.5 s: every utterance of the tiny tree (1-2 s) is longer


def _audio(n: int, seed: int, freq: float = 220.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _chapter_dir(root: Path, spk: int, chap: int | None = None) -> Path:
    d = root / SUBSET / str(spk) / str(CHAPTER[spk] if chap is None else chap)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write_utt(
    root: Path, spk: int, utt: int, n: int, sr: int = SR, seed: int = 0, channels: int = 1
) -> Path:
    path = _chapter_dir(root, spk) / f"{spk}-{CHAPTER[spk]}-{utt:04d}.flac"
    wav = _audio(n, seed)
    if channels > 1:
        wav = np.stack([wav] * channels, axis=1)
    sf.write(path, wav, sr, format="FLAC", subtype="PCM_16")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """tmp_path/LibriSpeech with 3 speakers x 4 utterances of 1-2 s, trans.txt and SPEAKERS.TXT."""
    root = tmp_path / "LibriSpeech"
    rng = random.Random(0)
    for k, spk in enumerate(SPEAKERS):
        lines = []
        for utt in range(4):
            _write_utt(root, spk, utt, n=rng.randint(SR, 2 * SR), seed=100 * k + utt)
            lines.append(f"{spk}-{CHAPTER[spk]}-{utt:04d} HELLO WORLD")
        (_chapter_dir(root, spk) / f"{spk}-{CHAPTER[spk]}.trans.txt").write_text("\n".join(lines) + "\n")
    rows = [";ID  |SEX| SUBSET           |MINUTES| NAME", "; comment line"]
    rows += [f"{spk:<5}| {sex} | {SUBSET}  | 25.03 | {name}" for spk, (sex, name) in SPEAKERS.items()]
    (root / "SPEAKERS.TXT").write_text("\n".join(rows) + "\n")
    return root


def _cfg(root: Path, **overrides):
    cfg = dict(
        name="tiny",
        root=str(root),
        subset=SUBSET,
        speakers=None,
        num_classes=3,
        sample_rate=SR,
        crop_samples=CROP,
        test_fraction=0.25,
        train_crops_per_speaker=5,
        test_crops_per_speaker=4,
        split_seed=0,
        resample=True,
    )
    cfg.update(overrides)
    return OmegaConf.create(cfg)


def _scan(root: Path, **kw):
    kw.setdefault("cache_dir", root.parent / "cache")
    return scan_librispeech(root, SUBSET, **kw)


# ------------------------------------------------------------------------------------------ scan


def test_scan_finds_everything(corpus: Path):
    m = _scan(corpus)
    assert m.speakers == [19, 26, 103]
    assert len(m.utterances) == 12
    assert not m.from_cache
    for u in m.utterances:
        assert Path(u.path).is_file() and Path(u.path).is_absolute()
        assert u.sample_rate == SR and SR <= u.num_frames <= 2 * SR
        assert u.num_frames == sf.info(u.path).frames
        assert Path(u.path).name == f"{u.utt_id}.flac" and u.utt_id.startswith(f"{u.speaker}-{u.chapter}-")
    assert m.speaker_info[26].sex == "M" and m.speaker_info[103].name == "Karen Savage"
    assert m.speaker_info[19].minutes == pytest.approx(25.03)

    only = _scan(corpus, speakers=[26, 19])
    assert only.speakers == [19, 26] and {u.speaker for u in only.utterances} == {19, 26}


def test_scan_default_cache_dir_next_to_root(corpus: Path):
    m = scan_librispeech(corpus, SUBSET)
    assert m.cache_path is not None and Path(m.cache_path).parent == corpus.parent / ".audiocert-cache"
    assert scan_librispeech(corpus, SUBSET).from_cache


def test_manifest_cache_hit_does_not_reread_headers(corpus: Path, monkeypatch):
    first = _scan(corpus)
    assert Path(first.cache_path).is_file()

    def boom(*a, **k):
        raise AssertionError("soundfile.info called on a cache hit")

    monkeypatch.setattr(sf, "info", boom)
    second = _scan(corpus)
    assert second.from_cache
    assert second == first


def test_manifest_cache_invalidated_when_file_added(corpus: Path):
    assert len(_scan(corpus).utterances) == 12
    new = _write_utt(corpus, 26, 99, n=SR, seed=7)
    m = _scan(corpus)
    assert not m.from_cache and len(m.utterances) == 13
    assert str(new) in {u.path for u in m.utterances}
    assert _scan(corpus).from_cache


def test_corrupt_cache_is_ignored_and_rebuilt(corpus: Path):
    first = _scan(corpus)
    Path(first.cache_path).write_text('{"version": 1, "key": ')  # truncated JSON
    with pytest.warns(AudioDataWarning, match="corrupt manifest cache"):
        m = _scan(corpus)
    assert not m.from_cache and m == first
    assert _scan(corpus).from_cache  # rewritten
    assert not [p for p in Path(first.cache_path).parent.iterdir() if p.name.endswith(".tmp")]


# A cache hit trusts what the cache recorded (directory mtimes, racy directories listed again, sampled files) and
# does not stat every file; see audiocert.data.scan's module docstring.
TREE_SPEAKERS, TREE_CHAPTERS, TREE_FILES = 8, 2, 12  # 192 files: well above the sampled files + directories


def _tree(tmp_path: Path, backdate: bool = True) -> Path:
    """LibriSpeech/<SUBSET> with TREE_SPEAKERS x TREE_CHAPTERS x TREE_FILES 1-second FLAC copies (distinct
    inodes, so a file rewritten in place changes only itself). ``backdate``: every file and directory an hour
    old, as a corpus extracted long ago (then no directory is within the racy window of the first scan)."""
    root = tmp_path / "LibriSpeech"
    source = tmp_path / "source.flac"
    sf.write(source, _audio(SR, 0), SR, format="FLAC", subtype="PCM_16")
    for s in range(TREE_SPEAKERS):
        for c in range(TREE_CHAPTERS):
            d = root / SUBSET / str(200 + s) / str(10 + c)
            d.mkdir(parents=True)
            for u in range(TREE_FILES):
                shutil.copyfile(source, d / f"{200 + s}-{10 + c}-{u:04d}.flac")
    if backdate:
        _backdate(root)
    return root


def _backdate(root: Path, seconds: float = 3600) -> None:
    old = time.time_ns() - int(seconds * 1e9)
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):  # children first: utime keeps dir mtimes
        os.utime(path, ns=(old, old))
    os.utime(root / SUBSET, ns=(old, old))


def _sampled(manifest: Manifest) -> set[str]:
    """utt_ids of the files a cache hit checks one by one (recorded in the cache file)."""
    trust = json.loads(Path(manifest.cache_path).read_text())["trust"]
    return {utt_id for _, _, utt_id, _, _ in trust["sample"]}


def _first_file(root: Path) -> Path:
    """The first file in sorted order: always one of the sampled files."""
    return root / SUBSET / "200" / "10" / "200-10-0000.flac"


@contextmanager
def _counting_stats():
    """Counts every stat of a file or directory made through os.stat / os.lstat (Path.stat, os.path.isfile, ...)
    and os.scandir's DirEntry.stat."""
    calls = {"stat": 0}
    real_stat, real_lstat, real_scandir = os.stat, os.lstat, os.scandir

    def stat(*a, **k):
        calls["stat"] += 1
        return real_stat(*a, **k)

    def lstat(*a, **k):
        calls["stat"] += 1
        return real_lstat(*a, **k)

    class Entry:
        def __init__(self, entry):
            self._entry = entry

        def __getattr__(self, name):
            return getattr(self._entry, name)

        def stat(self, *a, **k):
            calls["stat"] += 1
            return self._entry.stat(*a, **k)

    @contextmanager
    def scandir(*a, **k):
        with real_scandir(*a, **k) as it:
            yield (Entry(e) for e in it)

    os.stat, os.lstat, os.scandir = stat, lstat, scandir
    try:
        yield calls
    finally:
        os.stat, os.lstat, os.scandir = real_stat, real_lstat, real_scandir


def test_manifest_cache_hit_does_not_stat_every_file(tmp_path: Path):
    root = _tree(tmp_path)
    files = TREE_SPEAKERS * TREE_CHAPTERS * TREE_FILES
    with _counting_stats() as miss:
        assert not _scan(root).from_cache
    assert miss["stat"] >= files  # a full scan stats every file (its size)
    with _counting_stats() as hit:
        m = _scan(root)
    assert m.from_cache and len(m.utterances) == files
    # one stat per speaker and chapter directory and per sampled file, plus a few for root, subset, SPEAKERS.TXT
    # and the cache file itself (and for resolving root, an lstat per directory above it: an xdist worker's
    # tmp_path lies one directory deeper, popen-gwN)
    directories = TREE_SPEAKERS * (1 + TREE_CHAPTERS)
    deeper = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 0
    assert hit["stat"] <= directories + SAMPLED_FILES + 10 + deeper < files


@pytest.mark.parametrize("change", ["add", "remove", "rename"])
def test_manifest_cache_invalidated_by_file_changes(tmp_path: Path, change: str):
    root = _tree(tmp_path)
    first = _scan(root)
    chapter = root / SUBSET / "203" / "11"
    victim = chapter / "203-11-0005.flac"
    assert victim.stem not in _sampled(first)  # the directory's mtime must tell
    if change == "add":
        shutil.copyfile(victim, chapter / "203-11-0099.flac")
    elif change == "remove":
        victim.unlink()
    else:
        victim.rename(chapter / "203-11-0077.flac")
    m = _scan(root)
    assert not m.from_cache
    on_disk = sorted(str(p) for p in (root / SUBSET).rglob("*.flac"))
    assert sorted(u.path for u in m.utterances) == on_disk != sorted(u.path for u in first.utterances)
    assert _scan(root).from_cache


@pytest.mark.parametrize("change", ["add speaker", "remove speaker", "rename speaker", "add chapter",
                                    "remove chapter", "rename chapter"])
def test_manifest_cache_invalidated_by_directory_changes(tmp_path: Path, change: str):
    root = _tree(tmp_path)
    assert len(_scan(root).speakers) == TREE_SPEAKERS
    subset = root / SUBSET
    if change == "add speaker":
        shutil.copytree(subset / "203", subset / "299")
        for p in (subset / "299").rglob("*.flac"):
            p.rename(p.with_name(p.name.replace("203-", "299-")))
    elif change == "remove speaker":
        shutil.rmtree(subset / "203")
    elif change == "rename speaker":
        (subset / "203").rename(subset / "298")
    elif change == "add chapter":
        (subset / "203" / "12").mkdir()
        shutil.copyfile(_first_file(root), subset / "203" / "12" / "203-12-0000.flac")
    elif change == "remove chapter":
        shutil.rmtree(subset / "203" / "11")
    else:
        (subset / "203" / "11").rename(subset / "203" / "13")
    if change.startswith("rename"):  # a rescan, not the cache, finds the names no longer match their directories
        with pytest.raises(DatasetLayoutError):
            _scan(root)
        return
    m = _scan(root)
    assert not m.from_cache
    on_disk = sorted(str(p) for p in subset.rglob("*.flac"))
    assert sorted(u.path for u in m.utterances) == on_disk
    assert m.speakers == sorted(int(p.name) for p in subset.iterdir())


@pytest.mark.parametrize("change", ["size", "mtime"])
def test_manifest_cache_invalidated_when_a_sampled_file_changes_in_place(tmp_path: Path, change: str):
    root = _tree(tmp_path)
    assert _scan(root).from_cache is False
    path = _first_file(root)
    directory_mtime = path.parent.stat().st_mtime_ns
    if change == "size":  # rewritten in place (same inode): its directory does not change
        sf.write(path, _audio(SR + 4000, 1), SR, format="FLAC", subtype="PCM_16")
    else:
        os.utime(path, ns=(time.time_ns(), time.time_ns()))
    assert path.parent.stat().st_mtime_ns == directory_mtime
    m = _scan(root)
    assert not m.from_cache
    (u,) = [u for u in m.utterances if u.path == str(path)]
    assert u.num_frames == (SR + 4000 if change == "size" else SR)


def test_racy_directory_is_listed_again(tmp_path: Path):
    """A directory changed within the same timestamp tick as its recorded mtime looks unchanged; one that was
    changed just before the scan listed it is listed again on a hit, so such a change is still caught."""
    root = _tree(tmp_path)
    chapter = root / SUBSET / "205" / "10"
    now = time.time_ns()
    os.utime(chapter, ns=(now, now))  # changed just now: racy when the scan lists it
    assert not _scan(root).from_cache
    hit = _scan(root)  # listed again, unchanged
    assert hit.from_cache
    recorded = chapter.stat().st_mtime_ns
    victim = chapter / "205-10-0004.flac"
    assert victim.stem not in _sampled(hit)  # neither the mtime nor the sample can tell: only the listing
    victim.unlink()
    os.utime(chapter, ns=(recorded, recorded))  # as if the removal fell in the recorded tick
    m = _scan(root)
    assert not m.from_cache and len(m.utterances) == TREE_SPEAKERS * TREE_CHAPTERS * TREE_FILES - 1


def test_missing_root_explains_how_to_get_data(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as ei:
        scan_librispeech(tmp_path / "nowhere" / "LibriSpeech", SUBSET)
    assert isinstance(ei.value, FileNotFoundError)
    msg = str(ei.value)
    assert "LibriSpeech" in msg and "audiocert corpus" in msg and "openslr.org/12" in msg
    assert "dataset.root" in msg and str(tmp_path / "nowhere") in msg


def test_missing_subset_and_speaker_list_what_is_there(corpus: Path):
    with pytest.raises(DatasetNotFoundError, match="train-clean-360") as ei:
        scan_librispeech(corpus, "train-clean-100")
    assert "train-clean-100" in str(ei.value)
    with pytest.raises(DatasetNotFoundError, match="root should be"):
        scan_librispeech(corpus.parent, SUBSET)  # pointed at the parent of LibriSpeech
    with pytest.raises(DatasetNotFoundError, match=r"\[999\].*19, 26, 103"):
        _scan(corpus, speakers=[19, 999])


def test_misplaced_file_is_a_layout_error(corpus: Path):
    bad = _chapter_dir(corpus, 26) / f"19-{CHAPTER[19]}-0007.flac"
    sf.write(bad, _audio(SR, 1), SR)
    with pytest.raises(DatasetLayoutError, match=str(bad)):
        _scan(corpus)


# ----------------------------------------------------------------------------------- bad files


def _assert_names(exc: pytest.ExceptionInfo, path: Path) -> None:
    assert str(path) in str(exc.value)
    assert exc.value.path == str(path)
    assert "To fix" in str(exc.value)


def test_corrupt_flac(corpus: Path):
    bad = _chapter_dir(corpus, 19) / f"19-{CHAPTER[19]}-0050.flac"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioFileError, match="corrupt") as ei:
        _scan(corpus)
    _assert_names(ei, bad)
    with pytest.raises(AudioFileError, match="corrupt") as ei:
        load_audio(bad)
    _assert_names(ei, bad)


def _header_only_flac(path: Path) -> None:
    """A syntactically valid FLAC (STREAMINFO, total_samples=0) with no audio frames."""
    v = (SR << 44) | (0 << 41) | (15 << 36) | 0
    streaminfo = struct.pack(">HH", 4096, 4096) + bytes(6) + v.to_bytes(8, "big") + bytes(16)
    path.write_bytes(b"fLaC" + bytes([0x80]) + (34).to_bytes(3, "big") + streaminfo)


@pytest.mark.parametrize("kind", ["zero_bytes", "header_only"])
def test_empty_flac(corpus: Path, kind: str):
    bad = _chapter_dir(corpus, 103) / f"103-{CHAPTER[103]}-0050.flac"
    if kind == "zero_bytes":
        sf.write(bad, np.zeros(0, dtype=np.int16), SR, format="FLAC")  # libsndfile writes 0 bytes
        assert bad.stat().st_size == 0
    else:
        _header_only_flac(bad)
    with pytest.raises(AudioFileError) as ei:
        _scan(corpus)
    _assert_names(ei, bad)
    with pytest.raises(AudioFileError) as ei:
        load_audio(bad)
    _assert_names(ei, bad)


def test_stereo_refused(corpus: Path):
    bad = _write_utt(corpus, 26, 50, n=SR, channels=2)
    with pytest.raises(AudioFileError, match="2 channels.*mono") as ei:
        _scan(corpus)
    _assert_names(ei, bad)
    with pytest.raises(AudioFileError, match="mono") as ei:
        load_audio(bad)
    _assert_names(ei, bad)


def test_wrong_sample_rate_load(tmp_path: Path):
    path = tmp_path / "8k.flac"
    sf.write(path, _audio(4000, 0), 8000, format="FLAC", subtype="PCM_16")
    with pytest.warns(AudioDataWarning, match=f"{path}.*8000 Hz"):
        wav = load_audio(path, SR, resample=True)
    assert wav.dtype == torch.float32 and wav.shape == (8000,)  # length doubles
    assert wav.abs().max() <= 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(path, SR, resample=True)  # warned once per file
    with pytest.raises(AudioFileError, match="8000 Hz") as ei:
        load_audio(path, SR, resample=False)
    _assert_names(ei, path)


def test_wrong_sample_rate_scan(corpus: Path):
    # 6000 frames at 8 kHz = 12000 samples at 16 kHz: long enough for an 8000-sample crop only if the
    # min_samples check accounts for resampling.
    path = _write_utt(corpus, 19, 50, n=6000, sr=8000)
    with pytest.warns(AudioDataWarning, match="resampled"):
        m = _scan(corpus, min_samples=CROP)
    (u,) = [u for u in m.utterances if u.path == str(path)]
    assert u.sample_rate == 8000 and u.num_samples(SR) == 12000
    with pytest.raises(AudioFileError, match="resample") as ei:
        _scan(corpus, min_samples=CROP, resample=False)  # refused, also on a cache hit
    assert ei.value.path == str(path) and str(path) in str(ei.value)


def test_short_utterance_skipped_with_warning(corpus: Path):
    short = _write_utt(corpus, 26, 50, n=3000)
    with pytest.warns(AudioDataWarning, match=r"skipped 1 utterance.*padd") as rec:
        m = _scan(corpus, min_samples=CROP)
    assert str(short) in str(rec[0].message)
    assert str(short) not in {u.path for u in m.utterances} and len(m.utterances) == 12
    assert m.num_skipped_short == 1
    with pytest.warns(AudioDataWarning, match="skipped 1"):  # re-emitted from cache
        assert _scan(corpus, min_samples=CROP).from_cache
    # with no minimum it is kept
    assert len(_scan(corpus).utterances) == 13


def test_nan_samples(tmp_path: Path):
    path = tmp_path / "nan.wav"
    wav = _audio(1000, 0)
    wav[10] = np.nan
    wav[20] = np.inf
    sf.write(path, wav, SR, subtype="FLOAT")
    with pytest.raises(AudioFileError, match="2 NaN or inf") as ei:
        load_audio(path)
    _assert_names(ei, path)


def test_missing_file_and_good_file(tmp_path: Path):
    with pytest.raises(AudioFileError, match="does not exist") as ei:
        load_audio(tmp_path / "missing.flac")
    _assert_names(ei, tmp_path / "missing.flac")
    path = tmp_path / "ok.wav"
    sf.write(path, _audio(1234, 0), SR, subtype="PCM_16")
    wav = load_audio(path)
    assert wav.shape == (1234,) and wav.dtype == torch.float32 and wav.abs().max() <= 1.0


# ---------------------------------------------------------------------------------------- split


def test_split_deterministic_and_disjoint(corpus: Path):
    m = _scan(corpus)
    train, test = split_utterances(m, 0.25, seed=0)
    assert split_utterances(m, 0.25, seed=0) == (train, test)
    shuffled = Manifest(**{**m.__dict__, "utterances": random.Random(1).sample(m.utterances, 12)})
    assert split_utterances(shuffled, 0.25, seed=0) == (train, test)  # independent of listing order
    assert {u.path for u in train}.isdisjoint({u.path for u in test})
    assert len(train) + len(test) == 12
    for spk in m.speakers:
        assert sum(u.speaker == spk for u in test) == 1
        assert sum(u.speaker == spk for u in train) == 3
    # extreme fractions still leave >= 1 utterance on each side
    tr, te = split_utterances(m, 0.01, seed=3)
    assert all(sum(u.speaker == s for u in te) == 1 for s in m.speakers)
    tr, te = split_utterances(m, 0.99, seed=3)
    assert all(sum(u.speaker == s for u in tr) == 1 for s in m.speakers)
    with pytest.raises(ValueError, match="test_fraction"):
        split_utterances(m, 1.0, seed=0)


def test_split_needs_two_utterances(corpus: Path):
    m = _scan(corpus)
    m.utterances = [u for u in m.utterances if u.speaker != 26 or u.utt_id.endswith("0000")]
    with pytest.raises(ValueError, match="speaker 26 has 1 usable"):
        split_utterances(m, 0.25, seed=0)


# ---------------------------------------------------------------------------------------- crops


def test_test_crops_deterministic(corpus: Path):
    m = _scan(corpus, min_samples=CROP)
    _, test_utts = split_utterances(m, 0.25, seed=0)
    a = CropDataset(test_utts, m.speakers, crop_samples=CROP, crops_per_speaker=4, mode="test", seed=0)
    b = CropDataset(test_utts, m.speakers, CROP, 4, mode="test", seed=0)  # positional form
    assert len(a) == 12 and a.num_classes == 3 and a.speakers == [19, 26, 103]
    before = [a[i][0] for i in range(len(a))]
    a.set_epoch(5)  # no effect on test crops
    for i in range(len(a)):
        wav, label = a[i]
        assert wav.shape == (CROP,) and wav.dtype == torch.float32
        assert isinstance(label, int) and label == i // 4
        assert torch.equal(wav, before[i]) and torch.equal(wav, b[i][0])
        info = a.describe(i)
        assert info["speaker"] == a.speakers[label] and f"/{info['speaker']}/" in info["path"]
        full = load_audio(info["path"])
        assert torch.equal(wav, full[info["offset"] : info["offset"] + CROP])  # provenance is exact
    assert a[-1][1] == 2


def test_train_crops_vary_by_epoch(corpus: Path):
    m = _scan(corpus, min_samples=CROP)
    train_utts, _ = split_utterances(m, 0.25, seed=0)
    ds = CropDataset(
        train_utts,
        m.speakers,
        crop_samples=CROP,
        crops_per_speaker=6,
        mode="train",
        seed=0,
        max_cached_files=2,
    )
    epoch0 = [ds.describe(i) for i in range(len(ds))]
    x0 = torch.stack([ds[i][0] for i in range(len(ds))])
    ds.set_epoch(1)
    x1 = torch.stack([ds[i][0] for i in range(len(ds))])
    assert not torch.equal(x0, x1)
    ds.set_epoch(0)
    assert torch.equal(x0, torch.stack([ds[i][0] for i in range(len(ds))]))
    assert [ds.describe(i) for i in range(len(ds))] == epoch0
    assert len(ds._cache) <= 2  # LRU bound
    loader = torch.utils.data.DataLoader(ds, batch_size=6, shuffle=False, num_workers=0)
    batches = list(loader)
    assert [tuple(b[0].shape) for b in batches] == [(6, CROP)] * 3
    assert torch.cat([b[1] for b in batches]).tolist() == [0] * 6 + [1] * 6 + [2] * 6
    train_paths = {u.path for u in train_utts}
    assert all(ds.describe(i)["path"] in train_paths for i in range(len(ds)))


def test_crop_dataset_rejects_short_utterance(corpus: Path):
    m = _scan(corpus)
    with pytest.raises(AudioFileError, match="shorter than a crop"):
        CropDataset(m.utterances, m.speakers, crop_samples=3 * SR, crops_per_speaker=2, mode="test")


# ---------------------------------------------------------------------------------------- build


def test_build_datasets(corpus: Path):
    bundle = build_datasets(_cfg(corpus), cache_dir=corpus.parent / "cache")
    assert bundle.speakers == [19, 26, 103] and bundle.num_classes == 3
    assert len(bundle.train) == 15 and len(bundle.test) == 12
    assert {u.path for u in bundle.train_utterances}.isdisjoint({u.path for u in bundle.test_utterances})
    wav, label = bundle.test[5]
    assert wav.shape == (CROP,) and label == 1
    again = build_datasets(_cfg(corpus), cache_dir=corpus.parent / "cache")
    assert again.manifest.from_cache
    assert torch.equal(again.test[7][0], bundle.test[7][0])
    sub = build_datasets(_cfg(corpus, speakers=[103, 19], num_classes=2), cache_dir=False)
    assert sub.speakers == [19, 103] and sub.train[0][1] == 0


def test_build_num_classes_mismatch(corpus: Path):
    with pytest.raises(ValueError, match=r"dataset\.num_classes=10.*3 speakers"):
        build_datasets(_cfg(corpus, num_classes=10), cache_dir=False)


@pytest.mark.parametrize(
    "field,value",
    [
        ("test_fraction", 0.0),
        ("test_fraction", 1.5),
        ("train_crops_per_speaker", 0),
        ("test_crops_per_speaker", -1),
        ("crop_samples", 0),
        ("sample_rate", 0),
        ("resample", "yes"),
        ("speakers", [19, "x"]),
    ],
)
def test_build_rejects_impossible_values(corpus: Path, field: str, value):
    with pytest.raises(ValueError, match=rf"dataset\.{field}") as ei:
        build_datasets(_cfg(corpus, **{field: value}), cache_dir=False)
    assert str(value) in str(ei.value)


def test_build_missing_root_and_plain_mapping(tmp_path: Path, corpus: Path):
    with pytest.raises(FileNotFoundError, match="audiocert corpus"):
        build_datasets(_cfg(tmp_path / "absent"), cache_dir=False)
    cfg = {
        "root": corpus,
        "num_classes": 3,
        "crop_samples": CROP,
        "train_crops_per_speaker": 2,
        "test_crops_per_speaker": 2,
    }
    bundle = build_datasets(cfg, cache_dir=False)
    assert len(bundle.train) == 6 and bundle.test[0][0].shape == (CROP,)
    assert os.path.isabs(bundle.manifest.root)
