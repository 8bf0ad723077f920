"""`audiocert attack certified=DIR` and `audiocert perceptibility certified=DIR`: the certification's own config, read
from its sealed plan.json, so an attack cannot land on another config because an override was left out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import certify_overrides, run_cli

from audiocert.shards import PLAN_FILE

pytestmark = pytest.mark.slow

ATTACK = ("attack.steps=2", "attack.samples=4", "attack.n=30", "attack.eps=[0.5]", "attack.shard.examples=4",
          "attack.batch_size=8", "attack.points_per_speaker=1", "launcher=debug")


def test_attack_of_a_certified_directory_is_the_attack_of_its_config(trained):
    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "cdir", "launcher=debug", "smoothing.sigma=0.5",
                                           "representation=magspec")], runs)
    [config_dir] = (runs / "sweeps" / "cdir").glob("tiny4-magspec-sigma0.5-*")
    # Only attack settings on the command line: the sigma, stage, dataset and model come from plan.json.
    result = run_cli(["attack", f"certified={config_dir}", *ATTACK], runs)
    assert "tiny4-magspec-sigma0.5-attack-stage: 4 points attacked" in result.stdout + result.stderr
    [attack_dir] = [p.parent for p in config_dir.glob(f"attack-*/{PLAN_FILE}")]
    plan = json.loads((attack_dir / PLAN_FILE).read_text())
    assert plan["config"]["smoothing"]["sigma"] == 0.5 and plan["config"]["representation"]["stage"] == "magspec"
    assert not (runs / "sweeps" / "tiny4-rescnn_small-quick").exists()  # nothing landed in the default sweep
    # The override form of the same config plans the same attack: nothing is computed again.
    again = run_cli(["attack", *certify_overrides(trained, "cdir", "smoothing.sigma=0.5", "representation=magspec",
                                                  *ATTACK)], runs)
    assert [p.parent for p in config_dir.glob(f"attack-*/{PLAN_FILE}")] == [attack_dir]
    assert "0 of 1 shard(s) to run" in again.stdout + again.stderr
    # A sweep directory: every certified config of it (here one), as a multirun.
    measured = run_cli(["perceptibility", f"certified={config_dir.parent}", "perceptibility.draws=2",
                        "perceptibility.budget_iterations=8", "perceptibility.radii=[0.01]",
                        "perceptibility.attack.enabled=false", "perceptibility.points_per_speaker=1",
                        "launcher=debug"], runs)
    assert "tiny4-magspec-sigma0.5-perceptibility: 4 points measured" in measured.stdout + measured.stderr


def test_a_certified_setting_given_with_certified_is_refused(trained, tmp_path):
    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "cdir2", "launcher=debug")], runs)
    [config_dir] = (runs / "sweeps" / "cdir2").glob("tiny4-*")
    result = run_cli(["attack", f"certified={config_dir}", "smoothing.sigma=0.25", *ATTACK], runs, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"audiocert attack: smoothing.sigma=0.25: attack certified={config_dir} takes this setting from the "
        "certified config (its plan.json); drop it, or leave certified= out to give every setting yourself"]
    result = run_cli(["attack", f"certified={tmp_path}/none", *ATTACK], runs, check=False)
    assert result.returncode == 1 and f"certified={tmp_path}/none: no such directory" in result.stderr
    assert not list(Path(config_dir).glob("attack-*"))
