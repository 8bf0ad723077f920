"""The real single-node SLURM cluster of slurm/cluster.sh: sweeps, requeue, preemption, resume.

CI starts the cluster (make test runs `bash slurm/cluster.sh start`); these tests start it too if it is down.
They need root, like the cluster script; they fail, not skip, without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, certify_overrides, read_certs, run_cli

from audiocert.shards import PLAN_FILE
from audiocert.status import deferred_configs, wait_for_configs

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


def reference(trained: dict, *extra: str) -> dict[str, list]:
    """Single-process (debug executor) certificates for the same configs."""
    name = f"slurm-ref-{hashlib.sha256(' '.join(extra).encode()).hexdigest()[:8]}"
    run_cli(["certify", "-m", *certify_overrides(trained, name, "launcher=debug", *extra)], trained["runs"])
    return {d.name: read_certs(d) for d in config_dirs(trained["runs"] / "sweeps" / name)}


def attack_reference(trained: dict) -> str:
    """attack.tsv of a single-process attack (after its certification) of certify_overrides' config."""
    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "slurm-atk-ref", "launcher=debug")], runs)
    run_cli(["attack", *certify_overrides(trained, "slurm-atk-ref", "launcher=debug", *ATTACK)], runs)
    [reference_dir] = (runs / "sweeps" / "slurm-atk-ref").glob("*/attack-*")
    return (reference_dir / "attack.tsv").read_text()


class References:
    """The single-process results the tests compare with, each computed once, one after another in a background
    thread: started before a test asks (see the `references` fixture), they are computed while earlier tests wait
    on the scheduler."""

    def __init__(self, trained: dict) -> None:
        self.trained = trained
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slurm-references")
        self.futures: dict[tuple, Future] = {}

    def start(self, work, *extra: str) -> Future:
        key = (work.__name__, *extra)
        if key not in self.futures:
            self.futures[key] = self.pool.submit(work, self.trained, *extra)
        return self.futures[key]

    def certificates(self, *extra: str) -> dict[str, list]:
        return self.start(reference, *extra).result()

    def attack_table(self) -> str:
        return self.start(attack_reference).result()


@pytest.fixture(scope="module")
def references(request, trained):
    """`References`, with what the selected tests of this module compare with (COMPARED_WITH) started in their
    order."""
    found = References(trained)
    for item in request.session.items:
        if getattr(item, "module", None) is request.module:
            for work, *extra in COMPARED_WITH.get(item.originalname, ()):
                found.start(work, *extra)
    yield found
    found.pool.shutdown(wait=True, cancel_futures=True)


SWEEP = ("representation=mfbe,magspec", "certify.points_per_speaker=1", "certify.shard.examples=2",
         "certify.shard.samples=30")  # 2 configs x (2 example blocks x 2 sample chunks) = 4 shards each
ONE = "launcher.shards_per_task=1"  # one shard per array task (tasks are otherwise packed by duration)


def test_sweep_on_slurm_matches_single_process_then_resumes(cluster, trained, references):
    runs = trained["runs"]
    # Two shards a task, one task an array: each config's 4 shards go out as 2 arrays (max_array_size=1).
    args = ["certify", "-m", *certify_overrides(trained, "slurm-e2e", "launcher=slurm", "launcher.wait=true",
                                                "launcher.max_array_size=1", "launcher.shards_per_task=2", *SWEEP)]
    result = run_cli(args, runs)
    expected = references.certificates(*SWEEP)
    dirs = config_dirs(runs / "sweeps" / "slurm-e2e")
    assert len(dirs) == 2
    for d in dirs:
        assert read_certs(d) == expected[d.name]
        jobs = json.loads((d / "jobs.json").read_text())
        assert len(jobs["arrays"]) == 2  # 2 tasks split under max_array_size=1
        assert len(jobs["shards"]) == 4 and len(set(jobs["shards"].values())) == 2  # 2 shards in each task
        shard_jobs = {json.loads(p.read_text())["slurm_job_id"] for p in (d / "shards").glob("*.json")}
        assert None not in shard_jobs and len(shard_jobs) == 2  # every shard ran inside a SLURM job, 2 in each
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


SLOW = ("certify.points_per_speaker=2", "certify.n=3000", "certify.shard.samples=1500",
        "certify.shard.examples=8")  # 2 shards of 8 examples x 1500 noisy samples (about a second each)


