"""The configs ship inside the package: a wheel installed into a fresh venv runs every Hydra subcommand from any
directory, a user's configs come in through --config-dir (or AUDIOCERT_CONF), and an editable install reads conf/.

The slow test builds a real wheel of the working tree and installs it with pip into a fresh venv. The heavy
dependencies (torch, hydra, ...) are not reinstalled: a .pth file in the new venv points at the site-packages of the
interpreter running the tests (the project's .venv). Python does not process .pth files inside a directory added
that way, so the .venv's editable audiocert stays invisible there. torch requires setuptools >= 77, so that .venv
always has a build backend that makes wheels without the `wheel` package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from audiocert import configs

REPO = Path(__file__).resolve().parents[1]
SITE_LAUNCHER = "defaults:\n  - slurm\n  - _self_\npartition: mysite-gpu\ngpus_per_task: 1\n"
SITE_EXPERIMENT = ("# @package _global_\ndefaults:\n  - override /representation: magspec\n"
                   "smoothing:\n  sigma: 0.125\nsweep:\n  name: mysite-sweep\n")


def write_site_configs(root: Path) -> Path:
    """A user's config directory: a launcher extending the packaged slurm one, and an experiment."""
    (root / "launcher").mkdir(parents=True)
    (root / "experiment").mkdir()
    (root / "launcher" / "mysite.yaml").write_text(SITE_LAUNCHER)
    (root / "experiment" / "x.yaml").write_text(SITE_EXPERIMENT)
    return root


# ----------------------------------------------------------------------------------------------------------------
# Fast: where the configs come from, and what the errors say
# ----------------------------------------------------------------------------------------------------------------
def test_the_packaged_configs_are_conf_of_this_checkout():
    """Under the Makefile's editable install the package audiocert.conf is conf/ itself: edits need no reinstall."""
    conf = configs.packaged_conf_dir()
    assert conf is not None and conf.resolve() == REPO / "conf", f"audiocert.conf is {conf}: run `make venv`"


def test_a_user_config_dir_is_checked_and_audiocert_conf_is_its_default(tmp_path, monkeypatch):
    site = write_site_configs(tmp_path / "site")
    monkeypatch.delenv(configs.CONF_ENV, raising=False)
    assert configs.locate_configs("certify", ["-c", "job"]) == (["-c", "job"], None)  # -c is --cfg, not -cd
    assert configs.locate_configs("certify", ["--config-dir", str(site)])[1] == site.resolve()
    assert configs.locate_configs("certify", [f"--config-dir={site}", "-m"])[1] == site.resolve()
    monkeypatch.setenv(configs.CONF_ENV, str(site))
    assert configs.locate_configs("train", ["a=b"]) == (["--config-dir", str(site.resolve()), "a=b"], site.resolve())
    other = write_site_configs(tmp_path / "other")
    assert configs.locate_configs("train", ["-cd", str(other)]) == (["-cd", str(other)], other.resolve())
    with pytest.raises(SystemExit, match=r"nowhere \(--config-dir\) does not exist.*DIR/launcher/mysite.yaml"):
        configs.locate_configs("certify", ["--config-dir", str(tmp_path / "nowhere")])
    monkeypatch.setenv(configs.CONF_ENV, str(tmp_path / "gone"))
    with pytest.raises(SystemExit, match=r"gone \(AUDIOCERT_CONF\) does not exist"):
        configs.locate_configs("certify", [])


def test_user_configs_named_like_packaged_ones_are_refused(tmp_path, monkeypatch):
    """Hydra searches --config-dir after the packaged configs: a same-named file would be silently ignored."""
    monkeypatch.delenv(configs.CONF_ENV, raising=False)
    site = write_site_configs(tmp_path / "site")
    (site / "launcher" / "slurm.yaml").write_text("partition: ignored\n")
    (site / "certify.yaml").write_text("seed: 1\n")
    with pytest.raises(SystemExit, match=r"2 config\(s\) in .* certify.yaml, launcher/slurm.yaml.*another name"):
        configs.locate_configs("certify", ["--config-dir", str(site)])


def test_missing_configs_say_how_to_add_or_reinstall_them(tmp_path, monkeypatch):
    monkeypatch.delenv(configs.CONF_ENV, raising=False)
    site = write_site_configs(tmp_path / "site")
    hint = configs.missing_config_hint(["-m", "launcher=slurm,nosuch", "smoothing.sigma=0.5"], None)
    assert "no config launcher/nosuch " in hint and "DIR/launcher/nosuch.yaml" in hint and "--config-dir DIR" in hint
    assert configs.missing_config_hint(["launcher=mysite", "+experiment=x"], site) is None
    assert configs.missing_config_hint(["launcher=mysite", "dataset.root=/x", "experiment=null"], None) is not None
    assert configs.missing_config_hint(["dataset.root=/x", "experiment=null", "hydra/launcher=basic"], None) is None
    with pytest.raises(SystemExit, match=r"no no_such_app.yaml: .*incomplete; reinstall"):
        configs.locate_configs("no_such_app", [])
    monkeypatch.setattr(configs, "CONF_PACKAGE", "audiocert.no_such_conf")
    with pytest.raises(SystemExit, match=r"not importable\) have no certify.yaml.*pip install"):
        configs.locate_configs("certify", [])


# ----------------------------------------------------------------------------------------------------------------
# Slow: a real wheel in a fresh venv, and an editable install of a copy of the tree
# ----------------------------------------------------------------------------------------------------------------
def run(args: list, cwd: Path, env: dict, timeout: float = 120) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({result.returncode}) in {cwd}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result.stdout


