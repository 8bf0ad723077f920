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
from conftest import REPO, certify_overrides, read_certs, run_cli
from test_trust import mounted_tmpfs

from audiocert.shards import PLAN_FILE

pytestmark = pytest.mark.slow


def config_dir_of(trained: dict, sweep: str, *extra: str) -> Path:
    """The config directory a certify command with these overrides will use (planned in-process, not run)."""
    from hydra import compose, initialize_config_dir

    from audiocert.launch import config_dir_for
    from audiocert.shards import make_plan

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
        args = with_logger(["certify", *certify_overrides(trained, sweep, "launcher=local")], mode)
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
        result = run_cli(["certify", *certify_overrides(trained, sweep, "launcher=local", "launcher.attempts=1")],
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
    logs = runs / "sweeps" / sweep / "logs" / "local"
    deadline = time.time() + 300
    while not list(runs.glob(f"sweeps/{sweep}/*/shards/*.json")):
        assert parent.poll() is None and time.time() < deadline, "the sweep ended or stalled before any shard"
        time.sleep(0.5)

    def workers() -> list[str]:
        out = subprocess.run(["pgrep", "-f", str(logs)], capture_output=True, text=True).stdout
        return out.split()

    assert workers(), "no local worker found to orphan"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    while workers() and time.time() < deadline:
        time.sleep(0.5)
    assert not workers(), "workers outlived the killed `audiocert certify`"
    status = run_cli(["status", str(runs / "sweeps" / sweep)], runs).stdout
    assert "stopped" in status and "running" not in status and "log:" in status, status
    header, row = status.splitlines()[0], next(line for line in status.splitlines() if "stopped" in line)
    assert row.split()[header.split().index("ETA")] == "-"  # no ETA for a sweep nobody is computing
    run_cli(args, runs)  # the same command resumes and completes
    [config] = [p.parent for p in (runs / "sweeps" / sweep).glob(f"*/{PLAN_FILE}")]
    assert (config / "certificates.tsv").is_file()