def test_requeued_and_preempted_shards_finish_without_double_counting(cluster, trained, references):
    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "slurm-requeue", "launcher=slurm", ONE,
                                           "launcher.array_parallelism=2", "launcher.time_min=60", *SLOW)], runs)
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
    assert read_certs(config) == references.certificates(*SLOW)[config.name]
    restarts = sorted(json.loads(p.read_text())["restart_count"] or "0" for p in (config / "shards").glob("*.json"))
    assert restarts == ["1", "1"]  # both shards were interrupted mid-way and still counted exactly once


def test_rerun_while_queued_submits_only_what_is_missing(cluster, trained, references):
    runs = trained["runs"]
    one = ("representation=mfbe", *SWEEP[1:])  # 4 shards
    # Held jobs stay queued however slow the CLI is, so the reruns below meet them in the queue.
    args = ["certify", *certify_overrides(trained, "slurm-held", "launcher=slurm", "+launcher.additional.hold=true",
                                          ONE, *one)]
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
    assert read_certs(config) == references.certificates(*SWEEP)[config.name]  # SWEEP's mfbe config is this one
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


ROUNDS = ("representation=mfbe", "certify.algorithm=sequential", "certify.n0=100", "certify.n=400",
          "certify.sequential.first=50", "certify.shard.samples=100")


def test_sequential_rounds_chain_through_dependent_jobs(cluster, trained, references):
    """Each round's dependent job plans the next round and submits it; the last one reduces the config."""
    runs = trained["runs"]
    run_cli(["certify", *certify_overrides(trained, "slurm-seq", "launcher=slurm", "launcher.wait=true", *ROUNDS)],
            runs)  # a round's shards packed into one task
    [config] = config_dirs(runs / "sweeps" / "slurm-seq")
    assert read_certs(config) == references.certificates(*ROUNDS)[config.name]
    summary = json.loads((config / "summary.json").read_text())
    assert summary["rounds"] > 1 and summary["algorithm"] == "sequential"
    # slurm_task is ARRAYID_TASKID (slurm_job_id is each task's own job id): one array per round.
    tasks = {json.loads(p.read_text())["slurm_task"] for p in (config / "shards").glob("*.json")}
    assert None not in tasks and len({t.split("_")[0] for t in tasks}) == summary["rounds"], tasks


# --------------------------------------------------------------------------------------------------------------
# Site limits, refused submissions, cut-off submissions (issue 17)
# --------------------------------------------------------------------------------------------------------------
def jobs_in_system() -> int:
    """What MaxJobCount counts: every job slurmctld holds (queued, running, finished within MinJobAge)."""
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout
    return len(out.split())


@pytest.fixture
def small_limits(cluster):
    """The test cluster restarted under small site limits (finished jobs leave slurmctld after 2 s), and
    restarted with its defaults afterwards. Yields (MaxArraySize, MaxJobCount)."""
    deadline = time.monotonic() + 120
    while subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "jobs of other tests are still queued"
        time.sleep(1)
    # SWEEP's two configs need 2 x (4 one-shard tasks + a reducer) = 10 jobs: one config fits at a time.
    limits = {"SLURM_MAX_ARRAY_SIZE": "3", "SLURM_MAX_JOB_COUNT": "7", "SLURM_MIN_JOB_AGE": "2"}
    started = subprocess.run(["bash", "slurm/cluster.sh", "start"], cwd=REPO, capture_output=True, text=True,
                             timeout=300, env={**os.environ, **limits})
    assert started.returncode == 0, started.stdout + started.stderr
    deadline = time.monotonic() + 120
    while jobs_in_system() > 1:  # other tests' finished jobs leave slurmctld after MinJobAge
        assert time.monotonic() < deadline, f"{jobs_in_system()} old jobs still held by slurmctld"
        time.sleep(1)
    try:
        yield int(limits["SLURM_MAX_ARRAY_SIZE"]), int(limits["SLURM_MAX_JOB_COUNT"])
    finally:
        restored = subprocess.run(["bash", "slurm/cluster.sh", "start"], cwd=REPO, capture_output=True, text=True,
                                  timeout=300)
        assert restored.returncode == 0, restored.stdout + restored.stderr


class QueueWatcher:
    """Samples the number of jobs slurmctld holds, every 0.2 s, while a sweep runs."""

    def __init__(self) -> None:
        import threading

        self.peak, self.running = 0, True
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        while self.running:
            self.peak = max(self.peak, jobs_in_system())
            time.sleep(0.2)

    def stop(self) -> int:
        self.running = False
        self.thread.join(5)
        return self.peak


