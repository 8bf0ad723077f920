"""Where the Hydra configs of a command come from: the packaged ones (audiocert.conf) and a user's --config-dir."""

from __future__ import annotations

import os
from pathlib import Path

# The configs: conf/ of the source tree, installed as this package (pyproject.toml), so a wheel carries them and an
# editable install reads conf/ itself. A user's own configs come in through Hydra's --config-dir DIR, searched after
# the packaged ones; AUDIOCERT_CONF=DIR is the default of --config-dir (a command-line --config-dir replaces it).
CONF_PACKAGE = "audiocert.conf"
CONF_ENV = "AUDIOCERT_CONF"


def packaged_conf_dir() -> Path | None:
    """The directory of the packaged configs (``<site-packages>/audiocert/conf``, or conf/ of the checkout under an
    editable install); None when this installation lacks them."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(CONF_PACKAGE)
    except ImportError:
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def locate_configs(config_name: str, argv: list[str]) -> tuple[list[str], Path | None]:
    """Check where the configs of ``audiocert <config_name>`` come from. Returns ``argv`` (plus ``--config-dir
    $AUDIOCERT_CONF`` when that is set and the command line has no ``--config-dir``) and the user config directory.

    Refused, saying what to do: packaged configs without <config_name>.yaml (a broken install), a user config
    directory that does not exist, and user files named like packaged ones (Hydra searches the user directory after
    the packaged configs, so it would silently use the packaged file).
    """
    packaged = packaged_conf_dir()
    if packaged is None or not (packaged / f"{config_name}.yaml").is_file():
        raise SystemExit(f"audiocert: the packaged configs ({CONF_PACKAGE}, {packaged or 'not importable'}) have no "
                         f"{config_name}.yaml: this installation of audiocert is incomplete; reinstall it "
                         "(pip install --force-reinstall audiocert, or pip install -e . in a checkout: make venv)")
    given, origin = None, "--config-dir"
    for flag, value in zip(argv, [*argv[1:], None], strict=False):  # as Hydra's argparse: the last one counts
        if flag.startswith(("--config-dir=", "-cd=")):
            given = flag.partition("=")[2]
        elif flag in ("--config-dir", "-cd") and value is not None:
            given = value
    if given is None and os.environ.get(CONF_ENV):
        given, origin = os.path.abspath(os.path.expanduser(os.environ[CONF_ENV])), CONF_ENV
        argv = ["--config-dir", given, *argv]
    if given is None:
        return argv, None
    user = Path(given).resolve()
    if not user.is_dir():
        raise SystemExit(f"audiocert: config directory {given} ({origin}) does not exist; it holds your own configs "
                         "laid out like the packaged ones, e.g. DIR/launcher/mysite.yaml for launcher=mysite")
    if user == packaged.resolve():
        return argv, user
    shadowed = sorted(str(path) for path in (f.relative_to(user) for f in user.rglob("*.yaml"))
                      if (packaged / path).is_file())
    if shadowed:
        raise SystemExit(f"audiocert: {len(shadowed)} config(s) in {given} ({origin}) have the name of a packaged "
                         f"config, which Hydra uses instead: {', '.join(shadowed[:5])}{' ...' * (len(shadowed) > 5)}. "
                         "Give each another name, e.g. launcher/mysite.yaml starting with `defaults: [slurm, _self_]`, "
                         "and select it with launcher=mysite")
    return argv, user


def missing_config_hint(argv: list[str], user: Path | None) -> str | None:
    """After Hydra failed: how to add the configs that ``group=option`` overrides name but no config directory holds
    (Hydra's own message lists the options there are, not how to add one)."""
    import re

    packaged = packaged_conf_dir()
    missing = []
    for arg in argv:
        match = re.fullmatch(r"\+{0,2}([A-Za-z_]\w*(?:/\w+)*)=([\w.-]+(?:,[\w.-]+)*)", arg)
        if packaged is None or match is None or not (packaged / match[1]).is_dir():
            continue
        missing += [f"{match[1]}/{option}" for option in match[2].split(",") if option != "null"
                    and not any((d / match[1] / f"{option}.yaml").is_file() for d in (packaged, user) if d)]
    if not missing:
        return None
    return (f"audiocert: no config {', '.join(missing)} (packaged configs: {packaged}"
            f"{f'; yours: {user}' if user else ''}). To add one, write DIR/{missing[0]}.yaml (to extend a packaged "
            f"option, start it with `defaults: [OPTION, _self_]`) and pass --config-dir DIR, or set {CONF_ENV}=DIR")
