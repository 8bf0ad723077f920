"""Shared fixtures: a tiny generated LibriSpeech tree and quiet W&B."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A 4-speaker synthetic corpus in the LibriSpeech layout (real FLAC files)."""
    from audiocert.corpus import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    return generate_corpus(root, num_speakers=4, utterances_per_speaker=6, seed=3, min_seconds=2.0,
                           max_seconds=3.0, progress=False)


def tiny_overrides(corpus: Path) -> list[str]:
    """Hydra overrides for a 4-speaker dataset on the tiny corpus and a very small ResCNN."""
    return [
        f"dataset.root={corpus}", "dataset.name=tiny4", "dataset.num_classes=4", "dataset.generate=null",
        "dataset.train_crops_per_speaker=64", "dataset.test_crops_per_speaker=4",
        "model.widths=[4,8,8,16]", "model.embedding_dim=16", "model.bn_momentum=0.3",
    ]


def run_cli(args: list[str], runs_dir: Path, check: bool = True, timeout: float = 600):
    """Run the real `audiocert` CLI in a subprocess, with results under ``runs_dir``."""
    import subprocess
    import sys

    env = {**os.environ, "AUDIOCERT_RUNS_DIR": str(runs_dir), "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run([sys.executable, "-m", "audiocert.cli", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"audiocert {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="session")
def trained(tiny_corpus, tmp_path_factory) -> dict:
    """A tiny base classifier trained by the real CLI; returns its runs dir, overrides and metrics."""
    import json

    runs = tmp_path_factory.mktemp("runs")
    overrides = tiny_overrides(tiny_corpus)
    run_cli(["train", *overrides, "train.lr=0.003", "train.epochs=3", "train.batch_size=16",
             "train.validation_crops_per_speaker=6"], runs)
    out = runs / "train" / "tiny4-rescnn_small"
    return {"runs": runs, "overrides": overrides, "dir": out, "metrics": json.loads((out / "metrics.json").read_text())}


def local_workers(sweep_dir: Path) -> list[str]:
    """PIDs of the local workers (submitit LocalExecutor jobs) of the sweep in ``sweep_dir``."""
    import subprocess

    logs = sweep_dir / "logs" / "local"
    return subprocess.run(["pgrep", "-f", str(logs)], capture_output=True, text=True).stdout.split()


def kill_with_orphans(parent, sweep_dir: Path, timeout: float = 30.0) -> None:
    """SIGKILL a local `audiocert` command (``parent``, a Popen) and wait until its workers have noticed and stopped
    (they poll for their parent about once a second, and may finish the shard in hand meanwhile)."""
    import signal
    import time

    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + timeout
    while local_workers(sweep_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert not local_workers(sweep_dir), f"workers of {sweep_dir} outlived the killed command"


def certify_overrides(trained: dict, sweep: str, *extra: str) -> list[str]:
    return [*trained["overrides"], f"sweep.name={sweep}", "certify.points_per_speaker=2", "certify.n0=20",
            "certify.n=60", "certify.shard.examples=4", "certify.shard.samples=30", "certify.batch_size=50",
            "logger.mode=disabled", *extra]


def read_certs(config_dir: Path) -> list[tuple]:
    """Certificates without the timing column (which legitimately differs between runs)."""
    from audiocert.kinds.certify import read_certificates

    return [(r["idx"], r["label"], r["predict"], r["radius"], r["correct"])
            for r in read_certificates(config_dir / "certificates.tsv")]