def test_a_sweep_larger_than_the_site_limits_completes_within_them(small_limits, trained, references):
    max_array, max_jobs = small_limits
    runs = trained["runs"]
    watcher = QueueWatcher()
    try:
        result = run_cli(["certify", "-m", *certify_overrides(trained, "slurm-limits", "launcher=slurm", ONE,
                                                              "launcher.wait=true", *SWEEP)], runs)
    finally:
        peak = watcher.stop()
    assert peak <= max_jobs, f"{peak} jobs in the system under MaxJobCount={max_jobs}"
    output = result.stdout + result.stderr
    assert "waits for submission" in output or "fit under the site limits now" in output, output[-3000:]
    dirs = config_dirs(runs / "sweeps" / "slurm-limits")
    assert len(dirs) == 2
    expected = references.certificates(*SWEEP)
    for d in dirs:
        assert read_certs(d) == expected[d.name]
        tasks = {json.loads(p.read_text())["slurm_task"] for p in (d / "shards").glob("*.json")}
        # Array task ids 0 .. MaxArraySize - 1 (a single task goes out as a plain job, without '_').
        assert all(int(t.split("_")[1]) < max_array for t in tasks if "_" in t)
    assert not json.loads((runs / "sweeps" / "slurm-limits" / "deferred.json").read_text())["configs"]


def held_job_of_the_user() -> str:
    """A held job outside any sweep: it counts against the user's launcher.max_submitted and never runs."""
    return subprocess.run(["sbatch", "--hold", "--parsable", "-J", "not-this-sweep", "--wrap", "true"],
                          capture_output=True, text=True, check=True).stdout.strip().split(";")[0]


def test_configs_without_room_and_nobody_to_submit_them_fail_and_status_shows_them_waiting(cluster, trained):
    """The user's own cap is full (a job of theirs outside the sweep): nothing of the sweep can go out, and no
    dependent job of it would submit it later, so the command fails saying so; `status` (given a relative path)
    says the configs wait for submission; with room again, a rerun completes them."""
    runs, sweep = trained["runs"], "slurm-no-room"
    blocker = held_job_of_the_user()

    def args(*extra: str) -> list[str]:
        return ["certify", "-m", *certify_overrides(trained, sweep, "launcher=slurm", *extra, *SWEEP)]

    try:
        failed = run_cli(args("launcher.max_submitted=2"), runs, check=False)
        relative = os.path.relpath(runs / "sweeps" / sweep, REPO)  # run_cli runs from REPO
        status = run_cli(["status", relative], runs).stdout
    finally:
        subprocess.run(["scancel", blocker], check=True)
    assert failed.returncode != 0, failed.stdout[-2000:]
    assert "no job of the sweep is queued to submit it later" in failed.stderr, failed.stderr[-3000:]
    assert "launcher.max_submitted" in failed.stderr
    dirs = config_dirs(runs / "sweeps" / sweep)
    assert len(dirs) == 2 and not any((d / "shards").exists() and any((d / "shards").iterdir()) for d in dirs)
    assert status.count("waiting for submission") == 2, status
    run_cli(args("launcher.wait=true"), runs)
    assert all((d / "certificates.tsv").is_file() for d in dirs)
    assert not json.loads((runs / "sweeps" / sweep / "deferred.json").read_text())["configs"]

    # An attack (its config lies inside its certification's) that waits for room under launcher.wait=true keeps
    # waiting, and is submitted and completed once the user's own job leaves the queue.
    blocker = held_job_of_the_user()
    stop = threading.Event()

    def release_once_the_attack_waits() -> None:
        """Cancel the user's job once the attack's config waits for room (not after a fixed time: a slow start-up
        on a loaded machine would find the room already made)."""
        while not stop.is_set() and not any("/attack-" in d for d in deferred_configs(runs / "sweeps" / sweep)):
            stop.wait(0.2)
        subprocess.run(["scancel", blocker])

    release = threading.Thread(target=release_once_the_attack_waits, daemon=True)
    release.start()
    try:
        attacked = run_cli(["attack", *certify_overrides(
            trained, sweep, "launcher=slurm", "launcher.max_submitted=2", "launcher.wait=true", *SWEEP[1:],
            "attack.steps=2", "attack.samples=4", "attack.n=30", "attack.eps=[0.5]", "attack.shard.examples=2",
            "attack.batch_size=8")], runs)
    finally:
        stop.set()
        release.join(10)
        subprocess.run(["scancel", blocker])
    assert "waits for submission" in attacked.stdout + attacked.stderr
    [attack_dir] = (runs / "sweeps" / sweep).glob("*/attack-*")
    assert (attack_dir / "summary.json").is_file()


