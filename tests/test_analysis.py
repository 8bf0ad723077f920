"""`audiocert stats` and `audiocert examples` on the tiny corpus, checked against direct numpy computations."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO

from audiocert.frontend import DeepSpeakerFrontend, mel_filterbank


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name=name, overrides=overrides)


def dataset_overrides(corpus: Path) -> list[str]:
    return [f"dataset.root={corpus}", "dataset.name=tiny4", "dataset.num_classes=4", "dataset.generate=null",
            "dataset.test_crops_per_speaker=4", "dataset.train_crops_per_speaker=2"]


# --- an independent numpy frontend (float64) --------------------------------------------------------------
def numpy_magspec(x: np.ndarray) -> np.ndarray:
    y = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    frames = 1 + int(np.ceil((len(y) - 400) / 160))
    y = np.pad(y, (0, (frames - 1) * 160 + 400 - len(y)))
    return np.abs(np.fft.rfft(np.stack([y[t * 160 : t * 160 + 400] for t in range(frames)]), 512))


def numpy_mfbe(x: np.ndarray) -> np.ndarray:
    energies = numpy_magspec(x) ** 2 / 512 @ mel_filterbank(64, 512, 16000, 0, 8000).T
    energies[energies == 0] = np.finfo(float).eps
    return (energies - energies.mean(1, keepdims=True)) / np.maximum(energies.std(1, keepdims=True), 1e-12)


def test_dataset_statistics_match_numpy(tiny_corpus, tmp_path):
    from audiocert.analysis import dataset_statistics, statistics_indices
    from audiocert.data import build_datasets

    output = tmp_path / "stats.md"
    cfg = compose("stats", [*dataset_overrides(tiny_corpus), "max_crops=10", f"output={output}"])
    text = dataset_statistics(cfg)
    assert output.read_text() == text
    test = build_datasets(cfg.dataset).test
    indices = statistics_indices(len(test), 10)
    assert len(indices) == 10 and indices[0] == 0 and indices[-1] == len(test) - 1  # spread over all speakers
    crops = [test[i][0].numpy().astype(np.float64) for i in indices]
    direct = {"Waveform": np.stack(crops), "Magnitude Spectrogram": np.stack([numpy_magspec(c) for c in crops]),
              "Normalized Mel-Filterbank Energies": np.stack([numpy_mfbe(c) for c in crops])}
    assert f"{len(indices)} test crop(s) of {len(test)}" in text
    for name, values in direct.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        dimension = int(cells[1].split()[0].replace(",", ""))
        reported = [float(v) for v in re.findall(r"-?[\d.]+(?:e[+-]?\d+)?", " ".join(cells[2:]))]
        flat = values.reshape(len(crops), -1)
        expected = [flat.min(), flat.max(), *np.percentile(flat, [1, 99]), flat.mean(), flat.std(),
                    np.median(np.linalg.norm(flat, axis=1))]
        assert dimension == flat.shape[1]
        scale = np.abs(flat).max()
        # 4 significant digits are printed; the frontend runs in float32, numpy here in float64.
        assert reported == pytest.approx(expected, rel=2e-3, abs=2e-5 * scale), name
    assert "| Waveform | 25,840 |" in text and "41,120 (160 x 257)" in text and "10,240 (160 x 64)" in text


def test_render_magspec_inverts_the_frontend_exactly():
    from audiocert.analysis import render_magspec

    frontend = DeepSpeakerFrontend()
    x = torch.randn(5000, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.1
    magnitude = frontend.to_stage(x, "magspec")
    assert np.allclose(render_magspec(frontend, magnitude, x), x.numpy(), atol=1e-9)


@pytest.fixture(scope="module")
def examples(tiny_corpus, tmp_path_factory) -> dict:
    from audiocert.analysis import perturbed_examples

    out = tmp_path_factory.mktemp("examples")
    cfg = compose("examples", [*dataset_overrides(tiny_corpus), "speakers=2", f"output_dir={out}", "seed=7",
                               "sigmas.waveform=[0.05,0.3]", "sigmas.magspec=[0.0,0.5]", "sigmas.mfbe=[0.5]"])
    assert perturbed_examples(cfg) == str(out)
    return {"out": out, "cfg": cfg, "index": (out / "index.md").read_text()}


def test_examples_files_listed_and_readable(examples):
    out, index = examples["out"], examples["index"]
    listed = re.findall(r"\]\(([^)]+\.(?:wav|png))\)", index)
    assert listed and all((out / name).is_file() for name in listed)
    wavs = sorted(p.name for p in out.glob("*.wav"))
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(wavs) == 2 * (1 + 2 + 2) and len(pngs) == 2 * 3  # clean + waveform + magspec WAVs; 3 panels
    assert set(wavs) | set(pngs) == set(listed)
    assert not any("mfbe" in name for name in wavs) and "mfbe | 0.5 | none (no inverse to sound)" in index
    for name in wavs:
        info = sf.info(str(out / name))
        assert info.samplerate == 16000 and info.subtype == "FLOAT" and info.channels == 1
        assert info.frames == 25840
    for name in pngs:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def speaker_files(out: Path) -> list[str]:
    return sorted({p.name.split("_")[0] for p in out.glob("spk*_clean.wav")})


def test_waveform_noise_has_sigma_sd_and_is_not_clipped(examples):
    out = examples["out"]
    for speaker in speaker_files(out):
        clean, _ = sf.read(str(out / f"{speaker}_clean.wav"), dtype="float64")
        for sigma in (0.05, 0.3):
            noisy, _ = sf.read(str(out / f"{speaker}_waveform_sigma{sigma:g}.wav"), dtype="float64")
            noise = noisy - clean
            assert noise.std() == pytest.approx(sigma, rel=0.03) and abs(noise.mean()) < 4 * sigma / 160
        assert np.abs(noisy).max() > 1.0  # sigma 0.3 exceeds full scale somewhere: stored, not clipped
    assert "(> 1: would clip as 16-bit PCM)" in examples["index"]


def test_magspec_rendering_at_sigma_zero_is_the_clean_waveform(examples):
    out = examples["out"]
    for speaker in speaker_files(out):
        clean, _ = sf.read(str(out / f"{speaker}_clean.wav"), dtype="float64")
        rendered, _ = sf.read(str(out / f"{speaker}_magspec_sigma0.wav"), dtype="float64")
        inner = slice(400, -400)  # away from the edges (the reconstruction is exact there too)
        assert np.corrcoef(clean[inner], rendered[inner])[0, 1] > 0.99
        assert np.abs(rendered - clean).max() < 1e-4 * max(np.abs(clean).max(), 1e-3) + 1e-6
        noisy, _ = sf.read(str(out / f"{speaker}_magspec_sigma0.5.wav"), dtype="float64")
        assert np.abs(noisy - clean).std() > 1e-3  # the noise is audible, not lost in rendering


def test_examples_are_reproducible_from_the_seed(examples, tmp_path):
    from audiocert.analysis import perturbed_examples

    cfg = examples["cfg"].copy()
    cfg.output_dir = str(tmp_path)
    cfg.speakers = 1
    perturbed_examples(cfg)
    [speaker] = speaker_files(tmp_path)
    first, _ = sf.read(str(tmp_path / f"{speaker}_waveform_sigma0.05.wav"))
    again, _ = sf.read(str(examples["out"] / f"{speaker}_waveform_sigma0.05.wav"))
    assert np.array_equal(first, again)
