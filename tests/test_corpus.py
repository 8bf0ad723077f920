"""Tests of the synthetic LibriSpeech-layout corpus (audiocert.corpus)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from audiocert.corpus import (
    CORPUS_VERSION,
    MARKER_NAME,
    CorpusMismatchError,
    generate_corpus,
    synthesize_utterance,
    voice_parameters,
)
from audiocert.corpus import writer as corpus_writer

SR = 16000
SMALL = {"num_speakers": 3, "utterances_per_speaker": 4, "seed": 7, "min_seconds": 0.6, "max_seconds": 1.0}
TINY = {"num_speakers": 2, "utterances_per_speaker": 2, "min_seconds": 0.5, "max_seconds": 0.7}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpus")
    return root, generate_corpus(root, progress=False, **SMALL)


def _flacs(base: Path) -> list[Path]:
    return sorted(base.rglob("*.flac"))


def _read_all(base: Path) -> dict[str, np.ndarray]:
    return {p.stem: sf.read(p, dtype="float32")[0] for p in _flacs(base)}


def _parse_speakers(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        rows.append([field.strip() for field in line.split("|")])
    return rows


# ------------------------------------------------------------------------------------------------ layout
def test_layout_and_file_names(small_corpus: tuple[Path, Path]) -> None:
    root, base = small_corpus
    assert base == root / "LibriSpeech"
    assert (base / "SPEAKERS.TXT").is_file()
    assert sorted(p.name for p in base.iterdir()) == sorted([".audiocert-corpus.json", "SPEAKERS.TXT",
                                                             "train-clean-360"])
    voices = voice_parameters(SMALL["seed"], SMALL["num_speakers"])
    subset = base / "train-clean-360"
    assert sorted(int(p.name) for p in subset.iterdir()) == sorted(v.speaker_id for v in voices)
    for speaker_dir in subset.iterdir():
        assert re.fullmatch(r"\d{2,4}", speaker_dir.name)
        chapters = list(speaker_dir.iterdir())
        assert 1 <= len(chapters) <= 3
        total = 0
        for chapter_dir in chapters:
            assert chapter_dir.is_dir() and re.fullmatch(r"\d+", chapter_dir.name)
            prefix = f"{speaker_dir.name}-{chapter_dir.name}"
            names = sorted(p.name for p in chapter_dir.iterdir())
            flacs = [n for n in names if n.endswith(".flac")]
            assert names == sorted([*flacs, f"{prefix}.trans.txt"])  # nothing else (no temp files)
            assert flacs == [f"{prefix}-{u:04d}.flac" for u in range(len(flacs))]
            total += len(flacs)
        assert total == SMALL["utterances_per_speaker"]


def test_flac_audio_properties(small_corpus: tuple[Path, Path]) -> None:
    _, base = small_corpus
    files = _flacs(base)
    assert len(files) == SMALL["num_speakers"] * SMALL["utterances_per_speaker"]
    for path in files:
        info = sf.info(path)
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", SR, 1)
        audio, sr = sf.read(path, dtype="float32")
        assert sr == SR and audio.ndim == 1
        assert np.all(np.isfinite(audio))
        peak = float(np.max(np.abs(audio)))
        assert 0.29 <= peak <= 0.71 and peak <= 1.0
        seconds = audio.size / SR
        assert SMALL["min_seconds"] - 1e-3 <= seconds <= SMALL["max_seconds"] + 1e-3
        assert np.std(audio) > 0.01  # not silence


def test_transcripts_match_flacs(small_corpus: tuple[Path, Path]) -> None:
    _, base = small_corpus
    trans_files = sorted(base.rglob("*.trans.txt"))
    assert trans_files
    seen = set()
    for trans in trans_files:
        stems = sorted(p.stem for p in trans.parent.glob("*.flac"))
        lines = trans.read_text().splitlines()
        ids = [line.split(" ", 1)[0] for line in lines]
        assert ids == stems
        for line in lines:
            utt_id, text = line.split(" ", 1)
            assert re.fullmatch(r"[A-Z]+( [A-Z]+)*", text), line
            seen.add(utt_id)
    assert seen == {p.stem for p in _flacs(base)}


def test_speakers_txt(small_corpus: tuple[Path, Path]) -> None:
    _, base = small_corpus
    text = (base / "SPEAKERS.TXT").read_text()
    assert text.startswith(";")
    rows = _parse_speakers(base / "SPEAKERS.TXT")
    voices = {v.speaker_id: v for v in voice_parameters(SMALL["seed"], SMALL["num_speakers"])}
    assert sorted(int(r[0]) for r in rows) == sorted(voices)
    durations: dict[str, float] = {}
    for path in _flacs(base):
        durations[path.parts[-3]] = durations.get(path.parts[-3], 0.0) + sf.info(path).frames / SR
    for speaker, sex, subset, minutes, name in rows:
        assert sex == voices[int(speaker)].sex and sex in ("F", "M")
        assert subset == "train-clean-360"
        assert float(minutes) == pytest.approx(durations[speaker] / 60.0, abs=0.006)
        assert name == voices[int(speaker)].name and name


# -------------------------------------------------------------------------------- marker and idempotence
def test_marker_and_idempotent_second_call(small_corpus: tuple[Path, Path]) -> None:
    root, base = small_corpus
    marker = json.loads((base / MARKER_NAME).read_text())
    assert marker["version"] == CORPUS_VERSION
    assert marker["params"] == {**SMALL, "subset": "train-clean-360", "sample_rate": SR,
                                "min_seconds": 0.6, "max_seconds": 1.0}
    before = {p: p.stat().st_mtime_ns for p in base.rglob("*")}
    assert generate_corpus(root, progress=False, **SMALL) == base
    assert generate_corpus(str(root), progress=True, **SMALL) == base  # str root, progress is no parameter
    assert {p: p.stat().st_mtime_ns for p in base.rglob("*")} == before


@pytest.mark.parametrize("change", [{"seed": 8}, {"num_speakers": 4}, {"max_seconds": 1.1},
                                    {"subset": "test-clean"}])
def test_mismatched_parameters_raise(small_corpus: tuple[Path, Path], change: dict) -> None:
    root, base = small_corpus
    before = {p: p.stat().st_mtime_ns for p in base.rglob("*")}
    with pytest.raises(CorpusMismatchError, match="another root or delete"):
        generate_corpus(root, progress=False, **{**SMALL, **change})
    assert {p: p.stat().st_mtime_ns for p in base.rglob("*")} == before


def test_refuses_foreign_librispeech_dir(tmp_path: Path) -> None:
    (tmp_path / "LibriSpeech").mkdir()
    (tmp_path / "LibriSpeech" / "SPEAKERS.TXT").write_text("; a real LibriSpeech\n")
    with pytest.raises(CorpusMismatchError, match="not written by audiocert"):
        generate_corpus(tmp_path, progress=False, seed=0, **TINY)
    assert (tmp_path / "LibriSpeech" / "SPEAKERS.TXT").read_text() == "; a real LibriSpeech\n"


def test_interrupted_run_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = _read_all(generate_corpus(tmp_path / "clean", progress=False, seed=3, **TINY))
    calls = {"n": 0}
    real = corpus_writer.synthesize_utterance

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus_writer, "synthesize_utterance", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(tmp_path / "resumed", progress=False, seed=3, **TINY)
    base = tmp_path / "resumed" / "LibriSpeech"
    assert not (base / MARKER_NAME).exists() and len(_flacs(base)) == 2
    assert not [p for p in base.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(corpus_writer, "synthesize_utterance", real)
    generate_corpus(tmp_path / "resumed", progress=False, seed=3, **TINY)
    assert (base / MARKER_NAME).exists() and not (base / corpus_writer.PARTIAL_MARKER_NAME).exists()
    resumed = _read_all(base)
    assert resumed.keys() == clean.keys()
    assert all(np.array_equal(resumed[k], clean[k]) for k in clean)
    assert (base / "SPEAKERS.TXT").read_text() == (tmp_path / "clean/LibriSpeech/SPEAKERS.TXT").read_text()


# -------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_speakers": 1}, "num_speakers"),
        ({"num_speakers": 2.5}, "num_speakers"),
        ({"utterances_per_speaker": 1}, "utterances_per_speaker"),
        ({"min_seconds": 3.0, "max_seconds": 2.0}, "min_seconds"),
        ({"min_seconds": -1.0}, "min_seconds"),
        ({"max_seconds": 0.0}, "max_seconds"),
        ({"max_seconds": float("nan")}, "max_seconds"),
        ({"seed": -1}, "seed"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"subset": "../escape"}, "subset"),
        ({"subset": ""}, "subset"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        generate_corpus(tmp_path, progress=False, **kwargs)
    assert not (tmp_path / "LibriSpeech").exists()


# ---------------------------------------------------------------------------------------- determinism
def test_same_seed_identical_different_seed_different(tmp_path: Path) -> None:
    a = _read_all(generate_corpus(tmp_path / "a", progress=False, seed=11, **TINY))
    b = _read_all(generate_corpus(tmp_path / "b", progress=False, seed=11, **TINY))
    c = _read_all(generate_corpus(tmp_path / "c", progress=False, seed=12, **TINY))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert a.keys() != c.keys()  # other speaker/chapter IDs
    assert not any(x.shape == y.shape and np.allclose(x, y) for x in a.values() for y in c.values())


def test_utterances_are_reproducible_on_their_own(small_corpus: tuple[Path, Path]) -> None:
    _, base = small_corpus
    voice = voice_parameters(SMALL["seed"], SMALL["num_speakers"])[1]
    kwargs = {"sample_rate": SR, "min_seconds": SMALL["min_seconds"], "max_seconds": SMALL["max_seconds"]}
    last, _ = synthesize_utterance(voice, SMALL["seed"], 3, **kwargs)  # out of order, alone
    alone = [synthesize_utterance(voice, SMALL["seed"], k, **kwargs) for k in range(4)]
    assert np.array_equal(alone[3][0], last)
    files = [p for p in _flacs(base) if p.parts[-3] == str(voice.speaker_id)]
    lines = dict(line.split(" ", 1) for t in base.rglob(f"{voice.speaker_id}-*.trans.txt")
                 for line in t.read_text().splitlines())
    assert sorted(lines.values()) == sorted(text for _, text in alone)
    for path in files:
        audio = sf.read(path, dtype="float32")[0]
        matches = [k for k, (x, _) in enumerate(alone) if x.size == audio.size
                   and np.max(np.abs(x - audio)) < 2.0 / 32768]
        assert len(matches) == 1
        assert lines[path.stem] == alone[matches[0]][1]


# ---------------------------------------------------------------------------------------------- voices
def test_voice_parameters() -> None:
    voices = voice_parameters(5, 8)
    assert voices == voice_parameters(5, 8)
    assert voices != voice_parameters(6, 8)
    ids = [v.speaker_id for v in voices]
    assert len(set(ids)) == 8 and all(10 <= i <= 9999 for i in ids)
    assert sorted(v.sex for v in voices) == ["F"] * 4 + ["M"] * 4
    for v in voices:
        assert 85 <= v.f0_hz <= 255
        assert 0.8 <= v.formant_scale <= 1.2
        assert v.as_dict()["speaker_id"] == v.speaker_id
    twins = [v for v in voices if v.pitch_twin_of is not None]
    assert len(twins) == 4
    for v in twins:
        ref = voices[v.pitch_twin_of]
        assert ref.sex == v.sex and abs(ref.f0_hz - v.f0_hz) < 15
        assert abs(ref.formant_scale - v.formant_scale) >= 0.08
    with pytest.raises(ValueError, match="num_speakers"):
        voice_parameters(0, 1)


def _frames(x: np.ndarray, n: int, hop: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, n)[::hop]


def _loud(frames: np.ndarray) -> np.ndarray:
    energy = (frames**2).mean(axis=1)
    return energy > 0.1 * energy.max()


def _median_f0(waves: list[np.ndarray]) -> float:
    """Median f0 over loud frames: autocorrelation of the 900 Hz low-passed signal."""
    b, a = signal.butter(4, 900, fs=SR)
    estimates = []
    for x in waves:
        frames = _frames(signal.lfilter(b, a, x), 640, 320)
        frames = frames[_loud(frames)] * np.hanning(640)
        ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 1280, axis=1)) ** 2, axis=1)[:, :640]
        ac /= ac[:, :1]
        lo, hi = SR // 320, SR // 70
        lag = lo + np.argmax(ac[:, lo:hi], axis=1)
        periodic = ac[np.arange(lag.size), lag] > 0.5
        estimates.append(SR / lag[periodic])
    return float(np.median(np.concatenate(estimates)))


def _log_envelope(waves: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """Mean cepstrally smoothed log-magnitude envelope (257 bins) of the masked frames."""
    envelopes = []
    for x, mask in zip(waves, masks, strict=True):
        frames = _frames(x, 512, 160)[mask] * np.hanning(512)
        cep = np.fft.irfft(np.log(np.abs(np.fft.rfft(frames, axis=1)) + 1e-6), axis=1)
        cep[:, 30:-29] = 0.0
        envelopes.append(np.fft.rfft(cep, axis=1).real)
    return np.concatenate(envelopes).mean(axis=0)


def _formant_warp(ref: np.ndarray, other: np.ndarray) -> float:
    """The frequency scaling s for which other(f) best matches ref(f / s) over 0.7-4.5 kHz (up to a gain)."""
    f = np.fft.rfftfreq(512, 1.0 / SR)
    band = (f > 700) & (f < 4500)
    target = other[band] - other[band].mean()
    scales = np.arange(0.8, 1.25, 0.005)
    errors = []
    for s in scales:
        warped = np.interp(f[band] / s, f, ref)
        errors.append(np.mean((warped - warped.mean() - target) ** 2))
    return float(scales[int(np.argmin(errors))])


def test_voices_differ_in_more_than_pitch() -> None:
    seed = 0
    voices = voice_parameters(seed, 4)
    short = {"min_seconds": 1.2, "max_seconds": 1.6}
    waves = {v.index: [synthesize_utterance(v, seed, u, **short)[0] for u in range(4)] for v in voices}
    measured = {v.index: _median_f0(waves[v.index]) for v in voices}
    # The synthesized pitch tracks the configured mean pitch of every speaker.
    for v in voices:
        assert measured[v.index] == pytest.approx(v.f0_hz, rel=0.12)
    assert np.corrcoef([v.f0_hz for v in voices], list(measured.values()))[0, 1] > 0.95
    # The vocal tract is audible independently of pitch: the same utterances (same content and pitch contour)
    # with every formant scaled by 1.1 (1 / 1.1) have their spectral envelope stretched by that factor.
    envelopes = {}
    for v in voices:
        masks = [_loud(_frames(x, 512, 160)) for x in waves[v.index]]
        envelopes[v.index] = _log_envelope(waves[v.index], masks)
        for factor in (1.1, 1 / 1.1):
            scaled = dataclasses.replace(v, formant_scale=v.formant_scale * factor)
            stretched = [synthesize_utterance(scaled, seed, u, **short)[0] for u in range(4)]
            stretched = _log_envelope(stretched, masks)
            assert _formant_warp(envelopes[v.index], stretched) == pytest.approx(factor, rel=0.03)
    # Some speakers share their pitch (configured and measured) but not their vocal tract, which shows in
    # their spectral envelopes although they say different things: pitch alone does not separate them all.
    twins = [(v, voices[v.pitch_twin_of]) for v in voices if v.pitch_twin_of is not None]
    close = [(a, b) for a, b in twins
             if abs(a.f0_hz - b.f0_hz) < 15 and abs(measured[a.index] - measured[b.index]) < 15]
    assert close
    for a, b in close:
        assert abs(a.formant_scale - b.formant_scale) >= 0.08
    ratios = [(a.formant_scale / b.formant_scale, _formant_warp(envelopes[b.index], envelopes[a.index]))
              for a, b in close]
    assert any((true - 1) * (est - 1) > 0 and abs(est - 1) > 0.03 for true, est in ratios), ratios