def sbatch_wrapper(tmp_path: Path, body: str) -> dict[str, str]:
    """An `sbatch` first on PATH that runs ``body`` (bash; $n is this call's number, $script the batch script)
    and then the real sbatch; returns the environment to run the CLI with."""
    import shutil

    real = shutil.which("sbatch")
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir(parents=True)
    (wrapper_dir / "sbatch").write_text(
        "#!/bin/bash\n"
        f"state={tmp_path}\n"
        "n=$(( $(cat $state/count 2>/dev/null || echo 0) + 1 )); echo $n > $state/count\n"
        'script="${@: -1}"\n'
        f"{body}\n"
        f'exec {real} "$@"\n')
    (wrapper_dir / "sbatch").chmod(0o755)
    return {"PATH": f"{wrapper_dir}:{os.environ['PATH']}"}


def run_with(env: dict[str, str], args: list[str], runs: Path, check: bool = True):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return run_cli(args, runs, check=check)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_transient_refusals_are_retried_and_a_permanent_one_fails_only_its_config(cluster, trained, tmp_path,
                                                                                   references):
    runs = trained["runs"]
    # The first two sbatch calls are refused as a busy controller refuses them: retried after a back-off.
    busy = sbatch_wrapper(tmp_path / "busy", 'if [ $n -le 2 ]; then echo "sbatch: error: Slurm temporarily unable '
                                              'to accept job, sleeping and retrying" >&2; exit 1; fi')
    result = run_with(busy, ["certify", "-m", *certify_overrides(
        trained, "slurm-busy", "launcher=slurm", "launcher.wait=true", "launcher.submit_backoff_s=0.2", *SWEEP)], runs)
    assert "retrying in" in result.stderr + result.stdout
    expected = references.certificates(*SWEEP)
    for d in config_dirs(runs / "sweeps" / "slurm-busy"):
        assert read_certs(d) == expected[d.name]
    # An account the cluster does not know, for the second config's shards only: that config fails, named with
    # sbatch's message; the first is certified.
    permanent = sbatch_wrapper(tmp_path / "denied", (
        'if ! grep -q -- "--job-name=ac-reduce" "$script"; then\n'
        '  name=$(grep -o -- "--job-name=ac-[0-9a-f]*" "$script" | head -1)\n'
        '  grep -qx -- "$name" $state/names 2>/dev/null || echo "$name" >> $state/names\n'
        '  if [ "$(head -1 $state/names)" != "$name" ]; then echo "sbatch: error: Batch job submission failed: '
        'Invalid account or account/partition combination specified" >&2; exit 1; fi\n'
        'fi'))
    result = run_with(permanent, ["certify", "-m", *certify_overrides(
        trained, "slurm-denied", "launcher=slurm", "launcher.wait=true", *SWEEP)], runs, check=False)
    assert result.returncode != 0
    assert "Invalid account" in result.stderr and "FAILED" in result.stderr, result.stderr[-3000:]
    certified = [d for d in config_dirs(runs / "sweeps" / "slurm-denied") if (d / "certificates.tsv").is_file()]
    assert len(certified) == 1 and read_certs(certified[0]) == expected[certified[0].name]


CUT = ("representation=mfbe", "certify.points_per_speaker=2", "certify.shard.examples=4",
       "certify.shard.samples=20")  # 2 blocks x 3 chunks = 6 shards, in arrays of 2


