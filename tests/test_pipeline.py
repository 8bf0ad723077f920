"""End-to-end: the real CLI trains, certifies through the debug and local executors, resumes and reduces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import certify_overrides, kill_with_orphans, read_certs, run_cli

from audiocert.kinds.certify import reduce_config
from audiocert.provenance import atomic_write_sealed
from audiocert.shards import PLAN_FILE, IncompleteSweepError

pytestmark = pytest.mark.slow
NO_WANDB = "logger.mode=disabled"  # training runs on W&B are test_dashboard's (the fixture's)


def config_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob(f"*/{PLAN_FILE}"))


def test_training_improves_resumes_and_checkpoint_loads_weights_only(trained, tmp_path):
    """The fixture's training, then two more epochs resumed in the same directory. The resumed run trains its own
    copy of the fixture's command (a run's directory is part of its config, and the fixture's model is trained
    once for every xdist worker, then copied)."""
    runs = tmp_path / "runs"
    run_cli(["train", *trained["overrides"], NO_WANDB, "train.lr=0.003", "train.epochs=3", "train.batch_size=16",
             "train.validation_crops_per_speaker=6"], runs)
    trained = {**trained, "runs": runs, "dir": runs / "train" / trained["dir"].name}
    history = json.loads((trained["dir"] / "metrics.json").read_text())
    assert history["epochs_run"] == 3
    # 4 speakers: chance is 0.25. Validation crops come from the training utterances; the 16 test crops of this
    # tiny corpus come from 1-2 unseen utterances per speaker, too few to judge 3 epochs by (0.3125 with torch 2.14.1).
    assert history["best_val_accuracy"] > 0.25 + 0.25
    state = torch.load(trained["dir"] / "best.pt", weights_only=True)
    assert state["config"]["dataset"]["name"] == "tiny4" and "clean_test_accuracy" in state["metrics"]
    losses = [h["loss"] for h in state["metrics"]["history"]]
    assert losses[-1] < losses[0]
    # Resume: two more epochs continue the same history from last.pt.
    result = run_cli(["train", *trained["overrides"], NO_WANDB, "train.lr=0.003", "train.epochs=5",
                      "train.batch_size=16", "train.validation_crops_per_speaker=6", "train.patience=100"],
                     trained["runs"])
    assert "resuming from" in result.stderr + result.stdout
    last = torch.load(trained["dir"] / "last.pt", weights_only=True)
    assert [h["epoch"] for h in last["metrics"]["history"]] == [0, 1, 2, 3, 4]
    # The same command again finds its finished model and trains nothing more.
    before = {p.name: p.stat().st_mtime_ns for p in trained["dir"].glob("*.pt")}
    result = run_cli(["train", *trained["overrides"], NO_WANDB, "train.lr=0.003", "train.epochs=5",
                      "train.batch_size=16", "train.validation_crops_per_speaker=6", "train.patience=100"],
                     trained["runs"])
    assert "already holds this config's trained model" in result.stderr + result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in trained["dir"].glob("*.pt")} == before


def test_time_budget_stops_at_the_batch_that_would_overrun_it(trained):
    # The first batch always runs (nothing to judge it by); with a 60 ms budget the second cannot fit.
    result = run_cli(["train", *trained["overrides"], NO_WANDB, "run_name=budget", "train.epochs=5",
                      "train.batch_size=16", "train.validation_crops_per_speaker=2", "train.max_minutes=0.001"],
                     trained["runs"])
    output = result.stderr + result.stdout
    assert "time budget train.max_minutes=0.001 reached" in output and "stopped before batch 2/16 of epoch 1" in output
    metrics = json.loads((trained["runs"] / "train" / "budget" / "metrics.json").read_text())
    assert metrics["stopped_by_budget"] and metrics["position"] == {"epoch": 0, "step": 1}
    assert metrics["epochs_run"] == 0
    # A changed learning rate is another training run: last.pt is not resumed (a changed budget alone would be).
    result = run_cli(["train", *trained["overrides"], NO_WANDB, "run_name=budget", "train.epochs=5",
                      "train.batch_size=16", "train.validation_crops_per_speaker=2", "train.max_minutes=0.001",
                      "train.lr=0.01"],
                     trained["runs"])
    output = result.stdout + result.stderr
    assert "trained under another config (train.lr: 0.001 -> 0.01): training from scratch" in output
    last = torch.load(trained["runs"] / "train" / "budget" / "last.pt", weights_only=True)
    assert (last["epoch"], last["step"]) == (0, 1) and last["metrics"]["history"] == []


def test_same_certificates_from_every_executor_and_shard_size(trained):
    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "exec-debug", "launcher=debug")], runs)
    run_cli(["certify", *certify_overrides(trained, "exec-local", "launcher=local")], runs)
    run_cli(["certify", *certify_overrides(trained, "exec-shards", "launcher=debug", "certify.shard.samples=7",
                                           "certify.shard.examples=3", "certify.batch_size=150")], runs)
    [debug] = config_dirs(runs / "sweeps" / "exec-debug")
    [local] = config_dirs(runs / "sweeps" / "exec-local")
    [other] = config_dirs(runs / "sweeps" / "exec-shards")
    assert len(list((other / "shards").glob("*.json"))) > len(list((debug / "shards").glob("*.json")))
    assert read_certs(debug) == read_certs(local) == read_certs(other)
    summary = json.loads((debug / "summary.json").read_text())
    assert summary["num_points"] == 8 and summary["n"] == 60
    provenance = json.loads((debug / "provenance.json").read_text())
    for key in ("config", "seed", "plan_code_version", "checkpoint_digest", "stage", "sigma", "semantics"):
        assert key in provenance


def test_reducer_refuses_missing_duplicate_foreign_and_truncated(trained, tmp_path):
    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "refuse", "launcher=debug")], runs)
    [source] = config_dirs(runs / "sweeps" / "refuse")
    good = read_certs(source)

    def fresh() -> Path:
        target = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(source, target)
        return target

    shards = sorted((source / "shards").glob("*.json"))
    def rename_only(d: Path) -> None:
        (d / "shards" / shards[0].name).rename(d / "shards" / "renamed.json")

    def foreign(d: Path) -> None:  # another config's counts, sealed as a real shard file is
        path = d / "shards" / shards[0].name
        atomic_write_sealed(path, json.loads(path.read_text()) | {"config_hash": "0" * 12})

    def edited(d: Path) -> None:  # a count changed by hand: its seal no longer matches
        path = d / "shards" / shards[1].name
        path.write_text(path.read_text().replace('"counts":[', '"counts":[1', 1))

    cases = [
        (lambda d: (d / "shards" / shards[1].name).unlink(), "1 missing shard(s): 1"),
        (lambda d: shutil.copy(d / "shards" / shards[0].name, d / "shards" / "copy-of-0.json"), "present 2 times"),
        (rename_only, "name that is not its own"),
        (lambda d: (d / "shards" / shards[2].name).write_text('{"format": 1, "config_ha'), "unreadable"),
        (foreign, "foreign config 000000000000"),
        (edited, "does not match its content_sha256"),
    ]
    for damage, needle in cases:
        target = fresh()
        damage(target)
        before = (target / "certificates.tsv").read_text()
        with pytest.raises(IncompleteSweepError) as error:
            reduce_config(target)
        message = str(error.value)
        assert needle in message, message
        assert str(target) in message
        assert (target / "certificates.tsv").read_text() == before  # results already written are kept
    assert read_certs(source) == good


def test_resume_recomputes_only_deleted_and_half_written_shards(trained):
    runs = trained["runs"]
    args = ["certify", *certify_overrides(trained, "resume", "launcher=local", "launcher.workers=1")]
    run_cli(args, runs)
    [config] = config_dirs(runs / "sweeps" / "resume")
    good = read_certs(config)
    shards = sorted((config / "shards").glob("*.json"))
    kept = {p.name: p.stat().st_mtime_ns for p in shards[2:]}
    shards[0].unlink()
    shards[1].write_text(shards[1].read_text()[:100])  # what a shard killed mid-write would look like without rename
    result = run_cli(args, runs)
    assert f"2 of {len(shards)} shard(s) to run" in result.stderr + result.stdout
    assert read_certs(config) == good
    assert {p.name: p.stat().st_mtime_ns for p in shards[2:]} == kept  # finished shards were not rerun


def test_failing_shard_is_reported_with_log_and_does_not_block_other_configs(trained, tmp_path):
    from hydra import compose, initialize_config_dir

    from audiocert.launching.planning import plan_config
    from audiocert.launching.sweep import finish_sweep
    from audiocert.status import format_status

    runs = trained["runs"]
    from audiocert.checkpoint import save_checkpoint

    broken = tmp_path / "broken.pt"  # a second, different checkpoint (so a second config hash)
    state = torch.load(trained["dir"] / "best.pt", weights_only=True)
    save_checkpoint(broken, state | {"metrics": {**state["metrics"], "copy": 1}})
    sweep = tmp_path / "sweep"
    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
        cfgs = [compose("certify", overrides=certify_overrides(trained, "fail", "launcher=local",
                                                               f"sweep.dir={sweep}", f"checkpoint={ckpt}",
                                                               f"paths.runs_dir={runs}"))
                for ckpt in (trained["dir"] / "best.pt", broken)]
    entries = [plan_config(cfg) for cfg in cfgs]
    broken.write_bytes(b"not a checkpoint any more")  # the checkpoint changes after planning: its shards must fail
    results = finish_sweep(entries, progress=False)
    ok, failed = (results[0], results[1]) if entries[0]["config_dir"] == results[0]["config_dir"] else results[::-1]
    assert "summary" in ok and (Path(ok["config_dir"]) / "certificates.tsv").is_file()
    assert "error" in failed and "missing shard" in failed["error"]
    status = format_status(sweep)
    assert "failed" in status and "log:" in status and "changed since the sweep was planned" in status
    failure = json.loads(next((Path(failed["config_dir"]) / "failures").glob("*.json")).read_text())
    assert failure["log"] and Path(failure["log"]).is_file()


def test_checkpoint_of_another_architecture_is_refused(trained, tmp_path):
    from audiocert.checkpoint import load_checkpoint, save_checkpoint

    state = torch.load(trained["dir"] / "best.pt", weights_only=True)
    assert load_checkpoint(trained["dir"] / "best.pt").speakers == state["speakers"]
    old = tmp_path / "v1.pt"  # what an audiocert before the Keras-padding fix wrote: no architecture label
    save_checkpoint(old, {**state, "architecture": None})
    with pytest.raises(ValueError, match=r"v1\.pt holds a v1 \(unlabelled\) model.*Retrain"):
        load_checkpoint(old)


def test_bad_config_values_are_named(trained):
    runs = trained["runs"]
    for override, needle in [("certify.n0=0", "certify.n0=0"), ("smoothing.sigma=-1", "smoothing.sigma=-1"),
                             ("certify.alpha=0.7", "certify.alpha=0.7"),
                             ("certify.batch_size=10", "certify.batch_size=10 is below certify.block_size=50"),
                             ("certify.points_per_speaker=50", "certify.points_per_speaker=50"),
                             ("checkpoint=/nonexistent/best.pt", "/nonexistent/best.pt")]:
        result = run_cli(["certify", *certify_overrides(trained, "bad", "launcher=debug", override)], runs,
                         check=False)
        assert result.returncode != 0 and needle in result.stderr, (override, result.stderr[-2000:])
    result = run_cli(["certify", *certify_overrides(trained, "bad", "representation.stage=logmel")], runs,
                     check=False)
    assert result.returncode != 0 and "logmel" in result.stderr


def test_cli_help_lists_subcommands():
    result = run_cli(["--help"], Path("/tmp"))
    for name in ("corpus", "train", "certify", "reduce", "status", "report", "stats", "examples", "radius-table"):
        assert f"  {name}" in result.stdout
    table = run_cli(["radius-table"], Path("/tmp")).stdout
    assert "| 0.50 | 1.232 | 1.599 | 1.906 |" in table


SEQUENTIAL = ("certify.algorithm=sequential", "certify.n0=100", "certify.n=400", "certify.sequential.first=50",
              "certify.shard.samples=100")  # looks at 50, 100, 200, 400 estimation samples


def test_sequential_rounds_agree_across_executors_cost_less_and_resume_after_a_kill(trained):
    """Rounds of shards give the same certificates under every executor and after `kill -9` at any round, with
    fewer forward passes than Cohen's fixed n; each (point, phase) is one prefix of its noise stream."""
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO

    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "seq-debug", "launcher=debug", *SEQUENTIAL)], runs)
    run_cli(["certify", *certify_overrides(trained, "seq-cohen", "launcher=debug", *SEQUENTIAL,
                                           "certify.algorithm=cohen")], runs)
    [debug] = config_dirs(runs / "sweeps" / "seq-debug")
    [cohen] = config_dirs(runs / "sweeps" / "seq-cohen")
    summary, fixed = (json.loads((d / "summary.json").read_text()) for d in (debug, cohen))
    assert summary["algorithm"] == "sequential" and fixed["algorithm"] == "cohen"
    assert summary["rounds"] > 1 and fixed["rounds"] == 1
    assert fixed["forward_passes_per_point"] == 500
    assert summary["forward_passes_per_point"] < 500
    assert (debug / "rounds" / "001.json").is_file()
    # The report's runs table: algorithm, passes per point, and the difference against the matching Cohen config.
    report = run_cli(["report", str(runs / "sweeps" / "seq-debug"), str(runs / "sweeps" / "seq-cohen"), "--output",
                      str(runs / "seq-report")], runs)
    runs_table = [line.split(" | ") for line in (runs / "seq-report" / "report.md").read_text().splitlines()
                  if line.startswith("| ") and line.count("`") >= 6]  # rows of the runs table (hash, digest, dir)
    rows = {row[3]: row for row in runs_table}
    assert len(runs_table) == 2 and set(rows) == {"cohen", "sequential"}, report.stdout
    assert rows["sequential"][8] == f"{summary['forward_passes_per_point']:,.0f}"
    assert rows["cohen"][8] == "500" and rows["cohen"][9] == "-"
    ours, theirs = summary["certified_accuracy"], fixed["certified_accuracy"]
    worst = max((ours[r] - theirs[r] for r in theirs), key=abs)
    assert rows["sequential"][9] == f"{worst:+.3f}"

    # Killed (with its workers) once round 1 is planned, then resumed by the same command.
    args = ["certify", *certify_overrides(trained, "seq-killed", "launcher=local", "launcher.workers=2", *SEQUENTIAL)]
    env = {**os.environ, "AUDIOCERT_RUNS_DIR": str(runs)}
    parent = subprocess.Popen([sys.executable, "-m", "audiocert.cli", *args], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(runs.glob("sweeps/seq-killed/*/rounds/001.json")):
        assert parent.poll() is None and time.time() < deadline, "the sweep ended or stalled before round 1"
        time.sleep(0.2)
    kill_with_orphans(parent, runs / "sweeps" / "seq-killed")
    [killed] = config_dirs(runs / "sweeps" / "seq-killed")
    assert not (killed / "certificates.tsv").exists()
    resumed = run_cli(args, runs)
    # The progress bar names the round it runs (the sweep's, not this process's first pass).
    output = (resumed.stderr + resumed.stdout).replace("\r", "\n")
    first_bar = next(line for line in output.splitlines() if "shards done" in line)
    assert "shards done (round" in first_bar, first_bar
    assert read_certs(killed) == read_certs(debug)
    # Every shard file is one planned shard (none written twice under another name, none left over).
    shards = sorted(json.loads(p.read_text())["index"] for p in (killed / "shards").glob("*.json"))
    assert shards == list(range(len(shards)))
    assert json.loads((killed / "summary.json").read_text())["samples"] == summary["samples"]
