"""The suite's reader of W&B offline run files reads what wandb wrote, and refuses a damaged file loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_reader import DamagedRunFile, read_run, read_runs

WRITE = """
import sys, wandb
run = wandb.init(project="reader", dir=sys.argv[1], mode="offline", id="reader-run", job_type="certify",
                 group="g", config={"sigma": 0.25, "nested": {"a": 1}},
                 settings=wandb.Settings(console="off", x_disable_stats=True))
for step in range(5):
    run.log({"progress/shards_done": step + 1, "big": "x" * (40000 if step == 2 else 1)}, step=step)
run.summary["certified_accuracy/r=0.5"] = 0.75
run.summary["certified_accuracy_low/r=0.5"] = 0.4
run.finish()
"""


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("reader")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    subprocess.run([sys.executable, "-c", WRITE, str(directory)], check=True, env=env, timeout=120)
    [path] = list((directory / "wandb").glob("offline-run-*/run-reader-run.wandb"))
    return path


def test_reads_history_summary_config_and_identity(run_file):
    run = read_run(run_file)
    assert (run.run_id, run.job_type, run.group, run.project) == ("reader-run", "certify", "g", "reader")
    assert [row["progress/shards_done"] for row in run.rows_with("progress/shards_done")] == [1, 2, 3, 4, 5]
    assert [row["_step"] for row in run.history] == [0, 1, 2, 3, 4]
    assert all(row["_timestamp"] > 1.7e9 for row in run.history)
    assert len(run.history[2]["big"]) == 40000  # a record spanning two 32 KiB blocks (FIRST / MIDDLE / LAST)
    assert run.summary["certified_accuracy/r=0.5"] == 0.75 and run.summary["certified_accuracy_low/r=0.5"] == 0.4
    assert run.config["sigma"] == 0.25 and run.config["nested"] == {"a": 1}
    assert run.exit_code == 0
    assert list(read_runs(run_file.parent.parent)) == ["reader-run"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_a_damaged_file_fails_loudly(run_file, tmp_path, damage):
    data = bytearray(run_file.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        data = data[:40500]  # inside the record that spans two blocks
    else:
        data[0:4] = b"XW&B"
    broken = tmp_path / "run-broken.wandb"
    broken.write_bytes(bytes(data))
    with pytest.raises(DamagedRunFile, match=str(broken)):
        read_run(broken)
