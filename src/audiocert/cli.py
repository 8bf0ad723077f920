"""The `audiocert` command: subcommands that run jobs are Hydra apps taking overrides; the rest use argparse.

    audiocert train dataset=synthetic10 model=rescnn_small
    audiocert certify -m representation=mfbe,magspec smoothing.sigma=0.05,0.25
    audiocert status runs/sweeps/NAME

The Hydra configs ship inside the package (audiocert.conf, which is conf/ of a checkout); your own configs come in
with Hydra's ``--config-dir DIR``, or ``AUDIOCERT_CONF=DIR`` as its default (see :func:`locate_configs`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from audiocert.configs import CONF_PACKAGE, locate_configs, missing_config_hint
from audiocert.progress import UNWRITABLE, LogWriteError, stop_on_unwritable_logs, unwritable_log

SUBCOMMANDS: dict[str, str] = {
    "corpus": "generate the synthetic speaker corpus of a dataset config (LibriSpeech layout, FLAC)",
    "train": "train a base classifier (Hydra overrides: dataset=, model=, train.augment.stage=...)",
    "certify": "plan, shard and run Monte-Carlo certification; sweep with -m; reduce when done",
    "attack": "attack the smoothed classifier (and f) on the certified points; sweep with -m (conf/attack/)",
    "perceptibility": "certified radii against what a listener hears (masking model, PESQ/STOI, imperceptible attack)",
    "reduce": "reduce a config directory (or every config of a sweep directory) by hand",
    "status": "shards done / total, samples/s, ETA and failed shards of a sweep directory",
    "report": "Markdown report with tables and figures from a sweep directory",
    "stats": "per-representation statistics of a dataset (range, percentiles, mean, SD)",
    "examples": "Gaussian-perturbed examples at each stage and sigma (WAV + PNG)",
    "radius-table": "maximum certifiable radius for a grid of sigma x n at a given alpha",
}


def hydra_app(config_name: str, task: Callable, after: Callable[[Path], None] | None = None
              ) -> Callable[[list[str]], None]:
    """Run ``task(cfg)`` as a Hydra app on the packaged <config_name>.yaml (plus ``--config-dir DIR``, or
    $AUDIOCERT_CONF) with the given overrides, then ``after(record)``.

    Every config the command will run is composed and checked against its schema first (audiocert.schemas),
    before Hydra writes anything. A refusal, and any failure of a damaged or missing file or a bad value later on
    (in a job, in Hydra's own writes, in ``after``), ends the command in one line: ``audiocert <command>: ...``.
    ``record``: the file where the app's ``finalize`` callback (launching.sweep.FinalizeSweep) wrote the jobs' results.
    """

    def run(argv: list[str]) -> None:
        import hydra
        from omegaconf import OmegaConf

        argv, user_dir = locate_configs(config_name, argv)
        with said_in_one_line(config_name):
            if config_name in KIND_COMMANDS[1:]:  # attack / perceptibility certified=DIR: the certification's config
                from audiocert.launching.certified import follow_certified

                argv = follow_certified(config_name, argv)
            check_before_running(config_name, argv, user_dir)

        def checked_task(cfg):  # every interpolation resolved (names that become paths checked) before any work
            with said_in_one_line(config_name):
                OmegaConf.to_container(cfg, resolve=True)
                return task(cfg)

        checked_task.__name__ = checked_task.__qualname__ = task.__name__  # Hydra names the job after the task
        main = hydra.main(version_base="1.3", config_path=f"pkg://{CONF_PACKAGE}", config_name=config_name)(
            checked_task)
        informational = any(a in ("--cfg", "-c", "--help", "-h", "--info", "-i") for a in argv)
        with tempfile.TemporaryDirectory(prefix="audiocert-") as scratch:
            record = Path(scratch) / "planned.json"
            extra = [f"hydra.callbacks.finalize.record={record}"] if after is not None and not informational else []
            sys.argv = [f"audiocert-{config_name}", *argv, *extra]
            try:
                with said_in_one_line(config_name, hydra_errors=not informational):
                    main()
            except SystemExit as stop:
                if stop.code and (hint := missing_config_hint(argv, user_dir)):
                    print(hint, file=sys.stderr)
                raise
            if extra:
                with said_in_one_line(config_name):
                    after(record)

    return run


def check_before_running(command: str, argv: list[str], user_dir: Path | None) -> None:
    """Compose every config ``audiocert <command> ARGV`` will run, as Hydra will, and check each against its
    schema, before Hydra writes anything (it creates a job's directory and .hydra/ files before the job starts, and
    a job may generate a corpus): SystemExit naming the refused setting. A kind of work's config is also checked as
    planning will use it: on its device and cluster, with the dataset settings of its checkpoint."""
    from audiocert.schemas import COMMAND_SCHEMAS, check_config
    from audiocert.schemas.compose import CompositionError, composed_jobs
    from audiocert.schemas.store import store_schemas

    store_schemas()
    if command not in COMMAND_SCHEMAS:
        return
    clusters: set[str] = set()
    try:
        for overrides, cfg in composed_jobs(CONF_PACKAGE, command, argv, user_dir):
            if command in KIND_COMMANDS[1:]:
                from audiocert.launching.certified import adopt_certified

                cfg = adopt_certified(cfg)
            check_config(command, cfg, dataset_final=command not in KIND_COMMANDS)
            if command in KIND_COMMANDS:
                check_as_planned(command, cfg, overrides, clusters)
            if command in (*KIND_COMMANDS, "train"):
                from audiocert.checkpoint import check_external_model

                check_external_model(cfg, weights=command != "train")
    except CompositionError as error:
        raise SystemExit(missing_config_hint(argv, user_dir) or f"audiocert {command}: {error}") from None


def check_as_planned(command: str, cfg: Any, overrides: list[str], clusters: set[str]) -> None:
    """What planning checks of a kind of work's config before it writes anything: the cluster (once per
    command: ``clusters`` holds those checked), the device, and the config with the dataset settings it will be
    planned with (its checkpoint's, where ``overrides`` set none)."""
    import copy

    from audiocert.launching.planning import check_device, inherit_dataset
    from audiocert.launching.slurm import check_slurm_available
    from audiocert.schemas import check_config

    if cfg.launcher.name == "slurm" and "slurm" not in clusters:
        check_slurm_available()
        clusters.add("slurm")
    check_device(cfg)
    if cfg.inherit_dataset and Path(str(cfg.checkpoint)).is_file():
        cfg = copy.deepcopy(cfg)
        inherit_dataset(cfg, [o.split("=", 1)[0].lstrip("+~") for o in overrides])
    check_config(command, cfg)


# What a damaged or missing file, or a bad value, raises: said in one line (it names the file and the fix), no
# traceback. Anything else is a bug and keeps its traceback; so does everything with AUDIOCERT_TRACEBACK=1.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, RuntimeError)
TRACEBACK_ENV = "AUDIOCERT_TRACEBACK"


def one_line(command: str, error: BaseException) -> str:
    """``audiocert <command>: <what is wrong>``: one line. A disk that refuses a write is said as the write."""
    if isinstance(error, KeyError):
        text = f"missing entry {error}"
    elif isinstance(error, OSError) and error.errno in UNWRITABLE and (path := error.filename or file_written(error)):
        text = f"cannot write {path}: {error.strerror} ({UNWRITABLE[error.errno]})"
    elif isinstance(error, OSError) and error.strerror and not error.filename:
        text = error.strerror  # OSError(errno, message), e.g. provenance.WriteError: no "[Errno 28]" before it
    else:
        text = str(error)
    return f"audiocert {command}: {' '.join(text.split())}"


def file_written(error: BaseException) -> str | None:
    """The file that was being written where ``error`` was raised (a write or flush names no file: Hydra's own
    writes of .hydra/*.yaml, say), from the innermost frame that holds an open file."""
    import io

    frames = []
    trace = error.__traceback__
    while trace is not None:
        frames.append(trace.tb_frame)
        trace = trace.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str):
                return value.name
    return None


