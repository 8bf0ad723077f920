"""Export audiocert's synthetic corpus as a folder dataset (DIR/<class>/*.flac, a few files as WAV) and train a
user's model on it with `audiocert train model=external` (a few minutes on a CPU).

    python examples/export_synthetic_folder.py data/myaudio                  # export, then train KWSNet
    python examples/export_synthetic_folder.py data/myaudio --no-train       # export only

Run from the repository root (examples/ goes on PYTHONPATH for the training command).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from audiocert.corpus import generate_corpus

EXAMPLES = Path(__file__).resolve().parent


def export(out: Path, speakers: int = 10, utterances: int = 24, seed: int = 0) -> list[str]:
    """Generate the synthetic corpus (the `synthetic10` generator) and copy it into out/<class>/."""
    corpus = generate_corpus(out.with_name(out.name + "-librispeech"), num_speakers=speakers,
                             utterances_per_speaker=utterances, seed=seed, min_seconds=2.0, max_seconds=5.0,
                             progress=False)
    for i, flac in enumerate(sorted(corpus.rglob("*.flac"))):
        target = out / f"speaker{flac.name.split('-')[0]}"
        target.mkdir(parents=True, exist_ok=True)
        if i % 4 == 3:  # a folder dataset may mix formats: some files as WAV
            data, rate = sf.read(flac)
            sf.write(target / f"{flac.stem}.wav", data, rate)
        else:
            shutil.copy(flac, target / flac.name)
    shutil.rmtree(corpus.parent)
    return sorted(p.name for p in out.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder dataset to write (DIR/<class>/...)")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--max-minutes", type=float, default=4.0)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: remove it or choose another directory")
    classes = export(args.out.resolve())
    print(f"exported {len(classes)} classes to {args.out}: {', '.join(classes)}")
    if args.no_train:
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(EXAMPLES), os.environ.get("PYTHONPATH"))
                                                        if p)}
    command = [sys.executable, "-m", "audiocert.cli", "train", "dataset=folder", f"dataset.root={args.out}",
               "model=external", "model.name=kws", "model.net._target_=usernets.KWSNet",
               f"+model.net.num_classes={len(classes)}", "train.augment.stage=waveform", "train.augment.sigma=0.02",
               f"train.max_minutes={args.max_minutes}", "train.lr=0.003"]
    print("+", " ".join(command[1:]))
    subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    main()
