"""The main job (make demo's sweep) on a tiny preset: sweep, reduce, W&B offline runs, report."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from conftest import certify_overrides, run_cli
from wandb_reader import read_run

from audiocert.kinds.certify import read_certificates
from audiocert.shards import PLAN_FILE
from audiocert.statistics import certified_accuracy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(trained) -> dict:
    runs = trained["runs"]
    overrides = [o for o in certify_overrides(trained, "demo-tiny", "experiment=demo") if not o.startswith("logger")]
    result = run_cli(["certify", "-m", *overrides, "logger.mode=offline", "sweep.name=demo-tiny"], runs)
    sweep = runs / "sweeps" / "demo-tiny"
    report = run_cli(["report", str(sweep)], runs)
    return {"sweep": sweep, "stdout": result.stdout, "report_path": report.stdout.strip().splitlines()[-1],
            "dirs": sorted(p.parent for p in sweep.glob(f"*/{PLAN_FILE}"))}


def test_sweep_covers_every_representation_and_sigma(demo):
    labels = sorted(json.loads((d / PLAN_FILE).read_text())["label"] for d in demo["dirs"])
    assert labels == sorted(f"tiny4-{stage}-sigma{sigma:g}" for stage in ("waveform", "magspec", "mfbe")
                            for sigma in (0.05, 0.25, 0.5))
    for d in demo["dirs"]:
        assert (d / "certificates.tsv").is_file() and (d / "curve.csv").is_file()


def test_report_tables_agree_with_certificate_files(demo):
    text = open(demo["report_path"]).read()
    tables = {m[1]: [[c.strip() for c in line.strip().strip("|").split("|")] for line in m[2].strip().splitlines()]
              for m in re.finditer(r"^### tiny4, [^\n]* \((\w+)\)\n\n((?:\|[^\n]*\n)+)", text, flags=re.M)}
    assert set(tables) == {"waveform", "magspec", "mfbe"}
    by_key = {}
    for d in demo["dirs"]:
        summary = json.loads((d / "summary.json").read_text())
        by_key[(summary["stage"], summary["sigma"])] = d
    checked = 0
    for stage, rows in tables.items():
        radii = [float(h.split("=")[1]) for h in rows[0][1:] if h.startswith("r =")]
        for row in rows[2:]:
            sigma = float(re.search(r"([\d.]+)", row[0])[1])
            certs = read_certificates(by_key[(stage, sigma)] / "certificates.tsv")
            radius = np.array([c["radius"] for c in certs])
            correct = np.array([c["correct"] for c in certs])
            for j, r in enumerate(radii):
                assert float(row[1 + j].replace("*", "")) == pytest.approx(
                    certified_accuracy(radius, correct, r), abs=5e-4)
                checked += 1
    assert checked == 9 * 8


def test_wandb_offline_runs_hold_the_curves(demo):
    runs = sorted((demo["sweep"] / "wandb").glob("offline-run-*"))
    sweep_run = json.loads((demo["sweep"] / "wandb_run.json").read_text())["run_id"]
    assert len(runs) == 9 + 1 and len([r for r in runs if r.name.endswith(f"-{sweep_run}")]) == 1  # + the sweep's
    for d in demo["dirs"]:
        info = json.loads((d / "wandb_run.json").read_text())
        assert info["mode"] == "offline" and info["sync"].startswith("wandb sync ")
        run_dir = d.parent / "wandb" / info["run_dir"].split("/wandb/")[-1]
        [events] = list(run_dir.glob("*.wandb"))  # the run's event log (no public reader: look for the keys)
        log = events.read_bytes()
        shards = len(list((d / "shards").glob("*.json")))
        assert log.count(b"progress/shards_done") >= shards  # a progress record per shard, logged as they landed
        for key in (b"certified_accuracy/r=0.25", b"smoothed_accuracy", b"max_certifiable_radius"):
            assert key in log
        # The example as audio: clean, and with a draw of the smoothing noise where the stage has a waveform.
        run = read_run(events)
        audio = {k for row in run.history for k, v in row.items() if k.startswith("example/") and
                 v["_type"] == "audio-file"}
        stage = json.loads((d / "summary.json").read_text())["stage"]
        assert audio == ({"example/clean"} if stage == "mfbe" else {"example/clean", "example/perturbed"})
        [table_file] = list((run_dir / "files" / "media" / "table").glob("certified_accuracy_curve*.table.json"))
        table = json.loads(table_file.read_text())
        assert table["columns"] == ["radius", "certified_accuracy"]
        with open(d / "curve.csv") as handle:
            curve = [[float(r["radius"]), float(r["certified_accuracy"])] for r in csv.DictReader(handle)]
        np.testing.assert_allclose(np.array(table["data"], dtype=float), np.array(curve), rtol=1e-12)
