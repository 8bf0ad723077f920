"""Shared fixtures: a tiny generated LibriSpeech tree and quiet W&B."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("AUDIOCERT_CONF", str(REPO / "conf"))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A 4-speaker synthetic corpus in the LibriSpeech layout (real FLAC files)."""
    from audiocert.corpus import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    return generate_corpus(root, num_speakers=4, utterances_per_speaker=6, seed=3, min_seconds=2.0,
                           max_seconds=3.0, progress=False)
