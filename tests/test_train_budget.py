"""train.max_minutes is a budget: training stops at the batch that would overrun it, leaves a resumable last.pt,
validates the partial model and says so; a rerun with a larger budget continues at that batch and trains the same
model as a run that was never stopped. best.pt holds the weights only; last.pt everything to resume."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, run_cli, tiny_overrides
from omegaconf import OmegaConf

from audiocert.checkpoint import load_checkpoint
from audiocert.training import augment, budget
from audiocert.training.config import check_train_config
from audiocert.training.finished import nothing_left_to_train
from audiocert.training.run import run_training


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Bit-for-bit equality of nested checkpoint contents (tensors compared with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(a), sorted(b))
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def trained_state(path: Path) -> dict[str, Any]:
    """What must match between an uninterrupted and a resumed run: weights, optimizer, scheduler, epoch history."""
    state = torch.load(path, weights_only=True)
    history = [{k: h[k] for k in ("epoch", "loss", "val_accuracy", "lr")} for h in state["metrics"]["history"]]
    return {"model": state["model"], "optimizer": state["optimizer"], "scheduler": state["scheduler"],
            "epoch": state["epoch"], "step": state["step"], "history": history}


# Augmentation noise and dropout draw from the global RNG: resuming must restore it. Four batches per epoch.
DETERMINISTIC = ["train.batch_size=16", "dataset.train_crops_per_speaker=16", "train.validation_crops_per_speaker=2",
                 "device=cpu", "train.threads=1", "train.augment.stage=mfbe", "train.augment.sigma=0.25"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU kernels are bitwise reproducible on one thread
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_cli_budget_stop_saves_resumable_state_and_resume_matches_uninterrupted(
        tiny_corpus: Path, tmp_path: Path, one_thread: None) -> None:
    base = ["train", *tiny_overrides(tiny_corpus), *DETERMINISTIC, "train.epochs=2", "run_name=cut",
            "logger.mode=disabled"]
    # 60 microseconds: the first batch always runs (nothing to judge it by); the second cannot fit.
    result = run_cli([*base, "train.max_minutes=1e-6"], tmp_path)
    out = tmp_path / "train" / "cut"
    output = result.stdout + result.stderr
    assert "time budget train.max_minutes=1e-06 reached" in output and "stopped before batch 2/4 of epoch 1" in output
    assert "train.max_minutes=null to continue" in output and str(out / "last.pt") in output
    assert "\r" not in result.stderr  # plain progress lines, no bar redraws, in a captured (non-terminal) stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_by_budget"] is True and metrics["stop_reason"] == "budget"
    assert metrics["position"] == {"epoch": 0, "step": 1} and metrics["steps_done"] == 1
    assert metrics["epochs_run"] == 0 and metrics["max_minutes"] == 1e-6
    # last.pt: everything to resume mid-epoch; best.pt: the partial model's weights and metadata only.
    last = torch.load(out / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng"} <= set(last) and (last["epoch"], last["step"]) == (0, 1)
    assert last["metrics"]["partial"]["seen"] == 16
    best = torch.load(out / "best.pt", weights_only=True)
    assert not {"optimizer", "scheduler", "rng"} & set(best)
    assert {"model", "architecture", "config", "metrics", "num_classes", "speakers", "epoch", "code_version"} \
        <= set(best)
    assert (out / "best.pt").stat().st_size < (out / "last.pt").stat().st_size / 2  # Adam keeps two moments
    assert load_checkpoint(out / "best.pt").metrics["clean_test_accuracy"] == metrics["clean_test_accuracy"]
    # No budget: it continues at batch 2 of epoch 1 and ends with the model of a run that was never stopped (here
    # one in this process: the same on one thread).
    result = run_cli([*base, "train.max_minutes=null"], tmp_path)
    assert f"resuming from {out / 'last.pt'} at epoch 1, batch 2/4" in result.stdout + result.stderr
    assert json.loads((out / "metrics.json").read_text())["stopped_by_budget"] is False
    whole = compose_train(tiny_corpus, tmp_path, "train.epochs=2")
    run_training(whole, tmp_path / "whole")
    assert_same(trained_state(out / "last.pt"), trained_state(tmp_path / "whole" / "last.pt"))


def compose_train(corpus: Path, runs: Path, *extra: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*tiny_overrides(corpus), *DETERMINISTIC, f"paths.runs_dir={runs}", *extra])


@pytest.mark.slow
def test_budget_stops_mid_epoch_twice_and_the_resumed_model_is_the_uninterrupted_one(
        tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    three_epochs = ("train.epochs=3", "train.patience=100")
    # A fake clock that only the work moves: a training batch takes 1 s, an evaluation batch 0.25 s. Validation and
    # the test set are one batch each, so the reserve is 2 x 1 s + 3 x 0.5 s (saves) before the first validation
    # is timed, 2 x 0.25 s after (saves take no fake time).
    now = [0.0]
    original = augment.model_inputs

    def timed_inputs(*args: Any) -> torch.Tensor:
        now[0] += 1.0 if torch.is_grad_enabled() else 0.25
        return original(*args)

    monkeypatch.setattr(budget, "clock", lambda: now[0])
    monkeypatch.setattr(augment, "model_inputs", timed_inputs)
    whole = run_training(compose_train(tiny_corpus, tmp_path, *three_epochs), tmp_path / "whole")
    assert whole["stop_reason"] == "epochs" and whole["epochs_run"] == 3

    out = tmp_path / "cut"
    now[0] = 0.0
    # 8 s: epoch 1 fits (3 + 1 + 3.5 <= 8 before its last batch), then at 4.25 s + k batches of epoch 2 the next
    # batch fits while 4.25 + k + 1 + 0.5 <= 8: k = 3 stops.
    first = run_training(compose_train(tiny_corpus, tmp_path, *three_epochs, f"train.max_minutes={8 / 60!r}"),
                         out)
    assert first["stopped_by_budget"] and first["position"] == {"epoch": 1, "step": 3}
    assert first["train_seconds"] == 7.75 <= 8  # 7.25 training, 0.25 validating the partial model, 0.25 testing
    assert [s["step"] for s in torch.load(out / "last.pt", weights_only=True)["metrics"]["budget_stops"]] == [3]
    # 12 s in all: 4.25 s are left. The first batch always runs and ends epoch 2; validation; then epoch 3's
    # batches while 1.25 + k + 1 + 0.5 <= 4.25: k = 2 stops.
    now[0] = 0.0
    second = run_training(compose_train(tiny_corpus, tmp_path, *three_epochs, "train.max_minutes=0.2"), out)
    assert second["stopped_by_budget"] and second["position"] == {"epoch": 2, "step": 2}
    assert second["train_seconds"] == 7.75 + 3.75 <= 12
    # Same budget again: spent, nothing to do (nothing trained: the fake clock does not move; no file written).
    now[0] = 0.0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_training(compose_train(tiny_corpus, tmp_path, *three_epochs, "train.max_minutes=0.2"), out)
    assert again == second and now[0] == 0.0 and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # No budget: the rest of epoch 3, then the same model as the run that was never stopped.
    third = run_training(compose_train(tiny_corpus, tmp_path, *three_epochs), out)
    assert third["stop_reason"] == "epochs" and third["steps_done"] == whole["steps_done"] == 12
    assert_same(trained_state(out / "last.pt"), trained_state(tmp_path / "whole" / "last.pt"))


def train_section(**changes: Any):
    config = OmegaConf.load(REPO / "conf" / "train.yaml")
    cfg = OmegaConf.create({"seed": config.seed, "train": OmegaConf.to_container(config.train)})
    for key, value in changes.items():
        OmegaConf.update(cfg, f"train.{key}", value)
    return cfg


@pytest.mark.parametrize(("key", "value"), [
    ("lr", math.inf), ("lr", math.nan), ("lr", 0.0), ("lr", -1e-3),
    ("max_minutes", 0), ("max_minutes", -1), ("max_minutes", math.inf), ("max_minutes", math.nan),
    ("max_minutes", "soon"),
    ("augment.sigma", math.nan), ("augment.sigma", math.inf), ("augment.sigma", -0.1),
    ("epochs", 0), ("epochs", 2.5), ("epochs", True), ("batch_size", 0), ("patience", -1), ("lr_patience", 0),
    ("validation_crops_per_speaker", 0), ("threads", 0), ("resume", "yes"),
])
def test_every_numeric_train_field_is_checked_finite_and_in_range(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"train\.{key}="):
        check_train_config(train_section(**{key: value}))


@pytest.mark.parametrize("seed", [-1, 2**62, 1.5, math.nan])
def test_the_seed_is_checked_too(seed: Any) -> None:
    cfg = train_section()
    cfg.seed = seed
    with pytest.raises(ValueError, match="seed="):
        check_train_config(cfg)


def test_valid_train_fields_pass() -> None:
    check_train_config(train_section())
    check_train_config(train_section(max_minutes=0.001, threads=2, **{"augment.sigma": 0.25}))


SUMMARY = {"position": {"epoch": 1, "step": 3}, "stale_epochs": 0, "stopped_by_budget": True, "max_minutes": 4,
           "train_seconds": 235.0}


@pytest.mark.parametrize(("summary", "changes", "finished"), [
    (SUMMARY, {"max_minutes": 4}, True),  # its own budget: spent
    (SUMMARY, {"max_minutes": 3}, True),  # a smaller one too
    (SUMMARY, {"max_minutes": 5}, False),  # a larger budget continues at the batch
    (SUMMARY, {"max_minutes": None}, False),
    (SUMMARY, {"max_minutes": 5, "epochs": 1}, True),  # ... unless the epochs are all done
    ({**SUMMARY, "stopped_by_budget": False, "max_minutes": None, "train_seconds": 600.0}, {"max_minutes": 9}, True),
    ({**SUMMARY, "stopped_by_budget": False, "position": {"epoch": 40, "step": 0}}, {"max_minutes": None}, True),
    ({**SUMMARY, "stopped_by_budget": False, "position": {"epoch": 40, "step": 0}}, {"epochs": 50}, False),
    ({**SUMMARY, "stopped_by_budget": False, "position": {"epoch": 9, "step": 0}, "stale_epochs": 6},
     {"max_minutes": None}, True),  # early stopping: patience 6 is spent
    ({**SUMMARY, "stopped_by_budget": False, "position": {"epoch": 9, "step": 0}, "stale_epochs": 6},
     {"max_minutes": None, "patience": 10}, False),
    ({"clean_test_accuracy": 0.9}, {"max_minutes": 4}, False),  # written before positions were recorded
])
def test_a_run_is_finished_when_its_continuation_knobs_would_train_no_further(
        summary: dict, changes: dict, finished: bool) -> None:
    train_cfg = {"epochs": 40, "patience": 6, "max_minutes": None, **changes}
    assert (nothing_left_to_train(summary, train_cfg) is not None) is finished


def test_budget_timer_judges_the_next_batch_by_the_mean_step_and_the_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(budget, "clock", lambda: now[0])
    timer = budget.BudgetTimer(budget_s=10.0, started=0.0)
    now[0] = 50.0
    assert timer.next_step_fits(eval_batches=4)  # the first batch of a command runs while any budget is left
    assert not budget.BudgetTimer(budget_s=-1.0, started=0.0).next_step_fits(eval_batches=4)
    now[0] = 1.0
    timer.record_step(1.0)  # before any validation, an evaluation batch is taken to cost a training step
    assert timer.reserve_s(4) == 4 * 1.0 + 3 * 0.5
    assert timer.next_step_fits(4)  # 1 + 1 + 5.5 = 7.5 <= 10
    now[0] = 3.6
    assert not timer.next_step_fits(4)  # 3.6 + 1 + 5.5 > 10
    timer.eval_s_per_batch, timer.save_s = 0.1, 0.0
    assert timer.next_step_fits(4)  # 3.6 + 1 + 0.4 <= 10
    assert budget.BudgetTimer(budget_s=math.inf, started=0.0).next_step_fits(10**9)
