"""Progress output: a tqdm bar in a terminal; in a log (SLURM, `> file`, a captured pipe) a plain line at most every
interval seconds and one at the end, never carriage-return redraws."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
from conftest import run_cli, tiny_overrides
from tqdm import tqdm

from audiocert.progress import INTERVAL_ENV, PlainProgress, interval_from_env, progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_are_bounded_by_the_interval_and_end_with_a_final_line() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = PlainProgress(total=960, desc="shards", unit="shards", interval=30.0, file=out, clock=clock)
    for _ in range(960):  # 1/8 s each (exact in binary): 120 s in all
        clock.now += 0.125
        bar.set_postfix(loss="0.412")
        bar.update(1)
    bar.close()
    bar.close()  # closing twice prints one final line
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 120 // 30 + 1, lines
    assert lines[0] == "shards: 240/960 shards (25%), 8 shards/s, ETA 1m30s, loss=0.412"
    assert lines[-1] == "shards: 960/960 shards (100%), 8 shards/s, took 2m00s, loss=0.412"


def test_zero_interval_prints_every_update_and_iteration_closes_with_the_count_reached() -> None:
    clock, out = FakeClock(), io.StringIO()

    def items():
        for i in range(10):
            clock.now += 2.0
            yield i

    for i in PlainProgress(items(), total=10, desc="epoch 1/3", unit="batches", interval=0, file=out, clock=clock):
        if i == 4:
            break
    lines = out.getvalue().splitlines()
    # Each finished item printed a line (an item is counted when the next is asked for); the break closed the bar.
    assert lines == [f"epoch 1/3: {n}/10 batches ({10 * n}%), 2 s each, ETA {2 * (10 - n)}s" for n in range(1, 5)] + [
        "epoch 1/3: 4/10 batches (40%), 2.5 s each, took 10s"]


def test_unknown_total_resumed_count_and_disabled() -> None:
    clock, out = FakeClock(), io.StringIO()
    with PlainProgress(desc="scan", unit="files", interval=5, file=out, clock=clock) as bar:
        clock.now += 6
        bar.update(12)
    assert out.getvalue().splitlines() == ["scan: 12 files, 2 files/s", "scan: 12 files, 2 files/s, took 6s"]
    out = io.StringIO()
    with PlainProgress(total=10, initial=6, desc="epoch", unit="batches", interval=0, file=out, clock=clock) as bar:
        clock.now += 4
        bar.update(2)  # the rate counts the batches of this run, not the 6 resumed ones
    assert out.getvalue().splitlines()[0] == "epoch: 8/10 batches (80%), 2 s each, ETA 4s"
    out = io.StringIO()
    with PlainProgress(total=10, disable=True, interval=0, file=out, clock=clock) as bar:
        bar.update(10)
    assert out.getvalue() == "" and bar.n == 10


def test_lines_go_through_logging_when_it_is_configured(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="audiocert.progress"):
        with progress(total=3, desc="shards done", unit="shards", interval=0, file=None) as bar:
            bar.update(3)
    messages = [r.getMessage() for r in caplog.records if r.name == "audiocert.progress"]
    assert messages and messages[-1].startswith("shards done: 3/3 shards (100%)")


def test_a_terminal_gets_a_tqdm_bar_and_a_pipe_plain_lines() -> None:
    terminal = Terminal()
    bar = progress(range(3), desc="epoch 1/1", unit="batches", file=terminal)
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2] and "\r" in terminal.getvalue()
    pipe = io.StringIO()
    bar = progress(range(3), desc="epoch 1/1", unit="batches", file=pipe, interval=0)
    assert isinstance(bar, PlainProgress) and list(bar) == [0, 1, 2]
    assert "\r" not in pipe.getvalue() and pipe.getvalue().count("\n") == 4


def test_interval_comes_from_the_environment_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert interval_from_env() == 30.0
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert interval_from_env() == 2.5 and PlainProgress(total=1, file=io.StringIO()).interval == 2.5
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=INTERVAL_ENV):
            interval_from_env()
    with pytest.raises(ValueError, match="interval"):
        PlainProgress(total=1, interval=-1.0, file=io.StringIO())


@pytest.mark.slow
def test_train_writes_plain_progress_lines_and_no_carriage_returns(tiny_corpus: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0")  # a line per batch: the plain lines are seen, however fast the machine
    result = run_cli(["train", *tiny_overrides(tiny_corpus), "run_name=progress", "train.epochs=1",
                      "train.batch_size=16", "dataset.train_crops_per_speaker=8",
                      "train.validation_crops_per_speaker=2", "device=cpu", "logger.mode=disabled"], tmp_path)
    assert "\r" not in result.stderr and "\r" not in result.stdout
    # Hydra's logging writes INFO to stdout
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "audiocert.progress" in line]
    assert [re.search(r"epoch 1/1: (\d)/2 batches", line).group(1) for line in lines] == ["1", "2", "2"], lines
