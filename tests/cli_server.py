"""Runs `python -m audiocert.cli ARGS` for the tests (conftest.run_cli) without paying the interpreter's and torch's
start-up for every command: about 2.5 s of CPU each, most of the suite's CPU time on a 2-core machine.

This process imports what every `audiocert` command imports before it reads its arguments (the package, hence torch),
and the modules commands import later anyway (see preload), never audiocert.cli itself: a fork of it is in the state
a fresh `python -m audiocert.cli` is in when cli.py starts, with some of its later imports done. For each
request (one JSON line on stdin: args, cwd, env and the files for stdout and stderr) it forks a child that takes the
working directory, environment and standard streams of the request and runs the module as `python -m` does; the
parent answers {"pid": ...} at once and {"status": ...} (a subprocess returncode: -N for signal N) once the child has
ended, with the CPU seconds it used (its own and those of the processes it waited for). Requests are served one at
a time: commands that run at once run on servers of their own (conftest.run_on_a_server keeps the idle ones).

Run as a script: `python tests/cli_server.py`.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import threading
import traceback

# What `python -m audiocert.cli` has imported when cli.py starts: its package (hence torch) and cli.py's own imports.
# Not audiocert.cli itself: `-m` runs that module fresh, as __main__.
import audiocert  # noqa: F401
import audiocert.progress  # noqa: F401


def preload() -> None:
    """Import what the commands import later anyway (audiocert's other modules, Hydra, submitit, and the libraries
    the package loads lazily so that its shard workers start fast: scipy.stats, matplotlib; torch._dynamo, which
    torch's optimizers load): 0.7-1 s of CPU of every command on this project's 2-core machine, 1.7 s more of
    every `train`. An import runs once per process whoever asks for it, so a command sees
    the modules it would have loaded itself. None of these reads the environment or the working directory at
    import (those are the request's, set after the fork); wandb, which does, is left to the commands."""
    import importlib
    import pkgutil

    skip = {"audiocert.cli"}  # run fresh, as __main__, by each command
    for module in pkgutil.walk_packages(audiocert.__path__, "audiocert."):
        if module.name not in skip:
            importlib.import_module(module.name)
    for name in ("hydra.main", "hydra._internal.utils", "hydra.core.utils", "omegaconf", "submitit",
                 "submitit.local.local", "submitit.local.debug", "submitit.slurm.slurm", "scipy.stats",
                 "scipy.optimize", "scipy.signal", "scipy.sparse", "matplotlib.figure", "matplotlib.lines",
                 "matplotlib.backends.backend_agg", "soundfile", "torch._dynamo"):
        importlib.import_module(name)


def exit_status(code: object) -> int:
    """The exit status the interpreter gives ``raise SystemExit(code)``; a message is printed as it prints it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_command(request: dict) -> None:
    """In the forked child: become the requested command, run it, and exit as the interpreter would."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["audiocert.cli", *request["args"]]  # runpy puts the module's path first, as `-m` does
    sys.path[0] = request["cwd"]  # `-m` puts the working directory first on the path
    for entry in reversed([e for e in request["env"].get("PYTHONPATH", "").split(os.pathsep) if e]):
        if entry not in sys.path:  # as a fresh interpreter reads PYTHONPATH (a user's package beside audiocert)
            sys.path.insert(1, entry)
    code = 0
    try:
        runpy.run_module("audiocert.cli", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = exit_status(stop.code)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    try:  # interpreter exit: wait for non-daemon threads, then the atexit handlers (logging, W&B, ...)
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def serve() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # nothing else this process prints may reach the answers
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            answers.close()
            run_command(request)
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status, usage = os.wait4(pid, 0)  # the command's CPU, with the workers it waited for
        answers.write(json.dumps({"status": os.waitstatus_to_exitcode(status),
                                  "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}) + "\n")


if __name__ == "__main__":
    preload()
    import gc
    gc.freeze()
    serve()