@contextlib.contextmanager
def said_in_one_line(command: str, hydra_errors: bool = False) -> Iterator[None]:
    """Expected errors raised inside become SystemExit(one line). ``hydra_errors``: also Hydra's and OmegaConf's,
    which Hydra is made to raise rather than print with a traceback (HYDRA_FULL_ERROR=1 while inside)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    caught = EXPECTED_ERRORS + ((HydraException, OmegaConfBaseException) if hydra_errors else ())
    before = os.environ.get("HYDRA_FULL_ERROR")
    if hydra_errors:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except caught as error:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        raise SystemExit(one_line(command, error)) from None
    finally:
        if hydra_errors and before is None:
            del os.environ["HYDRA_FULL_ERROR"]
        elif hydra_errors:
            os.environ["HYDRA_FULL_ERROR"] = before


def task_corpus(cfg) -> None:
    from audiocert.prepare import ensure_dataset

    print(ensure_dataset(cfg.dataset))  # the schema refused a dataset without dataset.generate (nothing to write)


def task_train(cfg) -> None:
    from audiocert.prepare import ensure_dataset
    from audiocert.training import run_training

    ensure_dataset(cfg.dataset)
    metrics = run_training(cfg, cfg.output_dir)
    from audiocert.tracking_training import log_training_command

    log_training_command(cfg, metrics)
    position = metrics.get("position") or {}
    stopped = ""
    if metrics.get("stopped_by_budget"):
        where = (f"batch {position['step'] + 1} of epoch {position['epoch'] + 1}" if position.get("step")
                 else f"epoch {position.get('epoch', 0) + 1}")
        stopped = f", stopped by the time budget before {where}"
    print(f"clean test accuracy {metrics['clean_test_accuracy']:.4f} after {metrics['epochs_run']} epoch(s) "
          f"({metrics['train_seconds']:.0f} s{stopped}); checkpoint {metrics['checkpoint']}")


def planner(kind: str) -> Callable[[Any], dict]:
    """The Hydra task of a kind's command: plan one config of that kind (run later by ``finisher``)."""

    def plan(cfg) -> dict:
        from audiocert.launching.certified import adopt_certified
        from audiocert.launching.planning import plan_config

        # collected by FinalizeSweep: nothing runs before every config is planned
        return plan_config(adopt_certified(cfg), kind)

    return plan


