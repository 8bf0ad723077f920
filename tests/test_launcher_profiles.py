"""The launcher profiles of conf/launcher compose with Hydra and pass the checks a sweep makes before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from audiocert.kinds.certify import certified_quantities, shard_device_type
from audiocert.launching.scheduling import check_launcher_config, estimate_throughput

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("certify", overrides=list(overrides))


def _launcher(*overrides: str) -> dict:
    return OmegaConf.to_container(_compose(*overrides).launcher, resolve=True)


@pytest.mark.parametrize("profile", sorted(p.stem for p in (CONF / "launcher").glob("*.yaml")))
def test_every_launcher_profile_composes_and_passes_the_launcher_checks(profile: str):
    check_launcher_config(_launcher(f"launcher={profile}"))


def test_slurm_gpu_profile_is_slurm_with_one_gpu_per_task():
    gpu, slurm = _launcher("launcher=slurm_gpu"), _launcher("launcher=slurm")
    assert gpu["name"] == "slurm"  # the same executor; only the settings differ
    assert set(slurm) <= set(gpu)  # every slurm setting is inherited or overridden, none lost
    assert gpu["gpus_per_task"] == 1 and gpu["cpus_per_task"] >= 1 and gpu["mem_gb"] > 0
    # What it changes besides the resources, and what it leaves to slurm.yaml:
    changed = {k for k in slurm if slurm[k] != gpu[k]}
    assert changed == {"gpus_per_task", "cpus_per_task", "mem_gb", "samples_per_s", "time_min", "per_shard_s"}
    # Its throughput estimate sizes CUDA tasks only: a CPU sweep falls back to the CPU default.
    assert estimate_throughput([], gpu["samples_per_s"], "cuda").samples_per_s == 20000
    assert estimate_throughput([], gpu["samples_per_s"], "cpu").source.startswith("default for cpu")
    # A task's estimated work (task_minutes less start-up) ends before the requeue signal even at 1/2.5 of the
    # estimated throughput, as its comment says.
    work_s = gpu["task_minutes"] * 60 - gpu["startup_s"]
    assert gpu["startup_s"] + 2.5 * work_s + gpu["signal_delay_s"] <= gpu["time_min"] * 60


def test_slurm_gpu_profile_plans_for_cuda_and_leaves_bf16_to_certify():
    cfg = _compose("launcher=slurm_gpu")
    assert str(cfg.device) == "auto" and shard_device_type(cfg) == "cuda"
    assert "bf16" not in cfg.launcher and cfg.certify.bf16 is False
    bf16 = _compose("launcher=slurm_gpu", "certify.bf16=true")
    assert certified_quantities(bf16)["bf16"] is True
    assert certified_quantities(bf16) != certified_quantities(cfg)  # a different base classifier, another hash


def test_slurm_gpu_profile_takes_site_overrides():
    launcher = _launcher("launcher=slurm_gpu", "launcher.partition=gpu", "launcher.account=proj",
                         "launcher.gpus_per_task=2", "launcher.setup=[module load cuda]")
    check_launcher_config(launcher)
    assert (launcher["partition"], launcher["account"], launcher["gpus_per_task"], launcher["setup"]) == (
        "gpu", "proj", 2, ["module load cuda"])
    with pytest.raises(ValueError, match="launcher.task_minutes=90"):
        check_launcher_config(_launcher("launcher=slurm_gpu", "launcher.task_minutes=90"))


def test_a_relative_runs_directory_becomes_absolute_so_jobs_and_later_commands_name_the_same_files(monkeypatch,
                                                                                                  tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUDIOCERT_RUNS_DIR", "my-runs")
    cfg = _compose("sweep.name=s")
    assert cfg.paths.runs_dir == str(tmp_path / "my-runs")
    assert cfg.sweep.dir == str(tmp_path / "my-runs" / "sweeps" / "s")
    monkeypatch.setenv("AUDIOCERT_RUNS_DIR", "~/elsewhere")
    assert _compose().paths.runs_dir == str(Path.home() / "elsewhere")
