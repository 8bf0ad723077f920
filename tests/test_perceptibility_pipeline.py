"""`audiocert perceptibility` end to end through the real CLI (the same plan / shard / reduce / resume machinery as
certification, on the same test points and certificates), the reducer's coverage against a computation by hand,
strict validation of its shard records, bad settings named; and fast tests of the module's pure parts.

The psychoacoustic model and the imperceptible attack are tested on closed forms in test_psychoacoustics and
test_imperceptible."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import certify_overrides, run_cli

from audiocert.provenance import SEAL_KEY, atomic_write_json, seal
from audiocert.shards import PLAN_FILE, known_shards, read_plan, validate_shard_file

QUICK = ("perceptibility.draws=2", "perceptibility.budget_iterations=16", "perceptibility.radii=[0.01,0.25,1.5]",
         "perceptibility.attack.steps=4", "perceptibility.attack.samples=4", "perceptibility.attack.n=30",
         "perceptibility.attack.batch_size=16", "perceptibility.shard.examples=3", "launcher.threads=1")


def perceptibility_dirs(runs: Path, sweep: str) -> dict[str, Path]:
    """stage -> perceptibility config directory of a sweep."""
    found = {}
    for plan in (runs / "sweeps" / sweep).glob(f"*/perceptibility-*/{PLAN_FILE}"):
        found[json.loads(plan.read_text())["quantities"]["stage"]] = plan.parent
    return found


def rows(path: Path, delimiter: str = "\t") -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


@pytest.fixture(scope="module")
def perceived(trained) -> dict:
    """magspec and mfbe certified, then measured (8 points each, 3 shards of <= 3 points)."""
    runs = trained["runs"]
    run_cli(["certify", "-m", *certify_overrides(trained, "perc", "launcher=debug", "representation=magspec,mfbe")],
            runs)
    result = run_cli(["perceptibility", "-m", *certify_overrides(trained, "perc", "launcher=local", *QUICK,
                                                                 "representation=magspec,mfbe")], runs)
    return {"runs": runs, "trained": trained, "dirs": perceptibility_dirs(runs, "perc"), "stdout": result.stdout}


@pytest.mark.slow
def test_perceptibility_runs_on_the_certified_points_and_reports(perceived):
    dirs, runs = perceived["dirs"], perceived["runs"]
    assert set(dirs) == {"magspec", "mfbe"}
    assert "perceptibility tiny4-magspec-sigma0.25-perceptibility: 8 points measured" in perceived["stdout"]
    for stage, directory in dirs.items():
        plan, parent = (json.loads(p.read_text()) for p in (directory / PLAN_FILE, directory.parent / PLAN_FILE))
        assert plan["kind"] == "perceptibility" and plan["parent_hash"] == parent["config_hash"]
        assert plan["inputs"] == parent["inputs"]  # the same test points, the same audio fingerprints
        certificates = {int(r["idx"]): r for r in rows(directory.parent / "certificates.tsv")}
        planned = plan["quantities"]["perceptibility"]["certificates"]
        assert planned["radius"] == [float(certificates[i]["radius"]) for i in plan["examples"]]
        for name in ("points.tsv", "audibility.csv", "summary.json", "provenance.json", "wandb.json", "psd.png"):
            assert (directory / name).is_file(), (stage, name)
        summary = json.loads((directory / "summary.json").read_text())
        assert summary["kind"] == "perceptibility" and summary["points"] == 8 and summary["headline"]
        audibility = rows(directory / "audibility.csv", ",")
        assert {(r["which"], r["direction"]) for r in audibility} >= {("grid", "random"), ("grid", "shaped")}
        # A perturbation's excess over theta grows by 20 log10 of its norm's growth: same directions at all radii.
        random = [r for r in audibility if r["which"] == "grid" and r["direction"] == "random"]
        assert float(random[-1]["excess_db_max"]) - float(random[0]["excess_db_max"]) == pytest.approx(
            20 * math.log10(1.5 / 0.01), abs=1e-6)
        wandb = json.loads((directory / "wandb.json").read_text())
        assert wandb["job_type"] == "perceptibility" and "perceptibility/audibility" in wandb["tables"]
    mfbe = json.loads((dirs["mfbe"] / "summary.json").read_text())
    assert mfbe["coverage"]["fraction_covers_at_most"] is None and "no waveform counterpart" in mfbe["relation"]
    assert mfbe["audibility_at_certified"] == []  # an mfbe radius has no waveform to listen to
    magspec = json.loads((dirs["magspec"] / "summary.json").read_text())
    assert magspec["budgets"]["round_trip"]["median"] < 1e-12  # the clean magspec resynthesises the clean waveform
    run_cli(["report", str(runs / "sweeps" / "perc")], runs)
    report_dir = runs / "sweeps" / "perc" / "report"
    report = (report_dir / "report.md").read_text()
    assert "## Perceptibility: certified radii against what a listener hears" in report
    assert "Coverage: none claimed" in report and "R_w = R / L with the proven bound" in report
    assert (report_dir / "perceptibility_audible_magspec.png").is_file()
    assert len(list(report_dir.glob("perceptibility_psd_*.png"))) == 2
    if magspec["example"]:  # the quietest successful attack's audio is copied beside the report
        assert list(report_dir.glob("perceptibility_attack_*magspec*.wav"))


@pytest.mark.slow
def test_coverage_and_ratios_are_what_the_certificates_and_budgets_say(perceived):
    """By hand from certificates.tsv, the proven Lipschitz bound and the budgets: R_w = R / L; a point is covered
    for sure when certified (correct, radius > 0) and R_w >= U, at most when R_w >= B; the ratio R_w / B over the
    certified points; wrong-class certificates counted apart."""
    from audiocert import psychoacoustics as pa
    from audiocert.data import build_datasets
    from audiocert.kinds.perceptibility import point_seed
    from audiocert.lipschitz import waveform_lipschitz_bound

    directory = perceived["dirs"]["magspec"]
    plan = read_plan(directory)
    config = plan["config"]
    bound = float(waveform_lipschitz_bound(config["frontend"], int(config["dataset"]["crop_samples"])).bound)
    certificates = {int(r["idx"]): r for r in rows(directory.parent / "certificates.tsv")}
    points = rows(directory / "points.tsv")
    predict = np.array([int(certificates[int(p["idx"])]["predict"]) for p in points])
    radius = np.array([float(certificates[int(p["idx"])]["radius"]) for p in points])
    budget = np.array([float(p["budget"]) for p in points])
    upper = np.array([float(p["upper_bound"]) for p in points])
    label = np.array([int(certificates[int(p["idx"])]["label"]) for p in points])
    certified = (predict == label) & (radius > 0)  # "certified": a correct prediction with radius > 0
    radius_w = radius / bound
    summary = json.loads((directory / "summary.json").read_text())
    coverage = summary["coverage"]
    assert summary["lipschitz_bound"] == pytest.approx(bound, rel=1e-12)
    assert coverage["certified"] == certified.sum() and coverage["points"] == len(points) == 8
    wrong = (predict != -1) & (predict != label) & (radius > 0)
    assert summary["wrong_class_certificates"] == wrong.sum() and summary["certified_points"] == certified.sum()
    assert coverage["fraction_covers_proven"] == np.mean(certified & (radius_w >= upper))
    assert coverage["fraction_covers_at_most"] == np.mean(certified & (radius_w >= budget))
    ratio = radius_w[certified] / budget[certified]
    for key, q in (("q25", 0.25), ("median", 0.5), ("q75", 0.75)):
        assert coverage["ratio"][key] == pytest.approx(np.quantile(ratio, q), rel=1e-12)
    for p, rw in zip(points, radius_w, strict=True):
        assert float(p["waveform_radius"]) == pytest.approx(rw, rel=1e-12)
    # The budget of a point is the psychoacoustic model's, with the seed of (seed, example).
    index = int(points[0]["idx"])
    waveform, _ = build_datasets(config["dataset"]).test[index]
    expected = pa.imperceptible_budget(waveform.double(), 0.0, seed=point_seed(0, index, "budget"), iterations=16)
    assert float(points[0]["budget"]) == pytest.approx(float(expected.budget), rel=1e-9)


DAMAGE = [
    ("excess not a number", lambda p: p["grid"]["random"]["excess_db"][0].__setitem__(0, None), "excess_db"),
    ("PESQ out of range", lambda p: p["grid"]["shaped"]["pesq"].__setitem__(0, 7.0), "PESQ"),
    ("budget above its bound", lambda p: p["budget"].update(budget=p["budget"]["upper_bound"] * 2), "budget"),
    ("fraction above 1", lambda p: p["grid"]["random"]["fraction_above"][1].__setitem__(0, 1.5), "fraction_above"),
    ("a radius missing", lambda p: p["grid"]["shaped"]["waveform_l2"].pop(), "waveform_l2"),
    ("certified block dropped", lambda p: p.update(certified=None), "certified radius"),
    ("clean PREDICT a float", lambda p: p.update(clean_predict=1.0), "clean PREDICT"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,damage,needle", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_records_are_refused_naming_why(perceived, tmp_path, name, damage, needle):
    directory = perceived["dirs"]["magspec"]
    plan = read_plan(directory)
    shards = known_shards(directory, plan)
    path = sorted((directory / "shards").glob("*.json"))[0]
    record = json.loads(path.read_text())
    assert validate_shard_file(path, plan, shards)[1] == ""
    body = {k: v for k, v in record.items() if k != SEAL_KEY}
    point = next(p for p in body["results"] if p["certified"] is not None or name != "certified block dropped")
    damage(point)
    target = tmp_path / path.name
    atomic_write_json(target, seal(body), compact=True)
    found, why = validate_shard_file(target, plan, shards)
    assert found is None and needle in why, why


@pytest.mark.slow
def test_attack_records_outside_their_ball_are_refused(perceived, tmp_path):
    directory = perceived["dirs"]["magspec"]
    plan = read_plan(directory)
    shards = known_shards(directory, plan)
    for path in sorted((directory / "shards").glob("*.json")):
        body = {k: v for k, v in json.loads(path.read_text()).items() if k != SEAL_KEY}
        found = [p for p in body["results"] if p["attack"] and p["attack"]["found"]]
        if found:
            found[0]["attack"]["l2"] = found[0]["attack"]["eps0"] * 1.01
            atomic_write_json(tmp_path / path.name, seal(body), compact=True)
            _, why = validate_shard_file(tmp_path / path.name, plan, shards)
            assert "leave the first ball" in why, why
            return
    pytest.skip("no attack succeeded on this tiny model: nothing to damage")


@pytest.mark.slow
def test_a_lost_shard_is_recomputed_alone_and_gives_the_same_results(perceived):
    runs, directory = perceived["runs"], perceived["dirs"]["magspec"]
    before = (directory / "points.tsv").read_text()
    shard_files = sorted((directory / "shards").glob("*.json"))
    kept = {p.name: p.stat().st_mtime_ns for p in shard_files[1:]}
    shard_files[0].unlink()
    (directory / "summary.json").unlink()
    result = run_cli(["perceptibility", *certify_overrides(perceived["trained"], "perc", "launcher=local",
                                                           *QUICK, "representation=magspec")], runs)
    assert "1 of 3 shard(s) to run" in result.stderr + result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in sorted((directory / "shards").glob("*.json"))[1:]} == kept
    assert (directory / "points.tsv").read_text() == before  # seeded from (seed, example): the same numbers


@pytest.mark.slow
def test_waveform_stage_without_attack_and_errors_before_any_work(trained):
    runs = trained["runs"]
    args = ["perceptibility", *certify_overrides(trained, "perc-wave", "launcher=debug", *QUICK,
                                                 "representation=waveform", "perceptibility.attack.enabled=false",
                                                 "perceptibility.points_per_speaker=1")]
    missing = run_cli(args, runs, check=False)
    assert missing.returncode != 0 and "run `audiocert certify` with the same overrides first" in missing.stderr
    run_cli(["certify", *certify_overrides(trained, "perc-wave", "launcher=debug", "representation=waveform")], runs)
    for override, needle in (("perceptibility.draws=0", "perceptibility.draws=0"),
                             ("perceptibility.attack.shrink=1.5", "perceptibility.attack.shrink=1.5")):
        bad = run_cli([*args, override], runs, check=False)
        assert bad.returncode != 0 and needle in bad.stderr, bad.stderr[-2000:]
    assert not list(runs.glob("sweeps/perc-wave/*/perceptibility-*"))
    run_cli(args, runs)
    [directory] = perceptibility_dirs(runs, "perc-wave").values()
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["points"] == 4 and summary["attack"] is None and summary["stage"] == "waveform"
    assert "waveform stage certifies the waveform itself" in summary["relation"]
    points = rows(directory / "points.tsv")
    assert all(p["waveform_radius"] == p["radius"] for p in points)
    assert all(p["attack_found"] == "" for p in points)


# ----------------------------------------------------------------------------------------------------------
# Fast: the pure parts
# ----------------------------------------------------------------------------------------------------------
def settings_config(**changes) -> dict:
    from omegaconf import OmegaConf

    from audiocert.configs import packaged_conf_dir

    section = OmegaConf.to_container(OmegaConf.load(packaged_conf_dir() / "perceptibility" / "quick.yaml"))
    for key, value in changes.items():
        target = section
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return {"perceptibility": section, "representation": {"stage": "magspec"},
            "dataset": {"sample_rate": 16000, "crop_samples": 25840}}


@pytest.mark.parametrize("key,value,needle", [
    ("draws", 0, "perceptibility.draws=0"), ("draws", 1000, "perceptibility.draws=1000"),
    ("quality_draws", 5, "perceptibility.quality_draws=5"), ("margin_db", float("nan"), "perceptibility.margin_db=nan"),
    ("budget_iterations", -1, "perceptibility.budget_iterations=-1"), ("radii", [0.5, 0.1], "ascending"),
    ("radii", [0.1, float("inf")], "perceptibility.radii[1]=inf"), ("radii", [], "perceptibility.radii is empty"),
    ("points_per_speaker", 0, "perceptibility.points_per_speaker=0"),
    ("shard.examples", 0, "perceptibility.shard.examples=0"), ("save_examples", "no", "save_examples='no'"),
    ("attack.enabled", 1, "perceptibility.attack.enabled=1"), ("attack.n", 0, "perceptibility.attack.n=0"),
])
def test_bad_settings_are_named(key, value, needle):
    from audiocert.kinds.perceptibility import perceptibility_settings

    with pytest.raises(ValueError) as error:
        perceptibility_settings(settings_config(**{key: value}))
    assert needle in str(error.value)


def test_settings_resolve_and_other_rates_are_refused():
    from audiocert.kinds.perceptibility import perceptibility_settings
    from audiocert.statistics import REPORT_RADII

    checked = perceptibility_settings(settings_config())
    assert checked["radii"] == list(REPORT_RADII) and checked["space"] == "magspec" and checked["attack"]["enabled"]
    assert perceptibility_settings(settings_config(**{"attack.enabled": False}))["attack"] == {"enabled": False}
    config = settings_config()
    config["dataset"]["sample_rate"] = 8000
    with pytest.raises(ValueError, match="sample_rate=8000"):
        perceptibility_settings(config)


def test_coverage_by_hand():
    from audiocert.kinds.perceptibility import coverage

    radius_w = np.array([0.5, 2.0, 5.0, 0.0, 3.0])
    certified = np.array([True, True, True, False, True])
    budget = np.array([1.0, 1.0, 1.0, 1.0, 4.0])
    upper = np.array([2.0, 3.0, 4.0, 2.0, 8.0])
    c = coverage(radius_w, certified, budget, upper)
    assert (c["covers_proven"], c["covers_at_most"], c["certified"]) == (1, 2, 4)
    assert c["fraction_covers_proven"] == 0.2 and c["fraction_covers_at_most"] == 0.4
    assert c["ratio"]["median"] == pytest.approx(np.median([0.5, 2.0, 5.0, 0.75]))
    none = coverage(None, certified, budget, upper)
    assert none["fraction_covers_at_most"] is None and none["ratio"]["median"] is None


def test_point_perturbations_have_their_norms_and_scale_linearly():
    """Waveform stage: unit waveform directions. magspec: unit stage directions whose resynthesis is linear, so a
    perturbation of radius r is r times the unit one; seeds are per (seed, example, purpose)."""
    from audiocert import psychoacoustics as pa
    from audiocert.corpus import synthesize_utterance, voice_parameters
    from audiocert.frontend import DeepSpeakerFrontend
    from audiocert.kinds.perceptibility import PointPerturbations, linearised_magspec, point_seed

    audio, _ = synthesize_utterance(voice_parameters(0, 2)[0], 0, 0)
    x = torch.tensor(audio[4000:4000 + 8000], dtype=torch.float64)
    threshold = pa.masking_threshold(x)
    budget = pa.imperceptible_budget(x, threshold=threshold, iterations=8, seed=point_seed(0, 1, "budget"))
    frontend = DeepSpeakerFrontend()
    wave = PointPerturbations(x, "waveform", frontend, budget, 3, 0, 1)
    assert torch.allclose(wave.units.norm(dim=1), torch.ones(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(wave.units[-1], budget.perturbation / budget.perturbation.norm(), atol=1e-12)
    assert wave.stage_l2(wave.deltas([0.5])) is None
    spec = PointPerturbations(x, "magspec", frontend, budget, 3, 0, 1)
    clean = frontend.to_stage(x[None], "magspec")[0]
    assert spec.round_trip < 1e-12
    assert torch.allclose(spec.deltas([2.0])[0], 2.0 * spec.units, atol=1e-12)
    image = linearised_magspec(budget.perturbation, x, frontend)
    step = 1e-4
    finite = (frontend.to_stage((x + step * budget.perturbation)[None], "magspec")[0] - clean) / step
    assert torch.allclose(finite, image, atol=1e-3 * float(image.abs().max()))
    assert point_seed(0, 1, "budget") != point_seed(0, 1, "random") != point_seed(0, 2, "random")
    assert point_seed(5, 1, "random") == point_seed(5, 1, "random")
