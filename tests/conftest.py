"""Shared fixtures: a tiny generated LibriSpeech tree and quiet W&B."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
# Every torch process of the suite (the CLI, its local workers, SLURM tasks, the xdist workers) shares 2 cores:
# OpenMP threads that spin while they wait for work slow each other down 3-5x. Waiting passively changes no result
# (the number of threads, and so the order of every sum, is the same). Set before torch loads; subprocesses and
# SLURM jobs (sbatch exports the environment) inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def uses_module_fixture(item: pytest.Item) -> bool:
    """Whether the test needs a fixture made once per module (or class)."""
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(d.scope in ("module", "class", "package") for name in getattr(item, "fixturenames", ())
               for d in definitions.get(name, ()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The order in which `make test`'s xdist workers take the test modules (-n 3 --dist loadfile
    --no-loadscope-reorder: a module runs whole, on one worker, so its module fixtures are made once and the SLURM
    tests, which share the cluster and restart it, run in order). The SLURM module goes first: it mostly waits on
    the scheduler while the others compute. Then the modules with slow tests or module fixtures, longest first
    (LONGEST), then the short ones, which fill the workers to the end. Tests keep their order within a module."""
    rank: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        if item.get_closest_marker("slurm") is not None:
            mark = 0
        elif item.get_closest_marker("slow") is not None or uses_module_fixture(item):
            mark = 1
        else:
            mark = 2
        rank[module] = min(rank.get(module, 2), mark)
    items.sort(key=lambda item: (rank[item.nodeid.split("::")[0]], -LONGEST.get(item.nodeid.split("::")[0], 0)))


# The longest modules after the SLURM one, in seconds on a 2-core machine (make test, 2026-12-07), started first so
# that no worker is left with a long one at the end; a stale figure costs balance, never a result.
LONGEST = {"tests/test_attack_pipeline.py": 125, "tests/test_pipeline.py": 110, "tests/test_failures.py": 100,
           "tests/test_perceptibility_pipeline.py": 55, "tests/test_algorithms.py": 50, "tests/test_main_job.py": 47,
           "tests/test_dashboard.py": 46, "tests/test_attack_bounds.py": 40, "tests/test_certified_dir.py": 32}


# Under xdist the SLURM module, on one worker, is the longest chain of the run: its tests wait for the cluster's tasks,
# which share the 2 cores with the other workers. Those workers lower their priority once they leave the cluster's
# tests, so the tasks the chain waits for run first and the others fill the rest of the CPU (measured: the SLURM
# module ended 90 s after the other workers without this).
NICE_BESIDE_THE_CLUSTER = 10
LOWERED: list[bool] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") and not LOWERED and item.get_closest_marker("slurm") is None:
        os.nice(NICE_BESIDE_THE_CLUSTER)  # this worker and every process it starts from now on
        LOWERED.append(True)


def made_once(tmp_path_factory, name: str, make: Callable[[Path], Path]) -> Path:
    """``make(directory)``'s result, made once for the whole run: under xdist, the first worker to ask makes it
    (the others wait on a lock) in the directory all workers share, so each worker does not redo it."""
    import fcntl

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    directory, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            done.write_text(str(make(directory)))
    return Path(done.read_text())


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A 4-speaker synthetic corpus in the LibriSpeech layout (real FLAC files); read-only for the tests (a test
    that damages files copies them first)."""
    from audiocert.corpus import generate_corpus

    return made_once(tmp_path_factory, "corpus", lambda root: generate_corpus(
        root, num_speakers=4, utterances_per_speaker=6, seed=3, min_seconds=2.0, max_seconds=3.0, progress=False))


def tiny_overrides(corpus: Path) -> list[str]:
    """Hydra overrides for a 4-speaker dataset on the tiny corpus and a very small ResCNN."""
    return [
        f"dataset.root={corpus}", "dataset.name=tiny4", "dataset.num_classes=4", "dataset.generate=null",
        "dataset.train_crops_per_speaker=64", "dataset.test_crops_per_speaker=4",
        "model.widths=[4,8,8,16]", "model.embedding_dim=16", "model.bn_momentum=0.3",
    ]


# AUDIOCERT_TEST_FRESH_PROCESSES=1: run_cli starts a new interpreter for every command instead of forking one that
# has imported audiocert already (tests/cli_server.py; the same command, without 2.5 s of CPU start-up each).
FRESH_PROCESSES = os.environ.get("AUDIOCERT_TEST_FRESH_PROCESSES") == "1"
# AUDIOCERT_TEST_CLI_CPU_LOG=FILE: each command run_cli runs appends a line (CPU seconds, test, arguments) to FILE.
CLI_CPU_LOG = os.environ.get("AUDIOCERT_TEST_CLI_CPU_LOG")


class CliServer:
    """A tests/cli_server.py process: runs one command at a time, each in a fork of itself."""

    def __init__(self) -> None:
        import subprocess
        import sys
        import tempfile

        self.log = tempfile.TemporaryFile()  # the server's own stderr (a child's goes to its request's file)
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_server.py"))], cwd=REPO,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.buffer = b""
        STARTED_SERVERS.append(self)

    def close(self) -> None:
        """End the server (it ends at the end of its input) and close its pipes."""
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a server that does not end is killed
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.log.close()

    def answer(self, timeout: float | None) -> dict | None:
        """The server's next answer, or None if there is none within ``timeout`` seconds."""
        import json
        import select

        while b"\n" not in self.buffer:
            if not select.select([self.process.stdout], [], [], timeout)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                self.log.seek(0)
                raise RuntimeError(f"tests/cli_server.py ended: {self.log.read().decode(errors='replace')[-3000:]}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, args: list[str], env: dict[str, str], timeout: float):
        import json
        import signal
        import subprocess
        import sys
        import tempfile

        command = [sys.executable, "-m", "audiocert.cli", *args]
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"args": args, "cwd": str(REPO), "env": env, "stdout": str(out), "stderr": str(err)}
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
            pid = self.answer(None)["pid"]
            ended = self.answer(timeout)
            if ended is None:
                os.kill(pid, signal.SIGKILL)
                self.answer(None)
                raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text())
            if CLI_CPU_LOG:  # where the suite's CPU goes, command by command
                with open(CLI_CPU_LOG, "a") as log:
                    log.write(f"{ended['cpu_s']}\t{os.environ.get('PYTEST_CURRENT_TEST', '')}\t{' '.join(args)}\n")
            return subprocess.CompletedProcess(command, ended["status"], out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))


