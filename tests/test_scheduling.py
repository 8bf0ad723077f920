"""Sizing and submitting cluster work (fast, no cluster): packing shards into tasks by duration, throughput
estimates, site limits, sbatch refusals, launcher settings, per-config locks, and validating each file once."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest
from test_trust import small_plan, write_config

import audiocert.shards.records as shards_module
from audiocert.launching.scheduling import (
    DEFAULT_SAMPLES_PER_S,
    check_launcher_config,
    estimate_throughput,
    fixed_tasks,
    int_setting,
    is_transient,
    pack_tasks,
    parse_scontrol_config,
    submission_capacity,
)
from audiocert.locks import ConfigBusyError, acquire, holder_of, locked, release
from audiocert.settings import check_number
from audiocert.shards import inventory, known_shards, shard_path
from audiocert.status import busy_span


# --------------------------------------------------------------------------------------------------------------
# Packing shards into tasks of a target duration
# --------------------------------------------------------------------------------------------------------------
def check_packing(costs: list[float], budget: float, max_tasks: int | None, tasks: list[list[int]]) -> None:
    """The promises of pack_tasks: each shard in exactly one task, in order, no empty task, no task above
    sum/tasks (hence the budget, when uncapped) by more than one shard, and as many tasks as the work needs."""
    flat = [p for task in tasks for p in task]
    assert flat == list(range(len(costs)))  # every shard once, order kept
    assert all(tasks)
    total = sum(costs)
    wanted = min(math.ceil(total / budget - 1e-9) or 1, max_tasks or len(costs), len(costs))
    assert len(tasks) <= wanted
    share = total / wanted
    for task in tasks:
        cost = sum(costs[p] for p in task)
        assert cost <= share + max(costs[p] for p in task) + 1e-9
        if max_tasks is None:
            assert cost <= budget + max(costs[p] for p in task) + 1e-9


def test_equal_shards_make_ceil_work_over_budget_tasks():
    # 11,052 shards of 1.3 s (the paper preset's shard on an H100) in 20-minute tasks: 12 tasks of ~921 shards.
    costs = [1.3] * 11052
    tasks = pack_tasks(costs, 20 * 60)
    assert len(tasks) == math.ceil(11052 * 1.3 / 1200) == 12
    check_packing(costs, 1200, None, tasks)
    assert max(map(len, tasks)) - min(map(len, tasks)) <= 1  # evenly cut


@pytest.mark.parametrize("seed", range(6))
def test_random_shard_costs_pack_within_the_budget_plus_one_shard(seed):
    rng = np.random.default_rng(seed)
    costs = rng.exponential(5.0, size=int(rng.integers(1, 400))).tolist()
    budget = float(rng.uniform(1, 200))
    for max_tasks in (None, 1, 3, 50):
        check_packing(costs, budget, max_tasks, pack_tasks(costs, budget, max_tasks))


def test_max_tasks_caps_the_tasks_and_tasks_grow_longer():
    costs = [1.0] * 100
    assert len(pack_tasks(costs, 10)) == 10
    capped = pack_tasks(costs, 10, max_tasks=4)
    assert len(capped) == 4 and sorted(map(len, capped)) == [25] * 4


def test_a_shard_longer_than_the_budget_gets_a_task_of_its_own_and_nothing_is_empty():
    costs = [100.0, 1.0, 1.0, 100.0]
    tasks = pack_tasks(costs, 10)
    assert [p for t in tasks for p in t] == [0, 1, 2, 3] and all(tasks) and len(tasks) <= 4
    assert pack_tasks([], 10) == []
    assert fixed_tasks(5, 2) == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan])
def test_an_impossible_budget_is_named(bad):
    with pytest.raises(ValueError, match="launcher.task_minutes"):
        pack_tasks([1.0], bad)


def test_resumed_sweeps_pack_only_the_missing_shards(tmp_path):
    from audiocert.launching.slurm import task_groups

    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    shard_path(config_dir, plan["config_hash"], 1).unlink()
    shard_path(config_dir, plan["config_hash"], 3).unlink()
    pending = inventory(config_dir, plan).missing
    launcher = {"task_minutes": 20, "samples_per_s": None, "per_shard_s": 0.5, "startup_s": 10}
    groups, how = task_groups(config_dir, plan, pending, launcher, None)
    assert [i for group in groups for _, i in group] == [1, 3]
    # Measured on the two finished shards (80 samples in 1 s): both fit one 20-minute task.
    assert len(groups) == 1 and "measured on 2 finished shard(s)" in how
    groups, how = task_groups(config_dir, plan, pending, {**launcher, "shards_per_task": 1}, None)
    assert [[i for _, i in g] for g in groups] == [[1], [3]] and "1 shard(s) per task" in how


# --------------------------------------------------------------------------------------------------------------
# Throughput, site limits, sbatch refusals
# --------------------------------------------------------------------------------------------------------------
def test_throughput_is_measured_when_it_can_be_else_configured_else_a_stated_default():
    records = [{"samples": 1000, "elapsed_s": 4.0}, {"samples": 3000, "elapsed_s": 6.0}]
    measured = estimate_throughput(records, 5.0, "cuda")
    assert measured.samples_per_s == 400.0 and "measured on 2" in measured.source
    assert estimate_throughput([], {"cuda": 2e4, "cpu": 150}, "cuda").samples_per_s == 2e4
    assert estimate_throughput([], 300, "cpu").samples_per_s == 300
    fallback = estimate_throughput([], None, "cpu")
    assert fallback.samples_per_s == DEFAULT_SAMPLES_PER_S["cpu"] and "launcher.samples_per_s" in fallback.source
    with pytest.raises(ValueError, match="launcher.samples_per_s"):
        estimate_throughput([], math.inf, "cpu")


def test_site_limits_from_scontrol_and_the_room_they_leave():
    text = "Configuration data as of 2026-12-02T10:00:00\nMaxArraySize            = 1001\nMaxJobCount             = " \
           "10000\nMinJobAge               = 300 sec\nSLURM_VERSION           = 22.05.8\n"
    site = parse_scontrol_config(text)
    assert int_setting(site, "MaxArraySize") == 1001 and int_setting(site, "MaxJobCount") == 10000
    assert int_setting(site, "MinJobAge") == 300 and int_setting(site, "Nothing") is None
    assert submission_capacity(10000, 9990, None, 0) == 8  # two kept free for other users
    assert submission_capacity(10000, 20, 50, 45) == 5  # the per-user cap is the tighter one
    assert submission_capacity(30, 40, None, 0) == 0  # over the limit already: nothing, never negative
    assert submission_capacity(None, 12345, None, 99) is None  # no limit known


def test_sbatch_refusals_are_sorted_into_transient_and_permanent():
    for message in ("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying",
                    "sbatch: error: Batch job submission failed: Resource temporarily unavailable",
                    "sbatch: error: MaxJobCount limit from slurm.conf reached (10000)",
                    "sbatch: error: QOSMaxSubmitJobPerUserLimit",
                    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit "
                    "limit, user's size and/or time limits)"):
        assert is_transient(message), message
    for message in ("sbatch: error: invalid partition specified: gpu",
                    "sbatch: error: Batch job submission failed: Invalid account or account/partition combination "
                    "specified", "sbatch: error: Batch job submission failed: Requested node configuration is not "
                    "available", ""):
        assert not is_transient(message), message


SLURM_LAUNCHER = {"name": "slurm", "cpus_per_task": 1, "array_parallelism": 64, "max_array_size": 1001,
                  "gpus_per_task": 0, "mem_gb": 4, "time_min": 120, "task_minutes": 20, "attempts": 2}


@pytest.mark.parametrize("field,value", [
    ("attempts", 0), ("attempts", 2.5), ("attempts", True), ("time_min", math.inf), ("mem_gb", math.nan),
    ("task_minutes", 0), ("task_minutes", 200), ("max_array_size", 0), ("shards_per_task", 0),
    ("max_submitted", 1), ("samples_per_s", -5), ("samples_per_s", {"cuda": math.inf}), ("threads", 0),
])
def test_impossible_launcher_settings_are_named(field, value):
    with pytest.raises(ValueError, match=rf"launcher\.{field}"):
        check_launcher_config({**SLURM_LAUNCHER, field: value})


def test_local_launcher_settings_are_checked_too():
    check_launcher_config({"name": "local", "workers": 2, "threads": 1, "attempts": 2, "time_min": 600})
    for field, value in (("attempts", 0), ("workers", 0), ("time_min", -1)):
        with pytest.raises(ValueError, match=rf"launcher\.{field}"):
            check_launcher_config({"name": "local", "workers": 2, "attempts": 2, "time_min": 600, field: value})
    with pytest.raises(ValueError, match="launcher.name"):
        check_launcher_config({"name": "kubernetes"})


@pytest.mark.parametrize("value,kwargs", [
    (math.inf, {"above": 0}), (math.nan, {"above": 0}), (-math.inf, {}), (True, {}), ("abc", {}), (None, {}),
    (0, {"above": 0}), (0.5, {"above": 0, "below": 0.5}), (1.5, {"integer": True}), (0, {"minimum": 1}),
])
def test_every_number_is_finite_and_in_range(value, kwargs):
    with pytest.raises(ValueError, match="setting.x"):
        check_number(value, "setting.x", **kwargs)


def test_good_numbers_pass_typed():
    assert check_number("4", "x", minimum=1, integer=True) == 4 and check_number(4.0, "x", integer=True) == 4
    assert check_number(0.25, "x", above=0) == 0.25 and check_number(None, "x", optional=True) is None


# --------------------------------------------------------------------------------------------------------------
# Throughput from shard run times
# --------------------------------------------------------------------------------------------------------------
def test_busy_span_counts_time_when_any_shard_computed_not_the_waits_between_rounds():
    records = [{"finished_at": 10.0, "elapsed_s": 10.0}, {"finished_at": 10.0, "elapsed_s": 5.0},  # parallel
               {"finished_at": 110.0, "elapsed_s": 10.0}]  # a later round, after a 90-s wait
    assert busy_span(records) == 20.0
    assert busy_span([]) == 0.0


# --------------------------------------------------------------------------------------------------------------
# Each file validated once per command
# --------------------------------------------------------------------------------------------------------------
def test_unchanged_shard_files_are_validated_once_per_process(tmp_path, monkeypatch):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    reads = []
    original = shards_module._read_shard
    monkeypatch.setattr(shards_module, "_read_shard", lambda path, *a: reads.append(path) or original(path, *a))
    assert inventory(config_dir, plan).complete and len(reads) == 4
    assert inventory(config_dir, plan).complete and len(reads) == 4  # nothing read again
    path = shard_path(config_dir, plan["config_hash"], 2)
    path.write_text(path.read_text().replace('"host":"node"', '"host":"other"'))  # changed: read again, refused
    found = inventory(config_dir, plan)
    assert len(reads) == 5 and path in found.invalid and "content_sha256" in found.invalid[path]
    merged = inventory(config_dir, plan, merge=True)  # a merge reads every file (its counts are not kept)
    assert len(reads) == 9 and merged.merged is None and merged.missing == [2]
    assert isinstance(known_shards(config_dir, plan).key, str)


# --------------------------------------------------------------------------------------------------------------
# One command at a time per config
# --------------------------------------------------------------------------------------------------------------
def hold_lock(directory: str, ready) -> None:
    acquire(directory, purpose="certifying")
    ready.set()
    time.sleep(60)  # killed by the test (an Event waited on here would be left broken by SIGKILL)


def test_a_config_lock_names_its_holder_and_dies_with_it(tmp_path):
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=hold_lock, args=(str(tmp_path), ready))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(ConfigBusyError, match=rf"in use by pid {holder.pid} .*certifying.*lock_wait=true"):
            acquire(tmp_path)
        with pytest.raises(ConfigBusyError):
            acquire(tmp_path, wait=True, timeout_s=0.5, poll_s=0.1)
        assert f"pid {holder.pid}" in holder_of(tmp_path / ".lock")
        os.kill(holder.pid, signal.SIGKILL)  # a killed holder cannot leave the lock held
        holder.join(10)
        assert not holder.is_alive()
        started = time.monotonic()
        with locked(tmp_path, wait=True, purpose="reducing", timeout_s=20):
            assert time.monotonic() - started < 5
            assert f"pid {os.getpid()}" in holder_of(tmp_path / ".lock")
            acquire(tmp_path)  # re-entrant in the holding process
    finally:
        if holder.is_alive():
            holder.kill()
        holder.join(10)
        release()



ORPHAN_WORKER = """
import subprocess, sys
from audiocert.launching import worker
from audiocert.status import process_start_time

