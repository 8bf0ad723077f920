"""A damaged checkpoint never strands the user: `train` sets a corrupt last.pt/best.pt aside and trains from scratch,
and `load_checkpoint` names the file and the fix instead of raising a bare pickle or zip error."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import run_cli, tiny_overrides

from audiocert.checkpoint import load_checkpoint, save_checkpoint
from audiocert.model import ARCHITECTURE


def torch_bytes(payload: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


# Every way a checkpoint file is found damaged in practice: a write cut short, an empty file, garbage, and files that
# torch reads but that are not (whole) checkpoints.
CORRUPTIONS: dict[str, Callable[[], bytes]] = {
    "truncated": lambda: torch_bytes({"model": {"w": torch.zeros(4096)}, "epoch": 1})[:2000],
    "zero-byte": lambda: b"",
    "random": lambda: os.urandom(4096),
    "not-a-dict": lambda: torch_bytes([1, 2, 3]),
    "missing-keys": lambda: torch_bytes({"architecture": ARCHITECTURE, "epoch": 3}),
}


def train_args(corpus: Path, run_name: str, epochs: int = 1, *extra: str) -> list[str]:
    """A train command small enough for a test: tiny model, few crops, one epoch by default."""
    return ["train", *tiny_overrides(corpus), f"run_name={run_name}", f"train.epochs={epochs}",
            "train.batch_size=16", "dataset.train_crops_per_speaker=16", "train.validation_crops_per_speaker=2",
            "device=cpu", "logger.mode=disabled", *extra]  # no W&B run: test_dashboard checks those


def assert_trained_from_scratch(out: Path, damaged: str, original: bytes, output: str, epochs: int) -> None:
    path = out / damaged
    warnings = [line for line in output.splitlines() if str(path) in line and "from scratch" in line]
    assert len(warnings) == 1, output[-4000:]
    [aside] = [p for p in out.glob(f"{damaged}.corrupt-*") if p.name in warnings[0]]
    assert aside.read_bytes() == original  # moved, not deleted
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(out / name).config["dataset"]["name"] == "tiny4"
    last = torch.load(out / "last.pt", weights_only=True)
    assert [h["epoch"] for h in last["metrics"]["history"]] == list(range(epochs))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated", "zero-byte", "random", "missing-keys"])  # not-a-dict: same path
def test_train_restarts_from_scratch_after_corrupt_last_pt(kind: str, tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "train" / kind
    out.mkdir(parents=True)
    original = CORRUPTIONS[kind]()
    (out / "last.pt").write_bytes(original)
    result = run_cli(train_args(tiny_corpus, kind), tmp_path)
    assert_trained_from_scratch(out, "last.pt", original, result.stdout + result.stderr, epochs=1)


@pytest.mark.slow
def test_train_recovers_from_damaged_real_checkpoints(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "train" / "real"
    run_cli(train_args(tiny_corpus, "real"), tmp_path)
    # A real last.pt cut short mid-write; asking for a second epoch would otherwise resume from it.
    original = (out / "last.pt").read_bytes()[:-1000]
    (out / "last.pt").write_bytes(original)
    result = run_cli(train_args(tiny_corpus, "real", epochs=2), tmp_path)
    assert_trained_from_scratch(out, "last.pt", original, result.stdout + result.stderr, epochs=2)
    # A finished run whose best.pt is damaged: last.pt alone cannot stand in for the best model, so it retrains.
    original = (out / "best.pt").read_bytes()[:-1000]
    (out / "best.pt").write_bytes(original)
    result = run_cli(train_args(tiny_corpus, "real", epochs=2), tmp_path)
    assert_trained_from_scratch(out, "best.pt", original, result.stdout + result.stderr, epochs=2)
    # A readable last.pt of this config whose weights do not fit the model: set aside too, not a crash.
    state = torch.load(out / "last.pt", weights_only=True)
    save_checkpoint(out / "last.pt", {**state, "model": {"junk": torch.zeros(1)}})
    original = (out / "last.pt").read_bytes()
    # (A third epoch makes the finished run resumable again, so last.pt is read; a changed patience would not, as
    # the two epochs asked for are done.)
    result = run_cli(train_args(tiny_corpus, "real", 3), tmp_path)
    assert_trained_from_scratch(out, "last.pt", original, result.stdout + result.stderr, epochs=3)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_load_checkpoint_names_corrupt_file_and_fix(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    path.write_bytes(CORRUPTIONS[kind]())
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and "audiocert train" in message and "checkpoint=" in message, message
    assert "weights_only` set to `False`" not in message  # torch's advice to unpickle untrusted code is not ours


def test_load_checkpoint_names_file_whose_weights_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    config = {"model": {"widths": [4, 8, 8, 16], "embedding_dim": 16}}
    save_checkpoint(path, {"config": config, "num_classes": 4, "model": {"nonsense": torch.zeros(1)}})
    with pytest.raises(ValueError, match="does not fit") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "audiocert train" in str(error.value)