STARTED_SERVERS: list[CliServer] = []


def pytest_unconfigure(config: pytest.Config) -> None:
    for server in STARTED_SERVERS:
        server.close()


IDLE_SERVERS: list[CliServer] = []
SERVERS_LOCK = threading.Lock()


def run_on_a_server(args: list[str], env: dict[str, str], timeout: float):
    """CliServer.run on a server no other thread is using, started when none is idle (ended by pytest_unconfigure).
    Servers are shared, not one per thread: a thread pool's threads are new at every use, and a server costs about
    6 s of CPU to start (its imports), some 10 times what a command run on it costs."""
    import subprocess

    with SERVERS_LOCK:
        live = [s for s in IDLE_SERVERS if s.process.poll() is None]
        server = live.pop() if live else None
        IDLE_SERVERS[:] = live
    server = server or CliServer()
    reusable = False  # after any other exception its answers may be half read
    try:
        result = server.run(args, env, timeout)
        reusable = True
        return result
    except subprocess.TimeoutExpired:  # the command was killed and its answer read: the server serves on
        reusable = True
        raise
    finally:
        if reusable:
            with SERVERS_LOCK:
                IDLE_SERVERS.append(server)
        else:
            server.close()


def run_cli(args: list[str], runs_dir: Path, check: bool = True, timeout: float = 600):
    """Run the real `audiocert` CLI (`python -m audiocert.cli ARGS`) in its own process, with results under
    ``runs_dir``: its exit status and output as subprocess.run(capture_output=True, text=True) gives them."""
    import subprocess
    import sys

    env = {**os.environ, "AUDIOCERT_RUNS_DIR": str(runs_dir), "HYDRA_FULL_ERROR": "1"}
    if FRESH_PROCESSES:
        result = subprocess.run([sys.executable, "-m", "audiocert.cli", *args], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=timeout)
    else:
        result = run_on_a_server(args, env, timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"audiocert {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="session")
def trained(tiny_corpus, tmp_path_factory) -> dict:
    """A tiny base classifier trained by the real CLI; returns its runs dir, overrides and metrics."""
    import json

    overrides = tiny_overrides(tiny_corpus)

    def train(runs: Path) -> Path:
        run_cli(["train", *overrides, "train.lr=0.003", "train.epochs=3", "train.batch_size=16",
                 "train.validation_crops_per_speaker=6"], runs)
        return runs

    # Trained once for all xdist workers; each worker certifies its own copy (a test may train it further).
    runs = tmp_path_factory.mktemp("runs")
    shutil.copytree(made_once(tmp_path_factory, "trained", train), runs, dirs_exist_ok=True)
    out = runs / "train" / "tiny4-rescnn_small"
    return {"runs": runs, "overrides": overrides, "dir": out, "metrics": json.loads((out / "metrics.json").read_text())}


@pytest.fixture
def restore_trained_model(trained, tmp_path_factory):
    """For a test that trains `trained`'s model further: its files are put back (bytes and times) afterwards, so
    every later test, in whatever order a worker runs them, certifies the model the fixture trained."""
    import shutil

    saved = tmp_path_factory.mktemp("trained-model")
    files = [p for p in trained["dir"].iterdir() if p.is_file()]
    for path in files:
        shutil.copy2(path, saved / path.name)
    yield
    for path in trained["dir"].iterdir():
        if path.is_file() and not (saved / path.name).exists():
            path.unlink()
    for path in files:
        shutil.copy2(saved / path.name, path)


def local_workers(sweep_dir: Path) -> list[str]:
    """PIDs of the local workers (submitit LocalExecutor jobs) of the sweep in ``sweep_dir``."""
    import subprocess

    logs = sweep_dir / "logs" / "local"
    return subprocess.run(["pgrep", "-f", str(logs)], capture_output=True, text=True).stdout.split()


def kill_with_orphans(parent, sweep_dir: Path, timeout: float = 30.0) -> None:
    """SIGKILL a local `audiocert` command (``parent``, a Popen) and wait until its workers have noticed and stopped
    (they poll for their parent about once a second, and may finish the shard in hand meanwhile)."""
    import signal
    import time

    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + timeout
    while local_workers(sweep_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert not local_workers(sweep_dir), f"workers of {sweep_dir} outlived the killed command"


def certify_overrides(trained: dict, sweep: str, *extra: str) -> list[str]:
    return [*trained["overrides"], f"sweep.name={sweep}", "certify.points_per_speaker=2", "certify.n0=20",
            "certify.n=60", "certify.shard.examples=4", "certify.shard.samples=30", "certify.batch_size=50",
            "logger.mode=disabled", *extra]


def read_certs(config_dir: Path) -> list[tuple]:
    """Certificates without the timing column (which legitimately differs between runs)."""
    from audiocert.kinds.certify import read_certificates

    return [(r["idx"], r["label"], r["predict"], r["radius"], r["correct"])
            for r in read_certificates(config_dir / "certificates.tsv")]