command = subprocess.Popen(["sleep", "60"])  # stands for the `audiocert certify` that started the worker


class EndsWithItsCommandGone:  # stands for a shard's work, shorter than the worker's poll for its command
    def __init__(self, config_dir):
        pass

    def run(self, index, on_example):
        command.kill()
        command.wait()


worker.ConfigWork = EndsWithItsCommandGone
worker.ShardWorker()([(sys.argv[1], 0), (sys.argv[1], 1)], None, 1, False,
                     (command.pid, process_start_time(command.pid)))
"""


def test_an_orphaned_local_worker_starts_no_further_shard(tmp_path):
    """A local worker whose `audiocert` command is gone stops before its next shard, not up to a poll later:
    with shards shorter than the poll, an orphan would otherwise compute several for nobody (a CI run saw all
    8 shards of a killed attack written)."""
    import subprocess
    import sys

    worker = subprocess.run([sys.executable, "-c", ORPHAN_WORKER, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert worker.returncode == 3, worker.stdout + worker.stderr[-2000:]
    assert "shard 0 of" in worker.stdout and "shard 1 of" not in worker.stdout, worker.stdout
    assert "that started this worker is gone: stopping" in worker.stdout


def test_the_local_poll_slows_with_long_looks_but_never_sleeps_minutes():
    """A look at the shard files that took long (many files) spaces the next one out, up to MAX_POLL_S: a command
    stopped mid-look (Ctrl-Z, SIGSTOP) measured a look of 16 s and slept 160 s after it was continued."""
    from audiocert.launching.executors import MAX_POLL_S, poll_interval

    assert poll_interval(0.001) == 1.0 and poll_interval(0.5) == 5.0
    assert poll_interval(16.0) == poll_interval(3600.0) == MAX_POLL_S <= 15.0
