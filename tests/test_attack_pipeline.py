"""`audiocert attack` end to end, through the real CLI: the same plan / shard / reduce / resume / failure machinery
as certification, on the same test points; the consistency check against the certificates; bad settings named.
The algorithm itself (SmoothAdv PGD, PREDICT as the judge) is tested on closed-form classifiers in test_attacks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, certify_overrides, kill_with_orphans, run_cli
from test_trust import mounted_tmpfs

from audiocert.shards import PLAN_FILE

pytestmark = pytest.mark.slow

ATTACK = ("attack.steps=2", "attack.samples=4", "attack.n=30", "attack.eps=[0.5,4.0]", "attack.shard.examples=2",
          "attack.batch_size=8")  # 8 points x 2 budgets, 4 shards


def attack_dir(runs: Path, sweep: str) -> Path:
    [found] = [p.parent for p in (runs / "sweeps" / sweep).glob(f"*/attack-*/{PLAN_FILE}")]
    return found


def table(directory: Path) -> list[dict]:
    with open(directory / "attack.tsv") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_attack_runs_on_the_certified_points_and_every_executor_agrees(trained):
    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "atk", "launcher=debug")], runs)
    result = run_cli(["attack", *certify_overrides(trained, "atk", "launcher=local", *ATTACK)], runs)
    assert "; 0 of " in result.stdout and "certified point(s) contradict their certificate" in result.stdout, \
        result.stdout
    local = attack_dir(runs, "atk")
    certify_dir = local.parent
    plan, parent = (json.loads(p.read_text()) for p in (local / PLAN_FILE, certify_dir / PLAN_FILE))
    assert plan["kind"] == "attack" and plan["parent_hash"] == parent["config_hash"]
    assert plan["inputs"] == parent["inputs"]  # the same test points, the same audio fingerprints
    summary = json.loads((local / "summary.json").read_text())
    assert summary["points"] == 8 and summary["certificates"] == "reduced" and summary["contradictions"] == 0
    assert len(summary["certified_accuracy"]) == 2 and summary["f_robust_accuracy"] is not None
    rows = table(local)
    assert len(rows) == 16 and {r["idx"] for r in rows} == {str(i["index"]) for i in plan["inputs"]}
    assert all(float(r["g_l2"]) <= float(r["eps"]) * (1 + 1e-6) for r in rows)  # every delta in its ball
    # One process, the same shards: the same results, to the last bit.
    for sweep in ("atk-debug", "atk-cut"):  # an attack needs its certification (the same points, reduced)
        run_cli(["certify", *certify_overrides(trained, sweep, "launcher=debug")], runs)
    run_cli(["attack", *certify_overrides(trained, "atk-debug", "launcher=debug", *ATTACK)], runs)
    assert table(attack_dir(runs, "atk-debug")) == rows
    # Other shards (all points in one, one budget each): the same decisions; the norms of f's deltas may differ
    # in float32's last bits (f is attacked at its budgets in one batch, whose composition changes the kernels'
    # summation order), well inside a relative 1e-5.
    run_cli(["attack", *certify_overrides(trained, "atk-cut", "launcher=debug", *ATTACK,
                                          "attack.shard.examples=8", "attack.shard.eps=1")], runs)
    cut = attack_dir(runs, "atk-cut")
    assert len(list((cut / "shards").glob("*.json"))) == 2  # 1 block of points x 2 budget ranges
    other = table(cut)
    decisions = ("idx", "label", "eps", "g_predict", "g_robust", "f_class", "f_robust", "passes", "nonfinite")
    assert [{k: r[k] for k in decisions} for r in other] == [{k: r[k] for k in decisions} for r in rows]
    for key in ("g_l2", "g_linf", "f_l2"):
        assert [float(r[key]) for r in other] == pytest.approx([float(r[key]) for r in rows], rel=1e-5)
    # The report shows both curves for the config.
    run_cli(["report", str(runs / "sweeps" / "atk")], runs)
    report = (runs / "sweeps" / "atk" / "report" / "report.md").read_text()
    assert "## Certified vs empirical robustness" in report and "robust accuracy of g" in report
    assert list((runs / "sweeps" / "atk" / "report").glob("robustness_*.png"))


def test_a_planted_unsound_certificate_is_caught_by_the_attack(trained):
    """Radii inflated a thousandfold put every budget inside every certified ball: each successful attack on a
    certified point is then a contradiction, and the reducer counts and names them."""
    from audiocert.kinds.certify import certificates_tsv, read_certificates
    from audiocert.kinds.certify.certificates import certificates_digest
    from audiocert.provenance import SEAL_KEY, atomic_write_json, seal
    from audiocert.shards import inventory

    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "atk", "launcher=debug")], runs)
    run_cli(["attack", *certify_overrides(trained, "atk", "launcher=local", *ATTACK)], runs)
    directory = attack_dir(runs, "atk")
    honest = json.loads((directory / "summary.json").read_text())
    rows = read_certificates(directory.parent / "certificates.tsv")
    certified = {r["idx"]: r["predict"] for r in rows if r["predict"] >= 0}
    broken = [int(r["idx"]) for r in table(directory) if int(r["idx"]) in certified
              and int(r["g_predict"]) not in (-1, certified[int(r["idx"])])]
    expected = len(broken)
    assert expected > 0, "no attack succeeded on a certified point: the planted certificate would catch nothing"
    for row in rows:
        row["radius"] *= 1000.0
    # Planted as a faulty reducer would write it: the table and the digest its sealed summary records (a table
    # edited by hand is refused before it is used: test_trust).
    table_text = certificates_tsv(rows)
    (directory.parent / "certificates.tsv").write_text(table_text)
    certify_summary = json.loads((directory.parent / "summary.json").read_text())
    certify_summary.pop(SEAL_KEY)
    atomic_write_json(directory.parent / "summary.json",
                      seal({**certify_summary, "certificates_sha256": certificates_digest(table_text)}))
    from audiocert.kinds import kind_of
    from audiocert.shards import read_plan

    summary = kind_of(read_plan(directory)).reduce(directory, inventory(directory, merge=True))
    # A point counts once, whatever the number of budgets that contradict it; every pair is listed.
    assert summary["contradiction_pairs"] == expected > honest["contradiction_pairs"] == 0
    assert summary["contradictions"] == len(set(broken)) > honest["contradictions"] == 0
    assert summary["contradiction_p_value"] < 0.01  # k >= 1 of N <= 8 points at a rate alpha = 0.001
    assert {c["idx"] for c in summary["contradiction_points"]} <= set(certified)


def test_killed_attack_resumes_without_recomputing_and_a_failed_shard_fails_the_command(trained):
    runs, sweep = trained["runs"], "atk-kill"
    # One point a shard, and more steps than elsewhere: shards of a second or so, so the kill lands mid-attack
    # on a fast machine too (a worker finishes at most the shard in hand once its command is gone).
    slower = [a for a in ATTACK if not a.startswith(("attack.steps=", "attack.shard.examples="))]
    args = ["attack", *certify_overrides(trained, sweep, "launcher=local", "launcher.workers=1", *slower,
                                         "attack.steps=16", "attack.shard.examples=1")]
    run_cli(["certify", *certify_overrides(trained, sweep, "launcher=debug")], runs)  # what the attack reads
    env = {**os.environ, "AUDIOCERT_RUNS_DIR": str(runs)}
    parent = subprocess.Popen([sys.executable, "-m", "audiocert.cli", *args], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while len(list(runs.glob(f"sweeps/{sweep}/*/attack-*/shards/*.json"))) < 2:
        assert parent.poll() is None and time.time() < deadline, "the attack ended or stalled before 2 shards"
        time.sleep(0.2)
    kill_with_orphans(parent, runs / "sweeps" / sweep)
    directory = attack_dir(runs, sweep)
    done = {p.name: p.stat().st_mtime_ns for p in (directory / "shards").glob("*.json")}
    assert 2 <= len(done) < 8 and not (directory / "summary.json").exists()
    result = run_cli(args, runs)
    assert f"{8 - len(done)} of 8 shard(s) to run" in result.stderr + result.stdout
    assert {n: m for n, m in ((p.name, p.stat().st_mtime_ns) for p in (directory / "shards").glob("*.json"))
            if n in done} == done  # finished shards were not computed again
    assert json.loads((directory / "summary.json").read_text())["points"] == 8

    # A shard that cannot write its results fails the command, naming the file, the cause and the log.
    (directory / "summary.json").unlink()
    victim = sorted((directory / "shards").glob("*.json"))[0]
    victim.unlink()
    with mounted_tmpfs(directory / "shards", "ro,size=64k"):
        failed = run_cli([*args, "launcher.attempts=1"], runs, check=False)
    assert failed.returncode != 0 and "FAILED" in failed.stderr and "log:" in failed.stderr, failed.stderr[-3000:]
    assert "Read-only file system" in failed.stderr


# Every field's check is unit-tested in test_attacks.py; these prove the command runs them before any work.
def test_an_attack_on_a_config_never_certified_is_refused_naming_the_command(trained):
    """Leaving out one of the certification's overrides would attack a config that was never certified (another
    config, other points): refused before anything is planned, naming the command to run first."""
    runs = trained["runs"]
    result = run_cli(["attack", *certify_overrides(trained, "atk-never", "launcher=debug", *ATTACK)], runs, check=False)
    assert result.returncode == 1 and "run `audiocert certify` with the same overrides first" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("audiocert attack: run `audiocert certify`") and "Traceback" not in result.stderr, \
        result.stderr
    assert not list(runs.glob("sweeps/atk-never/*/attack-*"))


@pytest.mark.parametrize("override,needle", [
    ("attack.eps=[0.5,-1]", "attack.eps[1]=-1"), ("attack.space=feature", "attack.space='feature'"),
    ("attack.restarts=1.5", "attack.restarts=1.5"), ("attack.eps=[inf]", "attack.eps[0]=inf"),
])
def test_bad_attack_settings_are_named_before_any_work(trained, override, needle):
    runs = trained["runs"]
    result = run_cli(["attack", *certify_overrides(trained, "atk-bad", "launcher=debug", *ATTACK, override)], runs,
                     check=False)
    assert result.returncode != 0 and needle in result.stderr, (override, result.stderr[-2000:])
    assert not list(runs.glob("sweeps/atk-bad/*/attack-*/shards/*.json"))


def test_an_unjudged_budget_is_counted_and_reported_and_a_bare_none_is_damage(trained):
    """A shard that found an attacked input not finite (class -2, its norms None: test_attacks shows a worker
    writing one) reduces to the outcome 'unjudged': counted in summary.json, inside the upper bound, marked in
    attack.tsv and robust.csv, named in the CLI line and the report. A None norm where the judge did judge is
    damage, and the shard is refused."""
    from audiocert.kinds import kind_of
    from audiocert.provenance import SEAL_KEY, atomic_write_sealed, seal
    from audiocert.shards import inventory, read_plan

    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "atk-unjudged", "launcher=debug")], runs)
    run_cli(["attack", *certify_overrides(trained, "atk-unjudged", "launcher=debug", *ATTACK)], runs)
    directory = attack_dir(runs, "atk-unjudged")
    honest = json.loads((directory / "summary.json").read_text())
    [shard, *_] = sorted((directory / "shards").glob("*.json"))
    record = json.loads(shard.read_text())
    record.pop(SEAL_KEY)
    point = record["results"][0]
    point["predict"][1], point["base_class"][1] = -2, -2
    for result in (point["smoothed"], point["base"]):
        result["l2"][1] = result["linf"][1] = None
    atomic_write_sealed(shard, seal(record))
    kind = kind_of(read_plan(directory))
    summary = kind.reduce(directory, inventory(directory, merge=True))
    assert summary["unjudged"] == 1 and honest["unjudged"] == 0
    assert summary["g_unjudged"][1] == pytest.approx(1 / summary["points"]) and summary["g_unjudged"][0] == 0
    for e in range(2):  # every (point, budget) has exactly one outcome, and unjudged is not broken
        assert sum(summary[f"g_{k}"][e] for k in ("held", "flipped", "undecided", "unjudged")) == pytest.approx(1)
        assert summary["g_robust_upper"][e] == pytest.approx(1 - summary["g_flipped"][e])
    [row] = [r for r in table(directory) if r["idx"] == str(point["example"]) and float(r["eps"]) == 4.0]
    assert row["g_outcome"] == "unjudged" and row["g_l2"] == "" and row["g_predict"] == "-2"
    with open(directory / "robust.csv") as handle:
        curve = list(csv.DictReader(handle))
    assert float(curve[1]["g_unjudged"]) == pytest.approx(1 / summary["points"])
    assert "unjudged" in kind.outcome(summary)
    run_cli(["report", str(runs / "sweeps" / "atk-unjudged")], runs)
    report = (runs / "sweeps" / "atk-unjudged" / "report" / "report.md").read_text()
    assert "1 (point, budget) pair(s) were not judged: the attacked input was not finite" in report
    # A None norm on a budget the judge decided is not an unjudged input but a damaged record.
    point["predict"][1] = point["label"]
    atomic_write_sealed(shard, seal(record))
    damaged = inventory(directory, merge=True)
    assert list(damaged.invalid) == [shard] and "norms" in damaged.invalid[shard], damaged.invalid
