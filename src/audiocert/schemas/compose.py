"""A command's configs composed as Hydra will compose them, before Hydra runs them.

Hydra creates a job's output directory and writes its .hydra/ files before the job starts, and a job may generate
a synthetic corpus before it reads a bad value: so each config is composed here first, with Hydra's own compose
API, and checked against its schema; a refused setting ends the command in one line with nothing written. A -m
sweep is expanded as Hydra's basic sweeper expands it (the experiment's hydra.sweeper.params, then the command
line), so a bad value in any of its configs stops all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Hydra's flags that print something instead of running jobs, or compose another way: nothing to check first.
NOT_RUNS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--version", "--shell-completion",
            "-sc", "--experimental-rerun", "--config-path", "-cp", "--resolve")


class CompositionError(ValueError):
    """Hydra could not compose a config (an unknown key or option, a malformed override); one line."""


def runs_jobs(argv: Sequence[str]) -> bool:
    """Whether ``argv`` runs jobs (rather than printing a config, help or information)."""
    return not any(arg.split("=", 1)[0] in NOT_RUNS for arg in argv)


def one_line(error: Exception) -> str:
    """Hydra's message in one line: its first paragraph, with the options it lists (not its search path)."""
    lines = [line.strip() for line in str(error).splitlines()]
    if "Config search path:" in lines:
        lines = lines[:lines.index("Config search path:")]
    return " ".join(line for line in lines if line)


def composed_jobs(config_module: str, config_name: str, argv: Sequence[str], user_dir: Path | None
                  ) -> Iterator[tuple[list[str], DictConfig]]:
    """Each job's overrides and config (without its hydra node), composed as `hydra.main` will compose them; none
    when ``argv`` runs no jobs. CompositionError when Hydra cannot compose one."""
    if not runs_jobs(argv):
        return
    args = get_args_parser().parse_args(list(argv))
    name = args.config_name or config_name
    search = [f"hydra.searchpath=[file://{user_dir}]"] if user_dir is not None else []
    if GlobalHydra.instance().is_initialized():  # inside another Hydra app (a test): it composes for itself
        return
    try:
        with initialize_config_module(config_module=config_module, version_base="1.3", job_name=config_name):
            for overrides in job_overrides(name, list(args.overrides), bool(args.multirun), search):
                yield overrides, compose(name, [*overrides, *search])
    except (HydraException, OmegaConfBaseException) as error:
        raise CompositionError(one_line(error)) from None


def job_overrides(config_name: str, overrides: list[str], multirun: bool, search: list[str]) -> list[list[str]]:
    """The overrides of each job: the command line's (one job), or for a multirun the product of the sweeper's
    params and the command line, as Hydra's BasicSweeper forms it."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = any(o.is_sweep_override() for o in parsed)
    if not multirun and not sweeps:
        return [overrides]
    base = compose(config_name, [o.input_line for o in parsed if not o.is_sweep_override()] + search,
                   return_hydra_config=True)
    if not multirun and OmegaConf.select(base, "hydra.mode") != RunMode.MULTIRUN:
        return [overrides]  # a sweep without -m: composing it says what Hydra says ("Ambiguous value ...")
    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + overrides
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)
    return [job for batch in batches for job in batch]
