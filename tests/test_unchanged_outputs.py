"""The redesign into kinds, shards, launching and reporting layers changes no result: a small fixed sweep (train,
certify Cohen and sequential, attack, perceptibility, report) writes the same certificates, tables and trained
weights as the code before it (digests in tests/data/golden_outputs.json, written by tests/golden.py at commit
35de732, on this project's 2-core CPU machine).

CPU floating point is deterministic for a fixed machine kind and thread count, which CI shares with the machine
that wrote the digests; on another processor a digest may legitimately differ (the test says which file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO
from golden import run

GOLDEN = Path(__file__).parent / "data" / "golden_outputs.json"


@pytest.mark.slow
def test_a_fixed_sweep_writes_what_the_code_before_the_redesign_wrote(tiny_corpus, trained, tmp_path):
    expected = json.loads(GOLDEN.read_text())
    found = run(REPO, tmp_path, corpus=tiny_corpus, trained_runs=trained["runs"])
    differ = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
    assert not differ, f"outputs differ from the code before the redesign: {differ}"
