"""The real single-node SLURM cluster of slurm/cluster.sh: sweeps, requeue, preemption, resume.

CI starts the cluster (make test runs `bash slurm/cluster.sh start`); these tests start it too if it is down.
They need root, like the cluster script; they fail, not skip, without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, certify_overrides, read_certs, run_cli

from audiocert.shards import PLAN_FILE
from audiocert.status import wait_for_configs

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def cluster() -> None:
    if os.geteuid() != 0:
        pytest.fail("the SLURM tests start slurm/cluster.sh, which needs root: run them as root (as CI does)")
    result = subprocess.run(["bash", "slurm/cluster.sh", "start"], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr


def config_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob(f"*/{PLAN_FILE}"))


def reference(trained: dict, name: str, *extra: str) -> dict[str, list]:
    """Single-process (debug executor) certificates for the same configs."""
    run_cli(["certify", "-m", *certify_overrides(trained, name, "launcher=debug", *extra)], trained["runs"])
    return {d.name: read_certs(d) for d in config_dirs(trained["runs"] / "sweeps" / name)}


SWEEP = ("representation=mfbe,magspec", "certify.points_per_speaker=1", "certify.shard.examples=2",
         "certify.shard.samples=30")  # 2 configs x (2 example blocks x 2 sample chunks) = 4 shards each


def test_sweep_on_slurm_matches_single_process_then_resumes(cluster, trained):
    runs = trained["runs"]
    expected = reference(trained, "slurm-ref", *SWEEP)
    args = ["certify", "-m", *certify_overrides(trained, "slurm-e2e", "launcher=slurm", "launcher.wait=true",
                                                "launcher.max_array_size=3", *SWEEP)]
    result = run_cli(args, runs)
    dirs = config_dirs(runs / "sweeps" / "slurm-e2e")
    assert len(dirs) == 2
    for d in dirs:
        assert read_certs(d) == expected[d.name]
        jobs = json.loads((d / "jobs.json").read_text())
        assert len(jobs["arrays"]) == 2  # 4 shards split under max_array_size=3
        assert len(jobs["shards"]) == 4
        shard_jobs = {json.loads(p.read_text())["slurm_job_id"] for p in (d / "shards").glob("*.json")}
        assert None not in shard_jobs  # every shard ran inside a SLURM job
        reducer_log = next((runs / "sweeps" / "slurm-e2e" / "logs" / "slurm").glob(f"{jobs['reducer']}_*log.out"))
        assert reducer_log.is_file()  # the reducer ran as its own (dependent) SLURM job
    assert "reduced" in result.stdout

    # Resume: delete one shard's output and the certificates; a rerun submits only that shard.
    target = dirs[0]
    victim = sorted((target / "shards").glob("*.json"))[2]
    victim.unlink()
    (target / "certificates.tsv").unlink()
    result = run_cli(args, runs)
    assert "1 of 4 shard(s) to run" in result.stderr + result.stdout
    assert "0 of 4 shard(s) to run" in result.stderr + result.stdout
    assert read_certs(target) == expected[target.name]


def running_tasks(prefix: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %j"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1].startswith(prefix)]


def test_requeued_and_preempted_shards_finish_without_double_counting(cluster, trained):
    runs = trained["runs"]
    slow = ("certify.points_per_speaker=2", "certify.n=6000", "certify.shard.samples=3000",
            "certify.shard.examples=8")  # 2 shards of 8 examples x 3000 noisy samples each
    expected = reference(trained, "slurm-requeue-ref", *slow)
    run_cli(["certify", *certify_overrides(trained, "slurm-requeue", "launcher=slurm",
                                           "launcher.array_parallelism=2", "launcher.time_min=60", *slow)], runs)
    [config] = config_dirs(runs / "sweeps" / "slurm-requeue")
    prefix = f"ac-{json.loads((config / PLAN_FILE).read_text())['config_hash'][:8]}"
    jobs = json.loads((config / "jobs.json").read_text())
    logs = [Path(jobs["logs"][job]).with_suffix(".out") for job in set(jobs["shards"].values())]  # not the reducer's
    deadline = time.monotonic() + 180
    # Wait until both shards have counted their first example (their logs say so), not merely been scheduled:
    # seven of eight examples are still to come, so the signals below land mid-shard.
    while len(tasks := running_tasks(prefix)) < 2 or not all(
            p.is_file() and "1/8 examples counted" in p.read_text() for p in logs):
        assert time.monotonic() < deadline, "the two shard tasks never ran together"
        time.sleep(0.2)
    assert not list((config / "shards").glob("*.json")), "a shard finished before it could be interrupted"
    # A plain requeue (SIGTERM, restart from scratch) and a preemption (USR2: submitit checkpoints and requeues).
    subprocess.run(["scontrol", "requeue", tasks[0]], check=True)
    subprocess.run(["scancel", "--signal=USR2", tasks[1]], check=True)
    assert wait_for_configs([config], timeout_s=600)
    assert read_certs(config) == expected[config.name]
    restarts = sorted(json.loads(p.read_text())["restart_count"] or "0" for p in (config / "shards").glob("*.json"))
    assert restarts == ["1", "1"]  # both shards were interrupted mid-way and still counted exactly once


def test_rerun_while_queued_submits_only_what_is_missing(cluster, trained):
    runs = trained["runs"]
    one = ("representation=mfbe", *SWEEP[1:])  # 4 shards
    expected = reference(trained, "slurm-held-ref", *one)
    # Held jobs stay queued however slow the CLI is, so the reruns below meet them in the queue.
    args = ["certify", *certify_overrides(trained, "slurm-held", "launcher=slurm", "+launcher.additional.hold=true",
                                          *one)]
    run_cli(args, runs)
    [config] = config_dirs(runs / "sweeps" / "slurm-held")
    first = json.loads((config / "jobs.json").read_text())
    try:
        result = run_cli(args, runs)  # everything is still queued: nothing is submitted twice
        assert "4 shard(s) still queued or running" in result.stdout + result.stderr
        assert "nothing new to submit" in result.stdout + result.stderr
        assert json.loads((config / "jobs.json").read_text()) == first

        # One shard's task is cancelled: the rerun submits that shard alone, and a reducer that waits for it and
        # for the three old tasks still queued.
        [array] = first["arrays"]
        victim, victim_job = sorted(first["shards"].items())[1]
        subprocess.run(["scancel", victim_job], check=True)
        deadline = time.monotonic() + 60
        while victim_job in subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True,
                                           text=True).stdout.split():
            assert time.monotonic() < deadline, f"scancel {victim_job} did not take"
            time.sleep(0.5)
        run_cli(args, runs)
        second = json.loads((config / "jobs.json").read_text())
        assert second["reducer"] != first["reducer"]
        assert {i: j for i, j in second["shards"].items() if i != victim} == {
            i: j for i, j in first["shards"].items() if i != victim}
        assert second["shards"][victim].split("_")[0] != array and len(second["arrays"]) == 2
    finally:
        last = json.loads((config / "jobs.json").read_text())
        subprocess.run(["scontrol", "release", *last["arrays"], last["reducer"]], capture_output=True)
    assert wait_for_configs([config], timeout_s=300)
    assert read_certs(config) == expected[config.name]
    ran_in = {json.loads(p.read_text())["index"]: json.loads(p.read_text())["slurm_task"]
              for p in (config / "shards").glob("*.json")}
    assert {str(i): j for i, j in ran_in.items()} == second["shards"]  # each shard ran once, in its recorded task


def test_a_bad_config_in_a_sweep_submits_nothing(cluster, trained):
    """Every config is checked before the first submission: one impossible sigma stops the whole sweep."""
    runs = trained["runs"]
    result = run_cli(["certify", "-m", *certify_overrides(trained, "slurm-bad", "launcher=slurm"),
                      "smoothing.sigma=0.25,-1"], runs, check=False)
    assert result.returncode != 0 and "smoothing.sigma=-1" in result.stderr, result.stderr[-3000:]
    sweep = runs / "sweeps" / "slurm-bad"
    assert not list(sweep.glob("*/jobs.json")) and not (sweep / "logs" / "slurm").exists()


def test_sequential_rounds_chain_through_dependent_jobs(cluster, trained):
    """Each round's dependent job plans the next round and submits it; the last one reduces the config."""
    runs = trained["runs"]
    seq = ("representation=mfbe", "certify.algorithm=sequential", "certify.n0=100", "certify.n=400",
           "certify.sequential.first=50", "certify.shard.samples=100")
    expected = reference(trained, "slurm-seq-ref", *seq)
    run_cli(["certify", *certify_overrides(trained, "slurm-seq", "launcher=slurm", "launcher.wait=true", *seq)], runs)
    [config] = config_dirs(runs / "sweeps" / "slurm-seq")
    assert read_certs(config) == expected[config.name]
    summary = json.loads((config / "summary.json").read_text())
    assert summary["rounds"] > 1 and summary["algorithm"] == "sequential"
    # slurm_task is ARRAYID_TASKID (slurm_job_id is each task's own job id): one array per round.
    tasks = {json.loads(p.read_text())["slurm_task"] for p in (config / "shards").glob("*.json")}
    assert None not in tasks and len({t.split("_")[0] for t in tasks}) == summary["rounds"], tasks
