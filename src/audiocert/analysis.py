"""Looking at the data the certificates are about: per-representation statistics and perturbed examples.

- :func:`dataset_statistics` (``audiocert stats``, conf/stats.yaml): range, 1st-99th percentile range, mean, SD,
  median per-example L2 norm and dimension of each smoothing stage's representation over test crops, like the
  seed's table of the 10-speaker subset.
- :func:`perturbed_examples` (``audiocert examples``, conf/examples.yaml): Gaussian noise N(0, sigma^2) added at
  each stage, written as WAV files (where the stage can be turned back into sound) and PNG panels.

Rendering a noisy magnitude spectrogram as sound (:func:`render_magspec`): the noisy magnitudes take the
clean phase, each frame is inverted with irfft (its first frame_length samples), frames are overlap-added with
the frontend's hop and divided by the number of frames covering each sample (the least-squares inverse of
rectangular framing), and pre-emphasis is undone with the IIR filter 1 / (1 - 0.97 z^-1). This is exact for
sigma = 0 (up to float64 rounding): rectangular frames of 400 samples zero-padded to nfft = 512 lose nothing
and the last frame's zero padding is cut off. Noisy magnitudes are used as they are, negative ones included
(a phase flip of pi), so the rendered noise is the linear image of the spectrogram noise.
Normalized Mel-filterbank energies have no inverse to sound (the mel bank and the per-frame normalization
discard information and gain), so mfbe gets images only.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audiocert.checkpoint import build_frontend
from audiocert.data import build_datasets
from audiocert.frontend import DeepSpeakerFrontend
from audiocert.prepare import ensure_dataset
from audiocert.provenance import atomic_write_text, atomic_write_with, code_version
from audiocert.stages import STAGES, find_stage
from audiocert.stages import stage as stage_entry

DPI = 120


def stage_heading(name: str) -> str:
    """The stage's title in title case, for table rows ("Normalized Mel-Filterbank Energies"); else its name."""
    entry = find_stage(name)
    return entry.title.title() if entry is not None else name


# ----------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------
def statistics_indices(num_crops: int, max_crops: int) -> list[int]:
    """Up to ``max_crops`` test-set indices evenly spread over the (speaker-major) test set."""
    if num_crops <= 0:
        raise ValueError("the test set is empty")
    if max_crops < 1:
        raise ValueError(f"max_crops={max_crops} must be a positive integer")
    if max_crops >= num_crops:
        return list(range(num_crops))
    return sorted({int(i) for i in np.linspace(0, num_crops - 1, max_crops).round()})


def stage_values(waveforms: torch.Tensor, frontend: DeepSpeakerFrontend, stage: str,
                 batch_size: int = 64) -> np.ndarray:
    """The clean representation of each waveform at ``stage``, as float32 (examples, elements)."""
    out = []
    with torch.inference_mode():
        for start in range(0, waveforms.shape[0], batch_size):
            x = frontend.to_stage(waveforms[start:start + batch_size].float(), stage)
            out.append(x.reshape(x.shape[0], -1).cpu().numpy().astype(np.float32, copy=False))
    return np.concatenate(out)


def summarize(values: np.ndarray) -> dict[str, float]:
    """Statistics of an (examples, elements) array: over all elements, and the per-example L2 norms."""
    flat = values.reshape(-1)
    p1, p99 = np.percentile(flat, [1, 99])
    norms = np.linalg.norm(values.astype(np.float64), axis=1)
    return {
        "min": float(flat.min()), "max": float(flat.max()), "p1": float(p1), "p99": float(p99),
        "mean": float(np.mean(flat, dtype=np.float64)), "sd": float(np.std(flat, dtype=np.float64)),
        "median_norm": float(np.median(norms)), "dimension": int(values.shape[1]), "examples": int(values.shape[0]),
    }


def representation_statistics(waveforms: torch.Tensor, frontend: DeepSpeakerFrontend,
                              stages: Sequence[str] = STAGES) -> dict[str, dict[str, float]]:
    return {stage: summarize(stage_values(waveforms, frontend, stage)) for stage in stages}


