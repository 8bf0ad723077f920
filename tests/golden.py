"""A small fixed sweep whose outputs must not change when the code is reorganised (issue: one seam for every kind).

It trains the tiny model of the suite's `trained` fixture, certifies it (Cohen and sequential, two stages), attacks
and measures one config, writes the report, and digests every result file a user reads (timing columns left out):
certificates.tsv, predictions.tsv, curve.csv, attack.tsv, robust.csv, points.tsv, audibility.csv and the report's
certified-accuracy tables, plus the trained weights. Only the CLI and the files are used, so the same script runs
on any version of the code:

    PYTHONPATH=<checkout>/src python tests/golden.py <checkout> OUT.json     # write the digests of that checkout

tests/data/golden_outputs.json holds the digests the code before the redesign wrote (commit 35de732), and
tests/test_unchanged_outputs.py checks the current code against them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

CORPUS = dict(num_speakers=4, utterances_per_speaker=6, seed=3, min_seconds=2.0, max_seconds=3.0)
DATASET = ["dataset.name=tiny4", "dataset.num_classes=4", "dataset.generate=null",
           "dataset.train_crops_per_speaker=64", "dataset.test_crops_per_speaker=4",
           "model.widths=[4,8,8,16]", "model.embedding_dim=16", "model.bn_momentum=0.3"]
TRAIN = ["train.lr=0.003", "train.epochs=3", "train.batch_size=16", "train.validation_crops_per_speaker=6"]
CERTIFY = ["sweep.name=golden", "certify.points_per_speaker=2", "certify.n0=20", "certify.n=60",
           "certify.shard.examples=4", "certify.shard.samples=30", "certify.batch_size=50", "logger.mode=disabled",
           "launcher=debug"]
SEQUENTIAL = ["certify.algorithm=sequential", "certify.sequential.first=20", "certify.n=200"]
ATTACK = ["attack.steps=2", "attack.samples=4", "attack.n=30", "attack.eps=[0.5,4.0]", "attack.shard.examples=2",
          "attack.batch_size=8"]
PERCEPTIBILITY = ["perceptibility.draws=2", "perceptibility.budget_iterations=16",
                  "perceptibility.radii=[0.01,0.25,1.5]", "perceptibility.attack.steps=4",
                  "perceptibility.attack.samples=4", "perceptibility.attack.n=30",
                  "perceptibility.attack.batch_size=16", "perceptibility.shard.examples=3"]


def cli(checkout: Path, runs: Path, *args: str) -> str:
    """``python -m audiocert.cli ARGS`` in ``checkout``, results under ``runs``; its stdout."""
    env = {**os.environ, "AUDIOCERT_RUNS_DIR": str(runs), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run([sys.executable, "-m", "audiocert.cli", *args], cwd=checkout, env=env,
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"audiocert {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def without_column(path: Path, column: str) -> str:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    keep = [k for k, name in enumerate(header) if name != column]
    return "\n".join("\t".join(line.split("\t")[k] for k in keep) for line in lines) + "\n"


def report_tables(report: Path) -> str:
    """The certified-accuracy section's tables (rows of numbers; the runs table names directories and times)."""
    lines, inside = [], False
    for line in report.read_text().splitlines():
        if line.startswith("## "):
            inside = line.startswith("## Certified accuracy")
        elif inside and (line.startswith("|") or line.startswith("### ")):
            lines.append(line)
    return "\n".join(lines) + "\n"


def weights_digest(checkpoint: Path) -> str:
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    h = hashlib.sha256()
    for name in sorted(state):
        if hasattr(state[name], "numpy"):
            h.update(name.encode())
            h.update(state[name].detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(checkout: Path, work: Path, corpus: Path | None = None, trained_runs: Path | None = None,
        cli: Callable[..., str] = cli) -> dict[str, str]:
    """Digests of the fixed sweep's outputs. ``corpus`` / ``trained_runs``: the suite's fixture, already made;
    ``cli``: how to run a command (the suite passes its run_cli, which runs the same command without a fresh
    interpreter's start-up)."""
    if corpus is None:
        from audiocert.corpus import generate_corpus

        corpus = generate_corpus(work / "corpus", **CORPUS, progress=False)
    dataset = [f"dataset.root={corpus}", *DATASET]
    runs = trained_runs or work / "runs"
    if trained_runs is None:
        cli(checkout, runs, "train", *dataset, *TRAIN)
    out: dict[str, str] = {"weights": weights_digest(runs / "train" / "tiny4-rescnn_small" / "best.pt")}
    cli(checkout, runs, "certify", "-m", *dataset, *CERTIFY, "representation=waveform,magspec")
    cli(checkout, runs, "certify", *dataset, *CERTIFY, *SEQUENTIAL)
    cli(checkout, runs, "certify", *dataset, *CERTIFY)  # the config the attack reads (mfbe, Cohen)
    cli(checkout, runs, "attack", *dataset, *CERTIFY, *ATTACK)
    cli(checkout, runs, "perceptibility", *dataset, *CERTIFY, *PERCEPTIBILITY, "representation=magspec")
    sweep = runs / "sweeps" / "golden"
    cli(checkout, runs, "report", str(sweep))
    for plan_path in sorted(sweep.rglob("plan.json")):
        plan = json.loads(plan_path.read_text())
        # Directory names end in a config hash, which covers the dataset's root: name a config by what it is.
        name = f"{plan['label']}/{plan['quantities'].get('algorithm')}"
        for path in sorted(plan_path.parent.iterdir()):
            if path.name == "certificates.tsv":
                out[f"{name}/{path.name}"] = digest(without_column(path, "time"))
            elif path.name in ("predictions.tsv", "curve.csv", "attack.tsv", "robust.csv", "points.tsv",
                               "audibility.csv"):
                out[f"{name}/{path.name}"] = digest(path.read_text())
    out["report.md"] = digest(report_tables(sweep / "report" / "report.md"))
    return out


if __name__ == "__main__":
    import tempfile

    checkout, target = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        result = run(checkout, Path(tmp))
    target.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result, indent=1, sort_keys=True))
