"""A failure must fail, through the real CLI: W&B trouble degrades to no logging, failed or incomplete configs exit
non-zero naming configs and logs, bad inputs stop a sweep before any work, changed audio is never merged, a killed
sweep leaves no workers behind and `status` says it stopped. Each test failed on the code before it was written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import REPO, certify_overrides, kill_with_orphans, local_workers, read_certs, run_cli
from test_trust import mounted_tmpfs

from audiocert.shards import PLAN_FILE

pytestmark = pytest.mark.slow


def config_dir_of(trained: dict, sweep: str, *extra: str) -> Path:
    """The config directory a certify command with these overrides will use (planned in-process, not run)."""
    from hydra import compose, initialize_config_dir

    from audiocert.kinds.certify import make_plan
    from audiocert.launching.planning import config_dir_for

    overrides = [*certify_overrides(trained, sweep, *extra), f"paths.runs_dir={trained['runs']}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("certify", overrides=overrides)
    return config_dir_for(Path(cfg.sweep.dir), make_plan(cfg))


def with_logger(args: list[str], mode: str) -> list[str]:
    return [a for a in args if not a.startswith("logger.mode=")] + [f"logger.mode={mode}"]


def test_wandb_trouble_degrades_to_no_logging_never_to_no_results(trained, monkeypatch):
    runs = trained["runs"]
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for mode in ("bogus", "online"):  # an impossible mode; online without an API key
        sweep = f"wandb-{mode}"
        args = with_logger(["certify", *certify_overrides(trained, sweep, "launcher=local", "launcher.workers=1")],
                           mode)
        result = run_cli(args, runs)
        output = result.stdout + result.stderr
        assert output.count("W&B logging disabled") == 1, output[-3000:]
        [config] = [p.parent for p in (runs / "sweeps" / sweep).glob(f"*/{PLAN_FILE}")]
        assert (config / "certificates.tsv").is_file() and "certified" in result.stdout


@pytest.mark.parametrize("filesystem", ["ro,size=64k", "size=4k"], ids=["read-only", "full"])
def test_every_shard_failing_fails_the_command_naming_path_and_log(trained, filesystem):
    runs, sweep = trained["runs"], f"unwritable-{filesystem[:2]}"
    config = config_dir_of(trained, sweep, "launcher=local")
    with mounted_tmpfs(config / "shards", filesystem) as shards:
        if "ro" not in filesystem:
            with pytest.raises(OSError), open(shards / "filler", "wb") as handle:
                while True:
                    handle.write(b"\0" * 1024)
                    handle.flush()
        result = run_cli(["certify", *certify_overrides(trained, sweep, "launcher=local", "launcher.attempts=1",
                                                       "launcher.workers=1")],
                         runs, check=False)
        needle = "Read-only file system" if "ro" in filesystem else "No space left on device"
        assert result.returncode != 0, result.stdout[-2000:]
        assert "not certified" in result.stderr and "FAILED" in result.stderr
        assert f"cannot write {shards}" in result.stderr and needle in result.stderr, result.stderr[-4000:]
        assert "log:" in result.stderr
        status = run_cli(["status", str(runs / "sweeps" / sweep)], runs).stdout
        assert "failed" in status and needle in status and "log:" in status and "running" not in status
    assert not (config / "certificates.tsv").exists()


def test_bad_inputs_stop_the_sweep_before_any_work(trained, tmp_path):
    runs = trained["runs"]
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((trained["dir"] / "best.pt").read_bytes()[:5000])
    cases = [
        ("dataset.root=/nonexistent/LibriSpeech", "/nonexistent/LibriSpeech"),
        ("seed=-1", "seed=-1"),
        (f"checkpoint={corrupt}", str(corrupt)),
        ("sweep.name=../../escaped", "sweep.name='../../escaped'"),
        ("dataset.name=a/b", "dataset.name='a/b'"),
    ]
    for override, needle in cases:
        # -m with a second, valid config: it must not run either when the first one is bad
        args = ["certify", "-m", *certify_overrides(trained, "bad-inputs", "launcher=local"), override,
                "smoothing.sigma=0.25,0.5"]
        result = run_cli(args, runs, check=False)
        assert result.returncode != 0 and needle in result.stderr, (override, result.stderr[-3000:])
        assert not list(runs.glob("sweeps/bad-inputs/*/shards/*.json")), override
    assert not (runs.parent / "escaped").exists() and not (runs / "escaped").exists()


def test_changed_audio_between_interrupted_run_and_resume_is_refused(trained, tmp_path):
    corpus = tmp_path / "LibriSpeech"
    shutil.copytree(Path(next(a for a in trained["overrides"] if a.startswith("dataset.root=")).split("=", 1)[1]),
                    corpus)
    runs = trained["runs"]
    args = ["certify", *certify_overrides(trained, "audio-changed", "launcher=debug"), f"dataset.root={corpus}"]
    run_cli(args, runs)
    [config] = [p.parent for p in (runs / "sweeps" / "audio-changed").glob(f"*/{PLAN_FILE}")]
    certificates = (config / "certificates.tsv").read_text()
    plan = json.loads((config / PLAN_FILE).read_text())
    first = sorted((config / "shards").glob("*.json"))[0]
    first.unlink()  # the interruption: one shard is missing
    flac = Path(plan["inputs"][0]["path"])
    audio, rate = soundfile.read(flac, dtype="float32")
    soundfile.write(flac, np.clip(audio * 0.5 + 0.01, -1, 1), rate, format="FLAC")
    result = run_cli(args, runs, check=False)
    assert result.returncode != 0 and "changed since it was planned" in result.stderr and str(flac) in result.stderr
    assert not first.exists() and (config / "certificates.tsv").read_text() == certificates


def test_damaged_plan_is_named_and_a_rerun_repairs_it(trained):
    runs = trained["runs"]
    args = ["certify", *certify_overrides(trained, "plan-damaged", "launcher=debug")]
    run_cli(args, runs)
    [config] = [p.parent for p in (runs / "sweeps" / "plan-damaged").glob(f"*/{PLAN_FILE}")]
    good = read_certs(config)
    (config / PLAN_FILE).write_text((config / PLAN_FILE).read_text()[:200])
    for command in (["reduce", str(config)], ["status", str(config)]):
        result = run_cli(command, runs, check=False)
        assert result.returncode != 0 and f"{config / PLAN_FILE} is corrupt" in result.stderr, result.stderr[-2000:]
        assert "rerun the `audiocert certify` command" in result.stderr
    result = run_cli(args, runs)
    output = result.stdout + result.stderr
    assert "writing a new plan" in output and "0 of" in output, output[-3000:]  # every shard was kept
    assert read_certs(config) == good


def test_killing_the_sweep_leaves_no_workers_and_status_says_stopped(trained):
    runs, sweep = trained["runs"], "killed"
    args = ["certify", *certify_overrides(trained, sweep, "launcher=local", "launcher.workers=2", "certify.n=600",
                                           "certify.shard.samples=50", "certify.shard.examples=1")]
    env = {**os.environ, "AUDIOCERT_RUNS_DIR": str(runs)}
    parent = subprocess.Popen([sys.executable, "-m", "audiocert.cli", *args], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(runs.glob(f"sweeps/{sweep}/*/shards/*.json")):
        assert parent.poll() is None and time.time() < deadline, "the sweep ended or stalled before any shard"
        time.sleep(0.5)
    assert local_workers(runs / "sweeps" / sweep), "no local worker found to orphan"
    kill_with_orphans(parent, runs / "sweeps" / sweep)  # fails if the workers outlive it
    status = run_cli(["status", str(runs / "sweeps" / sweep)], runs).stdout
    assert "stopped" in status and "running" not in status and "log:" in status, status
    header, row = status.splitlines()[0], next(line for line in status.splitlines() if "stopped" in line)
    assert row.split()[header.split().index("ETA")] == "-"  # no ETA for a sweep nobody is computing
    run_cli(args, runs)  # the same command resumes and completes
    [config] = [p.parent for p in (runs / "sweeps" / sweep).glob(f"*/{PLAN_FILE}")]
    assert (config / "certificates.tsv").is_file()


# --------------------------------------------------------------------------------------------------------------
# Issue 14: hostile input, damaged files, concurrent commands, inherited settings
# --------------------------------------------------------------------------------------------------------------
def test_a_full_runs_directory_fails_with_its_cause_even_when_no_failure_record_fits(trained):
    """Shards and failure records cannot be written (both full): the FAILED line still says why (the workers
    mark the cause in their logs) and names the log."""
    runs, sweep = trained["runs"], "full-everywhere"
    config = config_dir_of(trained, sweep, "launcher=local")
    with mounted_tmpfs(config / "shards", "size=4k") as shards, mounted_tmpfs(config / "failures", "size=4k") as rec:
        for directory in (shards, rec):
            with pytest.raises(OSError), open(directory / "filler", "wb") as handle:
                while True:
                    handle.write(b"\0" * 1024)
                    handle.flush()
        result = run_cli(["certify", *certify_overrides(trained, sweep, "launcher=local", "launcher.attempts=1",
                                                       "launcher.workers=1")],
                         runs, check=False)
        assert result.returncode != 0 and "FAILED" in result.stderr
        assert "No space left on device" in result.stderr and f"cannot write {shards}" in result.stderr, \
            result.stderr[-4000:]
        assert "_log.out" in result.stderr
        status = run_cli(["status", str(runs / "sweeps" / sweep)], runs).stdout
        assert "failed" in status and "No space left on device" in status and "running" not in status, status


def test_bad_values_devices_and_names_are_refused_before_anything_is_planned(trained):
    runs = trained["runs"]
    cases = [("launcher.attempts=0", "launcher.attempts=0"), ("smoothing.sigma=inf", "smoothing.sigma=inf"),
             ("certify.alpha=nan", "certify.alpha=nan"), ("device=cuda", "CUDA is not available"),
             ("launcher.workers=0", "launcher.workers=0")]
    for override, needle in cases:
        result = run_cli(["certify", *certify_overrides(trained, "refused", "launcher=local", override)], runs,
                         check=False)
        assert result.returncode != 0 and needle in result.stderr, (override, result.stderr[-2000:])
        assert not list(runs.glob("sweeps/refused/*/plan.json")), override
    # Names become directories in every command: refused while the config is composed, nothing written outside.
    escape = "dataset.name=../../../escaped-names"
    dataset_only = [o for o in trained["overrides"] if o.startswith("dataset.")]
    for command in (["train"], ["stats"], ["examples"], ["certify"]):
        overrides = trained["overrides"] if command[0] in ("train", "certify") else dataset_only
        result = run_cli([*command, *overrides, escape], runs, check=False)
        assert result.returncode != 0 and "dataset.name='../../../escaped-names'" in result.stderr, command
    assert not list(runs.parent.parent.glob("**/escaped-names*"))


def test_damaged_files_get_one_line_errors_and_status_does_not_call_damaged_results_reduced(trained, tmp_path):
    runs = trained["runs"]
    args = ["certify", *certify_overrides(trained, "one-line", "launcher=debug")]
    run_cli(args, runs)
    [config] = [p.parent for p in (runs / "sweeps" / "one-line").glob(f"*/{PLAN_FILE}")]
    # A shard damaged after the config was reduced: its old certificates.tsv no longer describes the shards.
    shard = sorted((config / "shards").glob("*.json"))[0]
    good = shard.read_bytes()
    shard.write_bytes(good[:-40] + b"}\n")
    status = run_cli(["status", str(config.parent)], runs).stdout
    assert "DAMAGED" in status and "reduced" not in status.splitlines()[1], status
    shard.write_bytes(good)
    # A plan edited by hand (sigma changed): every reader refuses it in one line, naming it; a rerun re-plans it.
    plan_path = config / PLAN_FILE
    plan = json.loads(plan_path.read_text())
    plan["config"]["smoothing"]["sigma"] = 0.02
    plan_path.write_text(json.dumps(plan))
    for command in (["reduce", str(config)], ["status", str(config)], ["report", str(config.parent)]):
        result = run_cli(command, runs, check=False)
        assert result.returncode != 0 or command[0] == "report", command
        if command[0] != "report":
            assert f"{plan_path} cannot be trusted" in result.stderr and "Traceback" not in result.stderr, \
                result.stderr[-2000:]
    report = (config.parent / "report" / "report.md").read_text()
    assert "**damaged**" in report and "cannot be trusted" in report
    result = run_cli(["report", str(tmp_path / "nonexistent")], runs, check=False)
    assert result.returncode != 0 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nonexistent").exists()
    certificates = (config / "certificates.tsv").read_text()
    result = run_cli(args, runs)
    assert "writing a new plan" in result.stdout + result.stderr
    assert (config / "certificates.tsv").read_text().split("\n")[1:] and json.loads(
        plan_path.read_text())["config"]["smoothing"]["sigma"] == 0.25
    assert [line.split("\t")[:5] for line in (config / "certificates.tsv").read_text().splitlines()] == \
        [line.split("\t")[:5] for line in certificates.splitlines()]  # counted at the planned sigma


def test_a_second_command_on_the_same_config_says_who_holds_it_or_waits(trained, tmp_path):
    runs, sweep = trained["runs"], "locked"
    args = ["certify", *certify_overrides(trained, sweep, "launcher=local", "launcher.workers=1", "certify.n=600",
                                           "certify.shard.samples=150")]
    env = {**os.environ, "AUDIOCERT_RUNS_DIR": str(runs), "HYDRA_FULL_ERROR": "1"}
    first = subprocess.Popen([sys.executable, "-m", "audiocert.cli", *args], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list(runs.glob(f"sweeps/{sweep}/*/jobs.json")):
            assert first.poll() is None and time.time() < deadline, "the first command ended before it started work"
            time.sleep(0.2)
        # The first command is paused, holding the config, until the third waits for it: the other commands meet it
        # however long its work takes next to their start-up (on a loaded machine it could finish first).
        os.kill(first.pid, signal.SIGSTOP)
        second = run_cli(args, runs, check=False)
        assert second.returncode != 0 and f"in use by pid {first.pid}" in second.stderr, second.stderr[-2000:]
        assert "lock_wait=true" in second.stderr
        with open(tmp_path / "waited.err", "w") as stderr:
            waited = subprocess.Popen([sys.executable, "-m", "audiocert.cli", *args, "launcher.lock_wait=true"],
                                      cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        while "waiting for" not in (tmp_path / "waited.err").read_text():  # it waits for the first to release it
            assert waited.poll() is None and time.time() < deadline, (tmp_path / "waited.err").read_text()[-2000:]
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGCONT)
        assert waited.wait(timeout=300) == 0, (tmp_path / "waited.err").read_text()[-3000:]
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()
    [config] = [p.parent for p in (runs / "sweeps" / sweep).glob(f"*/{PLAN_FILE}")]
    assert (config / "certificates.tsv").is_file()


def test_certify_inherits_the_dataset_settings_the_model_was_trained_with(trained):
    """The tiny model was trained with 64 train / 4 test crops per speaker; certify given only where the data is
    and which speakers takes the rest from the checkpoint and says so; an explicit split change is refused."""
    runs = trained["runs"]
    given = [o for o in trained["overrides"] if not o.startswith(("dataset.train_crops", "dataset.test_crops"))]
    common = ["sweep.name=inherit", "certify.points_per_speaker=1", "certify.n0=20", "certify.n=40",
              "logger.mode=disabled", "launcher=debug"]
    result = run_cli(["certify", *given, *common], runs)
    output = result.stdout + result.stderr
    assert "inherited from checkpoint" in output and "dataset.test_crops_per_speaker=4" in output, output[-3000:]
    [config] = [p.parent for p in (runs / "sweeps" / "inherit").glob(f"*/{PLAN_FILE}")]
    dataset = json.loads((config / PLAN_FILE).read_text())["config"]["dataset"]
    assert dataset["test_crops_per_speaker"] == 4 and dataset["train_crops_per_speaker"] == 64
    refused = run_cli(["certify", *given, *common, "dataset.split_seed=5"], runs, check=False)
    assert refused.returncode != 0 and "dataset.split_seed=5 differs from the 0" in refused.stderr