def g4(x: float) -> str:
    return f"{x:.4g}"


def statistics_table(stats: Mapping[str, Mapping[str, float]], shapes: Mapping[str, tuple[int, ...]]) -> str:
    lines = ["| Representation | Dimension | Range | 1-99th Pctl. Range | Mean | S.D. | Median L2 norm |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for stage, s in stats.items():
        shape = " x ".join(str(d) for d in shapes[stage])
        dimension = f"{s['dimension']:,}" + (f" ({shape})" if len(shapes[stage]) > 1 else "")
        lines.append(f"| {stage_heading(stage)} | {dimension} | {g4(s['min'])}, {g4(s['max'])} | "
                     f"{g4(s['p1'])}, {g4(s['p99'])} | {g4(s['mean'])} | {g4(s['sd'])} | {g4(s['median_norm'])} |")
    return "\n".join(lines)


def dataset_statistics(cfg) -> str:
    """Per-representation statistics of up to cfg.max_crops test crops; writes cfg.output and returns the text."""
    ensure_dataset(cfg.dataset)
    bundle = build_datasets(cfg.dataset)
    test = bundle.test
    indices = statistics_indices(len(test), int(cfg.max_crops))
    frontend = build_frontend(cfg.get("frontend"))
    waveforms = torch.stack([test[i][0] for i in indices])
    stats = representation_statistics(waveforms, frontend)
    shapes = {stage: frontend.stage_shape(stage, int(waveforms.shape[-1])) for stage in stats}
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = "\n".join([
        f"# {cfg.dataset.name}: statistics per representation", "",
        f"{len(indices)} test crop(s) of {len(test)} ({bundle.num_classes} speakers), evenly spaced over the "
        f"speaker-major test split; {int(waveforms.shape[-1]):,} samples at {int(cfg.dataset.sample_rate)} Hz per "
        "crop. Range, percentiles, mean and S.D. are over all elements of all crops (population S.D.); the L2 norm "
        "is per crop (the ||x_stage|| of the SNR-equivalent 20 log10(||x_stage|| / r)). Dimension: elements per "
        "crop at the stage.", "",
        statistics_table(stats, shapes), "",
        f"Generated {now} by audiocert {code_version()}.", "",
    ])
    atomic_write_text(Path(str(cfg.output)), text)
    return text


# ----------------------------------------------------------------------------------------------------------
# Perturbed examples
# ----------------------------------------------------------------------------------------------------------
def render_magspec(frontend: DeepSpeakerFrontend, magnitude: torch.Tensor, clean_waveform: torch.Tensor) -> np.ndarray:
    """Sound for a (noisy) magnitude spectrogram (frames, bins): clean phase, irfft, overlap-add, de-emphasis.

    Returns float64 samples, as many as ``clean_waveform`` has. See the module docstring for the method.
    """
    from scipy.signal import lfilter

    clean = clean_waveform.detach().to(torch.float64).cpu()
    spectrum = torch.fft.rfft(frontend.frame(frontend.preemphasize(clean)), n=frontend.nfft)
    phase = torch.exp(1j * torch.angle(spectrum))  # angle(0) = 0: phase 1 where the clean bin is exactly 0
    frames = torch.fft.irfft(magnitude.detach().to(torch.float64).cpu() * phase, n=frontend.nfft)
    frames = frames[..., : frontend.frame_length].numpy()
    count, hop, width = frames.shape[0], frontend.hop_length, frontend.frame_length
    total = (count - 1) * hop + width
    summed, covered = np.zeros(total), np.zeros(total)
    for t in range(count):
        summed[t * hop : t * hop + width] += frames[t]
        covered[t * hop : t * hop + width] += 1.0
    emphasized = (summed / covered)[: clean.shape[-1]]
    return lfilter([1.0], [1.0, -frontend.preemphasis], emphasized)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """32-bit float WAV (nothing clips), written atomically."""
    return atomic_write_with(path, lambda tmp: sf.write(tmp, np.asarray(samples, dtype=np.float32), sample_rate,
                                                        subtype="FLOAT", format="WAV"))


def save_png(fig, path: Path) -> Path:
    return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))