def fresh_venv(path: Path, env: dict) -> Path:
    """A venv that sees the site-packages of the test interpreter (torch, hydra, setuptools, ...) after its own. No
    pip or setuptools of its own (ensurepip's setuptools 65 cannot build a wheel): pip_into() installs into it."""
    run([sys.executable, "-m", "venv", "--without-pip", path], path.parent, env)
    python = path / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], path, env).strip())
    ours = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    (purelib / "_project_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return python


def pip_into(python: Path, args: list, env: dict) -> None:
    """``pip install --no-deps ARGS`` into the venv of ``python``, by the test interpreter's pip (its --python)."""
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--ignore-installed",
         "-q", *args], python.parent, env, timeout=300)


def copy_tree(target: Path) -> Path:
    """What a build reads of the working tree, without build leftovers (a build writes build/ and *.egg-info)."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    for name in ("src", "conf"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return target


def clean_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", configs.CONF_ENV, "PYTHONSTARTUP")}
    return {**env, "AUDIOCERT_RUNS_DIR": str(tmp_path / "runs"), "HYDRA_FULL_ERROR": "1",
            "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


IN_THE_NEW_VENV = textwrap.dedent("""
    import contextlib, io, json, os, audiocert, audiocert.cli as cli, audiocert.configs as configs

    def run(argv, **env):
        os.environ.update(env)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                cli.main(argv)
            code = 0
        except SystemExit as stop:
            code = stop.code
        return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

    hydra_apps = [name for name, command in cli.COMMANDS.items() if command.__qualname__.startswith("hydra_app.")]
    print(json.dumps({
        "files": [audiocert.__file__, str(configs.packaged_conf_dir())],
        "apps": {name: run([name, "--cfg", "job"]) for name in hydra_apps},
        "env": run(["certify", "--cfg", "job", "launcher=mysite"], AUDIOCERT_CONF="site"),
        "missing": run(["certify", "--cfg", "job", "launcher=nosuch"], AUDIOCERT_CONF="", HYDRA_FULL_ERROR="0"),
    }))
""")


def run_together(commands: list[list], cwd: Path, env: dict) -> list[str]:
    """``run`` the commands two at a time (each mostly imports torch: ~0.7 GB and a core); their outputs."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda args: run(args, cwd, env), commands))


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_runs_the_hydra_subcommands_from_any_directory(tmp_path):
    env = clean_env(tmp_path)
    tree = copy_tree(tmp_path / "tree")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", tmp_path / "dist", tree], tmp_path, env, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("audiocert-*.whl")

    # the wheel holds every config and every module of the tree
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"audiocert/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    modules = {f"audiocert/{p.relative_to(REPO / 'src/audiocert').as_posix()}"
               for p in (REPO / "src/audiocert").rglob("*.py")}
    assert len(configs) > 10 and not configs - names, f"configs missing from the wheel: {sorted(configs - names)}"
    assert not modules - names, f"modules missing from the wheel (list new subpackages in pyproject.toml): " \
                                f"{sorted(modules - names)}"

    python = fresh_venv(tmp_path / "venv", env)
    pip_into(python, [wheel], env)
    elsewhere = tmp_path / "elsewhere"
    write_site_configs(elsewhere / "site")
    audiocert = tmp_path / "venv" / "bin" / "audiocert"
    default, librispeech, site, inside = run_together([
        [audiocert, "certify", "--cfg", "job"],
        [audiocert, "train", "--cfg", "job", "dataset=librispeech921"],
        [audiocert, "certify", "--cfg", "job", "--config-dir", "site", "launcher=mysite", "experiment=x"],
        [python, "-c", IN_THE_NEW_VENV],
    ], elsewhere, env)

    assert "algorithm: cohen" in default and "name: synthetic10" in default
    assert "name: librispeech921" in librispeech
    for line in ("partition: mysite-gpu", "max_array_size: 1001", "stage: magspec", "sigma: 0.125",
                 "name: mysite-sweep"):
        assert line in site, line
    inside = json.loads(inside)
    venv = (tmp_path / "venv").resolve()
    assert all(Path(p).resolve().is_relative_to(venv) for p in inside["files"]), inside["files"]
    assert len(inside["apps"]) >= 5, inside["apps"]  # corpus, train, certify, stats, examples and any added since
    for name, result in inside["apps"].items():
        assert result["code"] == 0 and "paths:" in result["out"], (name, result)
    assert inside["env"]["code"] == 0 and "partition: mysite-gpu" in inside["env"]["out"], inside["env"]
    missing = inside["missing"]
    assert missing["code"] == 1 and "write DIR/launcher/nosuch.yaml" in missing["err"], missing


@pytest.mark.slow
def test_an_editable_install_reads_conf_without_reinstalling(tmp_path):
    """What the Makefile does (pip install -e): a new or edited file under conf/ is used at once."""
    env = clean_env(tmp_path)
    tree = copy_tree(tmp_path / "tree")
    python = fresh_venv(tmp_path / "venv", env)
    pip_into(python, ["--no-build-isolation", "-e", tree], env)
    (tree / "conf" / "launcher" / "newsite.yaml").write_text("defaults:\n  - local\n  - _self_\nworkers: 7\n")
    certify = tree / "conf" / "certify.yaml"
    assert "  algorithm: cohen\n" in certify.read_text()
    certify.write_text(certify.read_text().replace("  algorithm: cohen\n", "  algorithm: sequential\n"))
    composed = run([tmp_path / "venv" / "bin" / "audiocert", "certify", "--cfg", "job", "launcher=newsite"],
                   tmp_path, env)
    assert "workers: 7" in composed and "algorithm: sequential" in composed