def test_a_submission_cut_off_midway_is_visible_and_a_rerun_submits_nothing_twice(cluster, trained, tmp_path,
                                                                                    references):
    runs = trained["runs"]
    args = ["certify", *certify_overrides(trained, "slurm-cut", "launcher=slurm", ONE, "launcher.max_array_size=2",
                                          "+launcher.additional.hold=true", *CUT)]
    cut = sbatch_wrapper(tmp_path / "cut", 'if [ $n -eq 3 ]; then echo "sbatch: error: Batch job submission failed: '
                                            'Invalid partition name specified" >&2; exit 1; fi')
    failed = run_with(cut, args, runs, check=False)
    assert failed.returncode != 0 and "Invalid partition name" in failed.stderr, failed.stderr[-3000:]
    [config] = config_dirs(runs / "sweeps" / "slurm-cut")
    first = json.loads((config / "jobs.json").read_text())
    try:
        assert len(first["arrays"]) == 2 and len(first["shards"]) == 4 and first["reducer"] is None
        status = run_cli(["status", str(config.parent)], runs).stdout
        assert "0/6" in status and "tasks 4 pending" in status, status  # the cut-off submission, as it stands
        rerun = run_cli([a for a in args if "hold" not in a], runs)
        assert "4 shard(s) still queued or running" in rerun.stdout + rerun.stderr
        second = json.loads((config / "jobs.json").read_text())
        assert {i: j for i, j in second["shards"].items() if i in first["shards"]} == first["shards"]
        assert len(second["shards"]) == 6 and second["reducer"]
    finally:
        subprocess.run(["scontrol", "release", *first["arrays"]], capture_output=True)
    assert wait_for_configs([config], timeout_s=300)
    assert read_certs(config) == references.certificates(*CUT)[config.name]
    ran_in = {json.loads(p.read_text())["index"]: json.loads(p.read_text())["slurm_task"]
              for p in (config / "shards").glob("*.json")}
    assert {str(i): t for i, t in ran_in.items()} == second["shards"]  # each shard ran once, where it was recorded


ATTACK = ("attack.steps=2", "attack.samples=4", "attack.n=30", "attack.eps=[0.5,4.0]", "attack.shard.examples=2",
          "attack.batch_size=8")


def test_an_attack_on_slurm_gives_the_results_of_one_process(cluster, trained, references):
    runs = trained["runs"]
    # An attack needs its certification (the same points, reduced); attack_reference certifies its own sweep.
    run_cli(["certify", *certify_overrides(trained, "slurm-atk", "launcher=debug")], runs)
    run_cli(["attack", *certify_overrides(trained, "slurm-atk", "launcher=slurm", "launcher.wait=true", ONE,
                                          *ATTACK)], runs)
    [slurm_dir] = (runs / "sweeps" / "slurm-atk").glob("*/attack-*")
    assert (slurm_dir / "attack.tsv").read_text() == references.attack_table()
    tasks = {json.loads(p.read_text())["slurm_task"] for p in (slurm_dir / "shards").glob("*.json")}
    assert None not in tasks and len(tasks) == 4


WRAPPED = ("representation=magspec", "certify.shard.examples=2")  # 8 points: 4 example blocks x 2 sample chunks
PERCEPTIBILITY = ("perceptibility.draws=2", "perceptibility.budget_iterations=8", "perceptibility.radii=[0.01]",
                  "perceptibility.attack.enabled=false", "perceptibility.points_per_speaker=1")


def test_a_users_network_on_slurm_certifies_what_the_builtin_does_and_its_attack_follows(cluster, trained,
                                                                                        references, tmp_path):
    """model=external on the cluster: a user's package (outside audiocert, reaching the jobs through PYTHONPATH,
    as sbatch exports the environment) that wraps the trained ResCNN gets the single-process built-in's
    certificates; `attack certified=DIR` and `perceptibility certified=DIR` then run on SLURM on that
    certification's config."""
    import torch
    from test_external_model import USER_PACKAGE

    runs = trained["runs"]
    package = tmp_path / "userpkg" / "usernets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(USER_PACKAGE)
    state = torch.load(trained["dir"] / "best.pt", weights_only=True)
    weights = tmp_path / "wrapped.pt"
    torch.save({f"inner.{k}": v for k, v in state["model"].items()}, weights)
    external = ["model=external", "model.net._target_=usernets.WrappedResCNN", "+model.net.num_classes=4",
                "+model.net.widths=[4,8,8,16]", "model.input=mfbe", f"model.weights={weights}"]
    given = [o for o in certify_overrides(trained, "slurm-user", "launcher=slurm", "launcher.wait=true", *WRAPPED)
             if not o.startswith("model.")]
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path / "userpkg"), old) if p)
    try:
        run_cli(["certify", *given, *external], runs)
        [config] = config_dirs(runs / "sweeps" / "slurm-user")
        [expected] = references.certificates(*WRAPPED).values()
        assert read_certs(config) == expected
        attacked = run_cli(["attack", f"certified={config}", "launcher=slurm", "launcher.wait=true", *ATTACK], runs)
        measured = run_cli(["perceptibility", f"certified={config}", "launcher=slurm", "launcher.wait=true",
                            *PERCEPTIBILITY], runs)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    assert "points attacked at 2 budget(s)" in attacked.stdout + attacked.stderr
    assert "4 points measured" in measured.stdout + measured.stderr
    [attack_dir] = config.glob("attack-*")
    [perceptibility_dir] = config.glob("perceptibility-*")
    summary = json.loads((attack_dir / "summary.json").read_text())
    assert summary["points"] == 8 and summary["certificates"] == "reduced"
    for directory in (config, attack_dir, perceptibility_dir):  # each shard imported the user's package on SLURM
        shards = [json.loads(p.read_text()) for p in (directory / "shards").glob("*.json")]
        assert shards and None not in {shard["slurm_task"] for shard in shards}


