"""dataset=folder: any labelled audio (class folders or a CSV/TSV manifest) read into the LibriSpeech reader's split
and crops, with its checks (missing, corrupt, silent, wrong-rate files named), a fingerprinted scan cache, and the
one-line refusals of the CLI; a missing LibriSpeech speaker names the dataset.speakers override."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli

from audiocert.data import AudioFileError, build_datasets
from audiocert.data.folder import FolderDatasetError, count_classes, scan_folder


def export_folder(corpus: Path, out: Path, wav_every: int = 2) -> Path:
    """The LibriSpeech-layout corpus as DIR/spk<ID>/<file>: every ``wav_every``-th file re-encoded as WAV."""
    for i, flac in enumerate(sorted(corpus.rglob("*.flac"))):
        target = out / f"spk{flac.name.split('-')[0]}" / "audio"
        target.mkdir(parents=True, exist_ok=True)
        if wav_every and i % wav_every:
            data, rate = sf.read(flac)
            sf.write(target / f"{flac.stem}.wav", data, rate)
        else:
            shutil.copy(flac, target / flac.name)
    return out


def folder_cfg(root: Path, **extra) -> dict:
    return {"name": "f", "layout": "folder", "root": str(root), "num_classes": 4, "crop_samples": 16000,
            "train_crops_per_speaker": 8, "test_crops_per_speaker": 3, "test_fraction": 0.34, "split_seed": 0,
            "resample": True, **extra}


@pytest.fixture(scope="module")
def folder(tiny_corpus, tmp_path_factory) -> Path:
    return export_folder(tiny_corpus, tmp_path_factory.mktemp("folder"))


def test_folder_tree_gives_named_classes_and_an_utterance_disjoint_seeded_split(folder, tmp_path):
    bundle = build_datasets(folder_cfg(folder), cache_dir=tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert bundle.class_names == names and bundle.test.class_names == names and bundle.num_classes == 4
    assert {Path(u.path).suffix for u in bundle.manifest.utterances} == {".wav", ".flac"}
    train, test = {u.path for u in bundle.train_utterances}, {u.path for u in bundle.test_utterances}
    assert train and test and not train & test
    for label in range(4):  # every class in both parts, from its own folder
        assert {Path(u.path).parts[-3] for u in bundle.test_utterances if u.speaker == label} == {names[label]}
    waveform, label = bundle.test[7]
    assert waveform.shape == (16000,) and label == 7 // 3
    again = build_datasets(folder_cfg(folder), cache_dir=tmp_path)  # seeded: the same split and crops
    assert [u.path for u in again.test_utterances] == [u.path for u in bundle.test_utterances]
    assert np.array_equal(again.test[5][0].numpy(), bundle.test[5][0].numpy())
    other = build_datasets(folder_cfg(folder, split_seed=5), cache_dir=tmp_path)
    assert [u.path for u in other.test_utterances] != [u.path for u in bundle.test_utterances]
    assert count_classes(str(folder)) == 4


def test_scan_cache_skips_headers_and_a_changed_file_invalidates_it(folder, tmp_path, monkeypatch):
    first = scan_folder(folder, sample_rate=16000, cache_dir=tmp_path)
    assert list(tmp_path.glob("folder-*.json"))
    import audiocert.data.folder as module

    def no_headers(path):
        raise AssertionError("a cache hit reads no header")

    monkeypatch.setattr(module.sf, "info", no_headers)
    hit = scan_folder(folder, sample_rate=16000, cache_dir=tmp_path)
    assert hit.fingerprint == first.fingerprint and hit.manifest.utterances == first.manifest.utterances
    monkeypatch.undo()
    victim = sorted(folder.rglob("*.wav"))[0]
    data, rate = sf.read(victim)
    sf.write(victim, data[: len(data) // 2], rate)
    changed = scan_folder(folder, sample_rate=16000, cache_dir=tmp_path)
    assert changed.fingerprint != first.fingerprint
    assert next(u for u in changed.manifest.utterances if u.path == str(victim)).num_frames == len(data) // 2


def test_manifest_with_its_own_split_and_tsv(folder, tmp_path):
    files = sorted(folder.rglob("*.*"))
    rows = ["path,label,split"] + [f"{f},{f.parts[-3]},{'test' if i % 3 == 0 else 'train'}"
                                   for i, f in enumerate(files)]
    manifest = tmp_path / "data.csv"
    manifest.write_text("\n".join(rows) + "\n")
    bundle = build_datasets(folder_cfg(tmp_path, manifest=str(manifest)), cache_dir=tmp_path)
    assert {u.path for u in bundle.test_utterances} == {str(f) for i, f in enumerate(files) if i % 3 == 0}
    tsv = tmp_path / "data.tsv"  # relative paths, no header, no split column: the seeded split
    tsv.write_text("".join(f"{f.relative_to(folder)}\t{f.parts[-3]}\n" for f in files))
    shutil.copytree(folder, tmp_path / "spk", dirs_exist_ok=True)
    shutil.move(tsv, tmp_path / "spk" / "data.tsv")
    seeded = build_datasets(folder_cfg(tmp_path, manifest=str(tmp_path / "spk" / "data.tsv")), cache_dir=tmp_path)
    assert seeded.class_names == bundle.class_names and len(seeded.manifest.utterances) == len(files)


def test_manifest_with_a_missing_file_is_refused_naming_it(folder, tmp_path):
    files = sorted(folder.rglob("*.*"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("".join(f"{f},{f.parts[-3]}\n" for f in files) + f"{tmp_path}/gone.flac,spk1\n")
    with pytest.raises(FolderDatasetError, match=rf"line {len(files) + 1}: audio file {tmp_path}/gone.flac does not"):
        build_datasets(folder_cfg(tmp_path, manifest=str(manifest)), cache_dir=False)


def test_corrupt_silent_and_wrong_rate_files_are_named(folder, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    corrupt = sorted(root.rglob("*.flac"))[0]
    corrupt.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioFileError, match=str(corrupt)):
        build_datasets(folder_cfg(root), cache_dir=False)
    shutil.rmtree(root)
    shutil.copytree(folder, root)
    off_rate = sorted(root.rglob("*.wav"))[0]
    data, rate = sf.read(off_rate)
    sf.write(off_rate, data[::2], rate // 2)
    with pytest.raises(AudioFileError, match=str(off_rate)):
        build_datasets(folder_cfg(root, resample=False), cache_dir=False)
    with pytest.warns(UserWarning, match="resampled"):
        assert build_datasets(folder_cfg(root), cache_dir=False).num_classes == 4
    silent = Path(build_datasets(folder_cfg(root), cache_dir=False).test_utterances[0].path)
    data, rate = sf.read(silent)
    sf.write(silent, np.zeros_like(data), rate)
    bundle = build_datasets(folder_cfg(root), cache_dir=False)  # test crops cycle over every test utterance
    with pytest.raises(AudioFileError, match=rf"{silent}: is silent"):
        for i in range(len(bundle.test)):
            bundle.test[i]


def test_cli_refuses_a_missing_root_and_a_missing_speaker_in_one_line(tiny_corpus, tmp_path):
    result = run_cli(["train", "dataset=folder", f"dataset.root={tmp_path}/none"], tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"audiocert train: dataset.root={tmp_path}/none: no such directory: point it at a folder with one "
        "sub-folder of audio files (.wav, .flac) per class, or give dataset.manifest=FILE"]
    assert not (tmp_path / "train").exists()
    result = run_cli(["train", "dataset=librispeech10", f"dataset.root={tiny_corpus}", "train.epochs=1"], tmp_path,
                     check=False)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    speakers = sorted(int(p.name) for p in (tiny_corpus / "train-clean-360").iterdir())
    assert f"dataset.speakers=[{','.join(map(str, speakers))}] dataset.num_classes=4" in line