def magnitude_db(magnitude: np.ndarray) -> np.ndarray:
    return 20.0 * np.log10(np.abs(magnitude) + 1e-6)


def stage_panels(stage: str, clean: np.ndarray, noisy: Sequence[tuple[float, np.ndarray]], sample_rate: int,
                 title: str, path: Path) -> Path:
    """Clean + one panel per sigma, side by side, on a shared scale (so the noise shows against the clean)."""
    from matplotlib.figure import Figure

    panels = [("clean", clean)] + [(f"σ = {sigma:g}", x) for sigma, x in noisy]
    fig = Figure(figsize=(4.3 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    if stage == "waveform":
        limit = max(float(np.abs(x).max()) for _, x in panels) * 1.05 or 1.0
        time = np.arange(clean.shape[-1]) / sample_rate
        for ax, (name, x) in zip(axes, panels, strict=True):
            ax.plot(time, x, linewidth=0.4, color="tab:blue")
            ax.set_ylim(-limit, limit)
            ax.set_xlim(0, time[-1])
            ax.set_xlabel("time (s)")
            ax.set_ylabel("amplitude (full scale 1)")
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{name}\npeak {np.abs(x).max():.3f}", fontsize=10)
    else:
        images = [magnitude_db(x) if stage == "magspec" else x for _, x in panels]
        if stage == "magspec":
            vmax = max(float(im.max()) for im in images)
            vmin, label = vmax - 90.0, "20 log10(|magnitude| + 1e-6) (dB)"
            extent, ylabel = (0, clean.shape[0], 0, sample_rate / 2), "frequency (Hz)"
        else:
            stacked = np.concatenate([im.reshape(-1) for im in images])
            vmin, vmax = (float(v) for v in np.percentile(stacked, [0.5, 99.5]))
            label = "normalized energy (per-frame z-score)"
            extent, ylabel = (0, clean.shape[0], 0, clean.shape[1]), "Mel filter index"
        for ax, (name, _), image in zip(axes, panels, images, strict=True):
            shown = ax.imshow(image.T, origin="lower", aspect="auto", extent=extent, vmin=vmin, vmax=vmax,
                              cmap="magma" if stage == "magspec" else "viridis", interpolation="nearest")
            ax.set_xlabel("frame (10 ms hop)")
            ax.set_ylabel(ylabel)
            ax.set_title(name, fontsize=10)
            fig.colorbar(shown, ax=ax, label=label, shrink=0.9)
    fig.suptitle(title, fontsize=12)
    return save_png(fig, path)


def perturbed_examples(cfg) -> str:
    """WAV files and PNG panels of Gaussian noise at each stage and sigma; returns the output directory."""
    ensure_dataset(cfg.dataset)
    bundle = build_datasets(cfg.dataset)
    test = bundle.test
    frontend = build_frontend(cfg.get("frontend"))
    sample_rate = int(cfg.dataset.sample_rate)
    out = Path(str(cfg.output_dir))
    out.mkdir(parents=True, exist_ok=True)
    sigmas: dict[str, list[float]] = {stage: [float(s) for s in cfg.sigmas.get(stage, [])] for stage in STAGES
                                      if stage in cfg.sigmas}
    unknown = set(cfg.sigmas) - set(STAGES)
    if unknown:
        raise ValueError(f"sigmas has unknown stage(s) {sorted(unknown)}: choose among {', '.join(STAGES)}")
    for stage, values in sigmas.items():
        if any(s < 0 for s in values):
            raise ValueError(f"sigmas.{stage}={values}: noise levels must be >= 0")
    generator = torch.Generator().manual_seed(int(cfg.seed))
    speakers = min(int(cfg.speakers), bundle.num_classes)
    index = [f"# Gaussian-perturbed examples: {cfg.dataset.name}", "",
             f"The first test crop of each of the first {speakers} speaker(s); noise N(0, σ²) added at each "
             f"smoothing stage with a torch generator seeded {int(cfg.seed)} (drawn speaker by speaker, stage by "
             "stage, σ by σ, in this order). WAV files are 32-bit float at "
             f"{sample_rate} Hz, never clipped: a peak above 1 is noted (it would clip in a 16-bit copy).", "",
             "- **waveform**: the noisy waveform itself.",
             "- **magspec**: the noisy magnitude spectrogram rendered as sound with the clean phase: irfft of each "
             "frame, overlap-add with the frontend's hop (divided by the number of frames covering each sample), "
             f"then pre-emphasis undone by 1 / (1 - {frontend.preemphasis:g} z^-1). Exact for σ = 0; negative noisy "
             "magnitudes are kept (a phase flip), so the sound carries the linear image of the spectrogram noise. "
             "The de-emphasis filter boosts low frequencies, so the rendered noise sounds low-pitched.",
             "- **mfbe**: no WAV — normalized Mel-filterbank energies have no inverse to sound (the Mel bank discards "
             "spectral detail, the per-frame normalization discards gain); images only.", "",
             f"Generated by audiocert {code_version()}.", ""]
    for s in range(speakers):
        dataset_index = s * test.crops_per_speaker
        waveform, label = test[dataset_index]
        speaker = bundle.speakers[label]
        description = test.describe(dataset_index)
        name = f"spk{speaker}"
        clean_wav = write_wav(out / f"{name}_clean.wav", waveform.numpy(), sample_rate)
        index += [f"## Speaker {speaker} (label {label}, test crop {dataset_index})", "",
                  f"Source `{description['path']}`, offset {description['offset']} samples, "
                  f"{waveform.numel():,} samples.", "",
                  "| stage | σ | sound | peak | figure |", "|---|---|---|---|---|",
                  f"| clean | 0 | [{clean_wav.name}]({clean_wav.name}) | {float(waveform.abs().max()):.3f} | - |"]
        for stage, values in sigmas.items():
            clean_stage = frontend.to_stage(waveform[None], stage)[0].detach()
            noisy_panels = []
            for sigma in values:
                noise = torch.randn(clean_stage.shape, generator=generator, dtype=torch.float32) * sigma
                noisy = clean_stage + noise
                noisy_panels.append((sigma, noisy.numpy()))
                figure_name = f"{name}_{stage}.png"
                if stage == "waveform":
                    sound = noisy.numpy().astype(np.float64)
                elif stage == "magspec":
                    sound = render_magspec(frontend, noisy, waveform)
                else:
                    index.append(f"| {stage} | {sigma:g} | none (no inverse to sound) | - | "
                                 f"[{figure_name}]({figure_name}) |")
                    continue
                wav = write_wav(out / f"{name}_{stage}_sigma{sigma:g}.wav", sound, sample_rate)
                peak = float(np.abs(sound).max())
                note = f"{peak:.3f}" + (" (> 1: would clip as 16-bit PCM)" if peak > 1 else "")
                index.append(f"| {stage} | {sigma:g} | [{wav.name}]({wav.name}) | {note} | "
                             f"[{figure_name}]({figure_name}) |")
            if values:
                title = (f"Speaker {speaker} (test crop {dataset_index}): clean {stage_entry(stage).title.lower()} "
                         f"and Gaussian noise at the {stage} stage, σ = {', '.join(f'{v:g}' for v in values)}")
                stage_panels(stage, clean_stage.numpy(), noisy_panels, sample_rate, title, out / f"{name}_{stage}.png")
        index.append("")
        index += [f"![{name} {stage}]({name}_{stage}.png)" for stage, values in sigmas.items() if values] + [""]
    atomic_write_text(out / "index.md", "\n".join(index))
    return str(out)