# The kinds of work with a command of their own, each with its config (conf/<kind>.yaml); named here so that
# `audiocert --help` imports no torch.
KIND_COMMANDS = ("certify", "attack", "perceptibility")


def finisher(command: str) -> Callable[[Path], None]:
    """Run, submit or reduce what the Hydra jobs of ``command`` planned (``record``, written by
    launching.sweep.FinalizeSweep); exit 1 naming every config that was not completed."""

    def finish(record: Path) -> None:
        from audiocert.kinds import kind_named
        from audiocert.launching.sweep import finish_sweep, report_outcomes

        planned = json.loads(record.read_text()) if record.is_file() else []
        if not planned:
            raise SystemExit(f"audiocert {command}: no config was planned (see the errors above)")
        results = finish_sweep(planned)
        sweep_dirs = sorted({entry["sweep_dir"] for entry in planned})
        if not report_outcomes(results, sweep_dirs[0]):
            failed = [r["label"] for r in results if "summary" not in r and not r.get("submitted")]
            done = kind_named(command).done_word
            raise SystemExit(f"audiocert {command}: {len(failed)} of {len(results)} config(s) not {done}: "
                             f"{', '.join(failed)}; the shard logs named above say why; fix it and rerun the same "
                             "command to resume (finished shards are kept)")

    return finish


