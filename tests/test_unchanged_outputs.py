"""The redesign into kinds, shards, launching and reporting layers changes no result: a small fixed sweep (train,
certify Cohen and sequential, attack, perceptibility, report) writes the same certificates, tables and trained
weights as the code before it (tests/data/golden_outputs.json: the digests tests/golden.py wrote at commit 35de732,
on this project's 2-core CPU machine), except the files a later change altered on purpose, each listed there with
the change (the attack's judge and perceptibility's meaning of "certified", issue 21).

CPU floating point is deterministic for a fixed machine kind and thread count, which CI shares with the machine
that wrote the digests; on another processor a digest may legitimately differ (the test says which file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from golden import run

GOLDEN = Path(__file__).parent / "data" / "golden_outputs.json"


@pytest.mark.slow
def test_a_fixed_sweep_writes_what_the_code_before_the_redesign_wrote(tiny_corpus, trained, tmp_path):
    golden = json.loads(GOLDEN.read_text())
    expected, before, changed = golden["outputs"], golden["before_redesign"], golden["changed_on_purpose"]
    assert set(expected) == set(before) and all(
        expected[k] == before[k] for k in expected if k not in changed), "a digest differs with no change named"
    def cli(checkout: Path, runs: Path, *args: str) -> str:
        return run_cli([*args], runs).stdout  # run_cli runs in REPO, the checkout under test

    found = run(REPO, tmp_path, corpus=tiny_corpus, trained_runs=trained["runs"], cli=cli)
    differ = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
    assert not differ, f"outputs differ from the code before the redesign: {differ}"