def test_slurm_sweep_watched_from_the_login_node(cluster, trained):
    """A SLURM sweep (compute nodes never touch W&B) watched by `audiocert status --watch --wandb` in another
    process: the configs' runs hold progress and partial-curve rows logged before the last shard finished, then the
    final results in the same run; the sweep run compares the configs."""
    import sys

    from test_dashboard import check_final_run, config_run, shard_finish_times, with_logger

    runs_dir, sweep = trained["runs"], "dashboard-slurm"
    sweep_dir = runs_dir / "sweeps" / sweep
    args = with_logger(["certify", *certify_overrides(
        trained, sweep, "launcher=slurm", "launcher.shards_per_task=1", "launcher.array_parallelism=1",
        "certify.n=400", "certify.shard.samples=100")], "logger.mode=offline")  # 8 one-shard tasks in turn
    result = run_cli(args, runs_dir)  # submits and returns: the jobs run on the cluster
    assert "status --watch 30 --wandb offline" in result.stderr + result.stdout
    env = {**os.environ, "AUDIOCERT_RUNS_DIR": str(runs_dir)}
    monitor = subprocess.run([sys.executable, "-m", "audiocert.cli", "status", "--watch", "1", "--wandb", "offline",
                              str(sweep_dir)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert monitor.returncode == 0, monitor.stderr[-3000:]
    dirs = sorted(p.parent for p in sweep_dir.glob(f"*/{PLAN_FILE}"))
    assert len(dirs) == 1
    early_rows = 0
    for config in dirs:
        info, runs = config_run(config)
        assert len({r.run_id for r in runs}) == 1 and runs[0].job_type == "certify"
        finished = shard_finish_times(config)
        rows = [row for r in runs for row in r.history]
        early = [row for row in rows if row["_timestamp"] < finished[-1]]
        early_rows += len([row for row in early if "live/points_finished" in row])
        assert any("progress/shards_done" in row for row in early), (config, finished[-1])
        check_final_run(config, runs)
        # One writer: the monitor's one session (the reducer job, a compute node, opened no run of its own).
        assert len(runs) == 1, [r.path for r in runs]
    assert early_rows, "no partial curve was logged before a config's last shard finished"
    assert "W&B run:" in monitor.stdout
    assert (sweep_dir / "wandb_run.json").is_file()


# What each test compares with (the work and its overrides), for the `references` fixture to start in test order.
COMPARED_WITH = {
    "test_sweep_on_slurm_matches_single_process_then_resumes": [(reference, *SWEEP)],
    "test_requeued_and_preempted_shards_finish_without_double_counting": [(reference, *SLOW)],
    "test_rerun_while_queued_submits_only_what_is_missing": [(reference, *SWEEP)],
    "test_sequential_rounds_chain_through_dependent_jobs": [(reference, *ROUNDS)],
    "test_a_sweep_larger_than_the_site_limits_completes_within_them": [(reference, *SWEEP)],
    "test_transient_refusals_are_retried_and_a_permanent_one_fails_only_its_config": [(reference, *SWEEP)],
    "test_a_submission_cut_off_midway_is_visible_and_a_rerun_submits_nothing_twice": [(reference, *CUT)],
    "test_an_attack_on_slurm_gives_the_results_of_one_process": [(attack_reference,)],
    "test_a_users_network_on_slurm_certifies_what_the_builtin_does_and_its_attack_follows": [(reference, *WRAPPED)],
}