def one_line_errors(command: str, run: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    def wrapped(argv: list[str]) -> None:
        with said_in_one_line(command):
            run(argv)

    return wrapped


def cmd_reduce(argv: list[str]) -> None:
    from audiocert.kinds import kind_named
    from audiocert.launching.executors import finalize_config
    from audiocert.shards import IncompleteSweepError, config_dirs

    parser = argparse.ArgumentParser(prog="audiocert reduce", description=SUBCOMMANDS["reduce"])
    parser.add_argument("directory", type=Path, help="a config directory (holds plan.json) or a sweep directory")
    parser.add_argument("--wandb", choices=["offline", "online", "disabled"], default="disabled",
                        help="also log each reduced config to W&B (default: disabled)")
    args = parser.parse_args(argv)
    failed = 0
    for config_dir in config_dirs(args.directory):
        try:
            s = finalize_config(config_dir, {"mode": args.wandb}, sweep_name_of(config_dir))
            print(f"{config_dir}: {kind_named(s['kind']).outcome(s)}")
        except IncompleteSweepError as error:
            failed += 1
            print(error, file=sys.stderr)
    if failed:
        raise SystemExit(1)


def sweep_name_of(config_dir: Path) -> str:
    """The sweep (W&B group) a config directory belongs to: its parent, or its certification's parent."""
    from audiocert.shards import read_plan

    try:
        return str(read_plan(config_dir)["config"]["sweep"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return config_dir.parent.name


def cmd_status(argv: list[str]) -> None:
    from audiocert.status import print_status

    parser = argparse.ArgumentParser(prog="audiocert status", description=SUBCOMMANDS["status"])
    parser.add_argument("directory", type=Path, help="a sweep directory (runs/sweeps/NAME) or a config directory")
    parser.add_argument("--watch", type=float, default=0, metavar="SECONDS", help="refresh every SECONDS")
    parser.add_argument("--wandb", choices=["offline", "online", "disabled"], default="disabled",
                        help="also be the sweep's W&B monitor (on a SLURM login node): log each config's progress "
                             "and partial results as its shard files land, then its results (default: disabled)")
    parser.add_argument("--wandb-sync", action="store_true",
                        help="with --wandb offline: run `wandb sync` on the sweep's runs after each refresh")
    args = parser.parse_args(argv)
    if not math.isfinite(args.watch) or args.watch < 0:
        raise SystemExit(f"audiocert status: --watch={args.watch}: must be a finite number of seconds >= 0")
    from audiocert.monitor import SweepMonitor

    monitor = SweepMonitor.of_sweep(args.directory, {"mode": args.wandb}) if args.wandb != "disabled" else None
    print_status(args.directory, watch=args.watch, monitor=monitor, sync=args.wandb_sync)


def cmd_radius_table(argv: list[str]) -> None:
    from audiocert.settings import check_number
    from audiocert.tables import radius_table_markdown

    parser = OneLineParser(prog="audiocert radius-table", description=SUBCOMMANDS["radius-table"])
    parser.add_argument("--sigma", type=float, nargs="+",
                        default=[0.01, 0.05, 0.10, 0.25, 0.50, 1.00, 2.00, 3.00])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--alpha", type=float, default=0.001)
    args = parser.parse_args(argv)
    for sigma in args.sigma:  # sigma=inf would tabulate radius inf
        check_number(sigma, "--sigma", above=0)
    for n in args.n:
        check_number(n, "--n", minimum=1, integer=True)
    check_number(args.alpha, "--alpha", above=0, below=0.5)
    print(radius_table_markdown(args.sigma, args.n, args.alpha))


class OneLineParser(argparse.ArgumentParser):
    """argparse, refusing a bad argument in one line (``PROG: MESSAGE``, exit status 1) instead of its usage."""

    def error(self, message: str) -> Any:
        raise SystemExit(f"{self.prog}: {message}")


def cmd_report(argv: list[str]) -> None:
    from audiocert.report import write_report

    parser = argparse.ArgumentParser(prog="audiocert report", description=SUBCOMMANDS["report"])
    parser.add_argument("sweep_dir", type=Path, nargs="+", help="one or more sweep directories")
    parser.add_argument("--output", type=Path, default=None, help="default: SWEEP_DIR/report")
    parser.add_argument("--radii", type=float, nargs="+", default=None)
    parser.add_argument("--include-superseded", action="store_true",
                        help="also tabulate configs whose checkpoint file has changed since they were certified")
    parser.add_argument("--wandb", choices=["offline", "online", "disabled"], default="disabled",
                        help="also log the figures and the report to each sweep's W&B run (job_type sweep)")
    args = parser.parse_args(argv)
    report = write_report(args.sweep_dir, args.output, radii=args.radii, include_superseded=args.include_superseded)
    if args.wandb != "disabled":
        from audiocert.monitor import log_report

        log_report(args.sweep_dir, report, {"mode": args.wandb})
    print(report)


def task_stats(cfg) -> None:
    from audiocert.analysis import dataset_statistics

    print(dataset_statistics(cfg))


def task_examples(cfg) -> None:
    from audiocert.analysis import perturbed_examples

    print(perturbed_examples(cfg))


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "corpus": hydra_app("corpus", task_corpus),
    "train": hydra_app("train", task_train),
    **{kind: hydra_app(kind, planner(kind), finisher(kind)) for kind in KIND_COMMANDS},
    "reduce": one_line_errors("reduce", cmd_reduce),
    "status": one_line_errors("status", cmd_status),
    "report": one_line_errors("report", cmd_report),
    "stats": hydra_app("stats", task_stats),
    "examples": hydra_app("examples", task_examples),
    "radius-table": one_line_errors("radius-table", cmd_radius_table),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: audiocert SUBCOMMAND [overrides or options]", "",
             "Certified robustness of audio classifiers with Gaussian randomized smoothing.", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "Hydra subcommands take overrides (key=value, -m for sweeps, --cfg job to print the config);",
              "the others take --help. Your own configs: --config-dir DIR (or AUDIOCERT_CONF=DIR), e.g.",
              "DIR/launcher/mysite.yaml for launcher=mysite."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"audiocert: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    stop_on_unwritable_logs()  # a full disk under a log: one line naming it, not a traceback per record
    try:
        COMMANDS[name](rest)
    except LogWriteError as stop:
        raise SystemExit(f"audiocert {name}: {stop.code}") from None
    if failure := unwritable_log():  # a thread's log: it could not end the command itself
        raise SystemExit(f"audiocert {name}: {failure.code}")


if __name__ == "__main__":
    main()
