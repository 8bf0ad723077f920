"""The `audiocert` command: subcommands that run jobs are Hydra apps taking overrides; the rest use argparse.

    audiocert train dataset=synthetic10 model=rescnn_small
    audiocert certify -m representation=mfbe,magspec smoothing.sigma=0.05,0.25
    audiocert status runs/sweeps/NAME
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

CONF_DIR = Path(os.environ.get("AUDIOCERT_CONF", Path(__file__).resolve().parents[2] / "conf"))

SUBCOMMANDS: dict[str, str] = {
    "corpus": "generate the synthetic speaker corpus of a dataset config (LibriSpeech layout, FLAC)",
    "train": "train a base classifier (Hydra overrides: dataset=, model=, train.augment.stage=...)",
    "certify": "plan, shard and run Monte-Carlo certification; sweep with -m; reduce when done",
    "reduce": "reduce a config directory (or every config of a sweep directory) by hand",
    "status": "shards done / total, samples/s, ETA and failed shards of a sweep directory",
    "report": "Markdown report with tables and figures from a sweep directory",
    "stats": "per-representation statistics of a dataset (range, percentiles, mean, SD)",
    "examples": "Gaussian-perturbed examples at each stage and sigma (WAV + PNG)",
    "radius-table": "maximum certifiable radius for a grid of sigma x n at a given alpha",
}


def hydra_app(config_name: str, task: Callable, after: Callable[[Path], None] | None = None
              ) -> Callable[[list[str]], None]:
    """Run ``task(cfg)`` as a Hydra app on conf/<config_name>.yaml with the given overrides, then ``after(record)``.

    Hydra exits non-zero itself when a job fails; ``after`` runs outside Hydra, so its errors fail the command.
    ``record``: the file where the app's ``finalize`` callback (launch.FinalizeSweep) wrote the jobs' results.
    """

    def run(argv: list[str]) -> None:
        import hydra

        if not (CONF_DIR / f"{config_name}.yaml").is_file():
            raise SystemExit(f"audiocert: config directory {CONF_DIR} has no {config_name}.yaml "
                             "(set AUDIOCERT_CONF to the project's conf/ directory)")
        main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)
        informational = any(a in ("--cfg", "-c", "--help", "-h", "--info", "-i") for a in argv)
        with tempfile.TemporaryDirectory(prefix="audiocert-") as scratch:
            record = Path(scratch) / "planned.json"
            extra = [f"hydra.callbacks.finalize.record={record}"] if after is not None and not informational else []
            sys.argv = [f"audiocert-{config_name}", *argv, *extra]
            main()
            if extra:
                after(record)

    return run


def task_corpus(cfg) -> None:
    from audiocert.prepare import ensure_dataset

    if not cfg.dataset.get("generate"):
        raise SystemExit(f"dataset={cfg.dataset.name} is not synthetic (no dataset.generate): nothing to generate")
    print(ensure_dataset(cfg.dataset))


def task_train(cfg) -> None:
    from audiocert.prepare import ensure_dataset
    from audiocert.train import run_training

    ensure_dataset(cfg.dataset)
    metrics = run_training(cfg, cfg.output_dir)
    print(f"clean test accuracy {metrics['clean_test_accuracy']:.4f} after {metrics['epochs_run']} epoch(s) "
          f"({metrics['train_seconds']:.0f} s); checkpoint {metrics['checkpoint']}")


def task_certify(cfg) -> dict:
    from audiocert.launch import plan_config

    return plan_config(cfg)  # collected by launch.FinalizeSweep: nothing runs before every config is planned


def finish_certify(record: Path) -> None:
    """Run, submit or reduce what the Hydra jobs planned (``record``, written by launch.FinalizeSweep); exit 1
    naming every config that was not certified."""
    from audiocert.launch import finish_sweep, report_outcomes

    planned = json.loads(record.read_text()) if record.is_file() else []
    if not planned:
        raise SystemExit("audiocert certify: no config was planned (see the errors above)")
    results = finish_sweep(planned)
    sweep_dirs = sorted({entry["sweep_dir"] for entry in planned})
    if not report_outcomes(results, sweep_dirs[0]):
        failed = [r["label"] for r in results if "summary" not in r and not r.get("submitted")]
        raise SystemExit(f"audiocert certify: {len(failed)} of {len(results)} config(s) not certified: "
                         f"{', '.join(failed)}; the shard logs named above say why; fix it and rerun the same "
                         "command to resume (finished shards are kept)")


def cmd_reduce(argv: list[str]) -> None:
    from audiocert.launch import finalize_config
    from audiocert.shards import IncompleteSweepError
    from audiocert.status import config_dirs

    parser = argparse.ArgumentParser(prog="audiocert reduce", description=SUBCOMMANDS["reduce"])
    parser.add_argument("directory", type=Path, help="a config directory (holds plan.json) or a sweep directory")
    parser.add_argument("--wandb", choices=["offline", "online", "disabled"], default="disabled",
                        help="also log each reduced config to W&B (default: disabled)")
    args = parser.parse_args(argv)
    failed = 0
    for config_dir in config_dirs(args.directory):
        try:
            s = finalize_config(config_dir, {"mode": args.wandb}, config_dir.parent.name)
            print(f"{config_dir}: {s['num_points']} points, smoothed accuracy {s['smoothed_accuracy']:.3f}")
        except IncompleteSweepError as error:
            failed += 1
            print(error, file=sys.stderr)
    if failed:
        raise SystemExit(1)


def cmd_status(argv: list[str]) -> None:
    from audiocert.status import print_status

    parser = argparse.ArgumentParser(prog="audiocert status", description=SUBCOMMANDS["status"])
    parser.add_argument("directory", type=Path, help="a sweep directory (runs/sweeps/NAME) or a config directory")
    parser.add_argument("--watch", type=float, default=0, metavar="SECONDS", help="refresh every SECONDS")
    args = parser.parse_args(argv)
    print_status(args.directory, watch=args.watch)


def cmd_radius_table(argv: list[str]) -> None:
    from audiocert.tables import radius_table_markdown

    parser = argparse.ArgumentParser(prog="audiocert radius-table", description=SUBCOMMANDS["radius-table"])
    parser.add_argument("--sigma", type=float, nargs="+",
                        default=[0.01, 0.05, 0.10, 0.25, 0.50, 1.00, 2.00, 3.00])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--alpha", type=float, default=0.001)
    args = parser.parse_args(argv)
    print(radius_table_markdown(args.sigma, args.n, args.alpha))


def cmd_report(argv: list[str]) -> None:
    from audiocert.report import write_report

    parser = argparse.ArgumentParser(prog="audiocert report", description=SUBCOMMANDS["report"])
    parser.add_argument("sweep_dir", type=Path, nargs="+", help="one or more sweep directories")
    parser.add_argument("--output", type=Path, default=None, help="default: SWEEP_DIR/report")
    parser.add_argument("--radii", type=float, nargs="+", default=None)
    parser.add_argument("--include-superseded", action="store_true",
                        help="also tabulate configs whose checkpoint file has changed since they were certified")
    args = parser.parse_args(argv)
    print(write_report(args.sweep_dir, args.output, radii=args.radii, include_superseded=args.include_superseded))


def task_stats(cfg) -> None:
    from audiocert.analysis import dataset_statistics

    print(dataset_statistics(cfg))


def task_examples(cfg) -> None:
    from audiocert.analysis import perturbed_examples

    print(perturbed_examples(cfg))


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "corpus": hydra_app("corpus", task_corpus),
    "train": hydra_app("train", task_train),
    "certify": hydra_app("certify", task_certify, finish_certify),
    "reduce": cmd_reduce,
    "status": cmd_status,
    "report": cmd_report,
    "stats": hydra_app("stats", task_stats),
    "examples": hydra_app("examples", task_examples),
    "radius-table": cmd_radius_table,
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: audiocert SUBCOMMAND [overrides or options]", "",
             "Certified robustness of audio classifiers with Gaussian randomized smoothing.", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "Hydra subcommands take overrides (key=value, -m for sweeps, --cfg job to print the config);",
              "the others take --help."]
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
    COMMANDS[name](rest)


if __name__ == "__main__":
    main()
