"""The dashboard a researcher watches, read back from the offline run files with tests/wandb_reader.py: live rows
(progress and the partial certified-accuracy curve with its band) written while the sweep ran, final summaries with
intervals, media and artifacts, the sweep's comparison run; and W&B trouble costs neither results nor time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import certify_overrides, run_cli
from wandb_reader import read_run, read_runs

from audiocert.shards import PLAN_FILE
from audiocert.statistics import REPORT_RADII

pytestmark = pytest.mark.slow
LONGER = ("certify.n=1000", "certify.shard.samples=125")  # 16 shards over some seconds: the monitor sees them land
ATTACK = ("attack.steps=2", "attack.samples=4", "attack.n=30", "attack.eps=[0.5,4.0]", "attack.shard.examples=2",
          "attack.batch_size=8")


def with_logger(args: list[str], *logger: str) -> list[str]:
    return [a for a in args if not a.startswith("logger.mode=")] + list(logger)


def shard_finish_times(config_dir: Path) -> list[float]:
    return sorted(json.loads(p.read_text())["finished_at"] for p in (config_dir / "shards").glob("*.json"))


def config_run(config_dir: Path):
    info = json.loads((config_dir / "wandb_run.json").read_text())
    return info, [read_run(p) for p in sorted(Path(info["run_dir"]).parent.glob(f"*-{info['run_id']}/*.wandb"))]


def check_final_run(config_dir: Path, runs) -> None:
    """The final rows: summaries with intervals at every report radius, clean accuracies, the certificates."""
    summary = json.loads((config_dir / "summary.json").read_text())
    final = runs[-1].summary
    for radius in REPORT_RADII:
        key = f"r={radius:g}"
        low, high = final[f"certified_accuracy_low/{key}"], final[f"certified_accuracy_high/{key}"]
        assert low <= final[f"certified_accuracy/{key}"] <= high
        assert [low, high] == pytest.approx(summary["certified_accuracy_interval"][f"{radius:g}"])
    assert final["clean_accuracy/g_certify"] == summary["smoothed_accuracy"]
    assert final["clean_accuracy/g_certify_low"] <= final["clean_accuracy/g_certify"] <= final[
        "clean_accuracy/g_certify_high"]
    assert final["abstain_fraction"] == summary["abstain_fraction"] and "is_degenerate" in final
    assert any(a["type"] == "certificates" for r in runs for a in r.artifacts)
    assert any("certificates" in row for r in runs for row in r.history)
    audio = {k: v for r in runs for row in r.history for k, v in row.items() if k.startswith("example/")}
    assert audio["example/clean"]["_type"] == "audio-file"
    assert ("example/perturbed" in audio) == (summary["stage"] != "mfbe")  # mfbe has no waveform to play


def check_training_link(trained: dict, certify_run) -> None:
    """The training run (job_type train) holds its curves and checkpoint; the certification links to it."""
    import hashlib

    record = json.loads((trained["dir"] / "wandb_run.json").read_text())
    [training] = [read_run(p) for p in Path(record["run_dir"]).glob("*.wandb")]
    assert training.job_type == "train" and certify_run.config["training_run_id"] == training.run_id
    epochs = training.rows_with("train/loss")
    assert [row["train/epoch"] for row in epochs] == [1, 2, 3]  # the fixture trains 3 epochs
    assert all(row["train/lr"] > 0 and 0 <= row["train/val_accuracy"] <= 1 for row in epochs)
    digest = hashlib.sha256((trained["dir"] / "best.pt").read_bytes()).hexdigest()
    assert training.summary["best_checkpoint/sha256"] == digest
    assert training.summary["clean_test_accuracy"] == trained["metrics"]["clean_test_accuracy"]
    assert training.summary["augment/stage"] == "none" and "budget_used" in training.summary
    assert any(a["type"] == "model" and a["manifest"][0][1].startswith("file://") for a in training.artifacts)
    assert certify_run.config["checkpoint_sha256_16"] == digest[:16]


def test_local_sweep_logs_live_rows_before_the_results(trained):
    runs_dir, sweep = trained["runs"], "dashboard-local"
    args = with_logger(["certify", *certify_overrides(trained, sweep, "launcher=local", "launcher.workers=1",
                                                      *LONGER)],
                       "logger.mode=offline", "logger.live_interval_s=1")
    run_cli(args, runs_dir)
    [config] = [p.parent for p in (runs_dir / "sweeps" / sweep).glob(f"*/{PLAN_FILE}")]
    info, runs = config_run(config)
    rows = [row for r in runs for row in r.history]
    live = [row for row in rows if "live/points_finished" in row]
    finished = shard_finish_times(config)
    # Live rows logged while shards were still landing: a partial curve over fewer points than the plan's.
    early = [row for row in live if row["_timestamp"] < finished[-1]]
    assert early, (finished, [row["_timestamp"] for row in live])
    assert all(row["live/points_finished"] <= row["live/points_total"] for row in live)
    curve = [row for row in live if "live/certified_accuracy/r=0.25" in row]
    assert curve and all(row["live/certified_accuracy_low/r=0.25"] <= row["live/certified_accuracy/r=0.25"]
                         <= row["live/certified_accuracy_high/r=0.25"] for row in curve)
    assert len([row for row in rows if "progress/shard_finished_at" in row]) == len(finished)
    check_final_run(config, runs)
    assert runs[0].job_type == "certify" and runs[0].run_id == info["run_id"]
    check_training_link(trained, runs[0])
    status = run_cli(["status", str(runs_dir / "sweeps" / sweep)], runs_dir).stdout
    assert f"W&B run: {info['run_dir']}" in status
    sweep_runs = read_runs(Path(info["run_dir"]).parent)
    [comparison] = [r for rs in sweep_runs.values() for r in rs if r.job_type == "sweep"]
    [table_row] = [row for row in comparison.history if "sweep/comparison" in row]
    assert table_row["sweep/comparison"]["_type"] == "table-file"
    assert comparison.summary[f"configs/{runs[0].name}"]["sigma"] == 0.25

    # An attack of the same config: its own run with bounds and intervals, and the attacked example as media.
    attack = with_logger(["attack", *certify_overrides(trained, sweep, "launcher=debug", *LONGER, *ATTACK)],
                         "logger.mode=offline")
    run_cli(attack, runs_dir)
    [attack_dir] = config.glob("attack-*")
    _, [attack_run] = config_run(attack_dir)
    assert attack_run.job_type == "attack"
    assert attack_run.summary["attack/g_robust_upper_low/eps=4"] <= attack_run.summary["attack/g_robust_upper/eps=4"]
    assert "attack/g_clean_accuracy_high" in attack_run.summary
    media = {k: v["_type"] for row in attack_run.history for k, v in row.items() if k.startswith("attack/example")}
    assert (attack_dir / "example_clean.wav").is_file() == ("attack/example_clean" in media)
    assert (attack_dir / "example.png").is_file() == (media.get("attack/example_spectrogram") == "image-file")
    if (attack_dir / "example.wav").is_file():
        assert media["attack/example_attacked"] == "audio-file"
        assert (Path(attack_run.path).parent / "files" / attack_run.history[-1]["attack/example_attacked"]["path"]
                ).is_file()

    # The report's figures, as images in the sweep run (resumed: same id).
    run_cli(["report", "--wandb", "offline", str(runs_dir / "sweeps" / sweep)], runs_dir)
    sessions = read_runs(Path(info["run_dir"]).parent)[comparison.run_id]
    images = [k for r in sessions for row in r.history for k, v in row.items()
              if k.startswith("report/") and v.get("_type") == "image-file"]
    assert images and any(a["type"] == "report" for r in sessions for a in r.artifacts)
    # After the attack the sweep's comparison holds both configs (the certification's and the attack's).
    assert max(r.summary.get("configs", 0) for r in sessions) == 2
    steps = [row["_step"] for r in sessions for row in r.history]
    assert steps == sorted(set(steps))  # each session goes on from the step the last one reached


def test_wandb_trouble_costs_no_time(trained, monkeypatch):
    """Online with a wrong key and no server: results at once, exit 0, one warning; never wandb's wait. With
    wandb.init allowed 600 s (logger.init_timeout_s), a command that waited for it would take over 600 s; this
    one ends once its results are written and the monitor's 5 s grace is over (about 15 s here), so the bound of
    300 s tells the two apart on any machine that runs the suite at all."""
    runs_dir, sweep = trained["runs"], "dashboard-no-server"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    args = with_logger(["certify", *certify_overrides(trained, sweep, "launcher=local", "launcher.workers=1")],
                       "logger.mode=online",
                       "logger.init_timeout_s=600")
    started = time.monotonic()
    result = run_cli(args, runs_dir)
    elapsed = time.monotonic() - started
    [config] = [p.parent for p in (runs_dir / "sweeps" / sweep).glob(f"*/{PLAN_FILE}")]
    assert (config / "certificates.tsv").is_file() and "certified" in result.stdout
    output = result.stdout + result.stderr
    assert output.count("W&B logging disabled") == 1, output[-3000:]
    assert elapsed < 300, elapsed  # wandb.init may wait 600 s: the command did not wait for it


def test_one_monitor_per_sweep(tmp_path, caplog):
    """A second monitor of a sweep (say, `status --watch --wandb` while `certify` monitors it) logs nothing."""
    from audiocert.monitor import SweepMonitor

    first, second = (SweepMonitor([], {"mode": "offline"}, tmp_path) for _ in range(2))
    assert first.poll() and first.lock not in (None, False)
    assert second.poll() and second.lock is False and not second.enabled
    assert f"pid {os.getpid()}" in caplog.text and "one writer per run" in caplog.text
    first.lock.close()
    third = SweepMonitor([], {"mode": "offline"}, tmp_path)
    third.poll()
    assert third.enabled and third.lock not in (None, False)
