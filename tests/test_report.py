"""The sweep report against the sweep's own files: a real (tiny) sweep planned, sharded and reduced in-process."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from audiocert.frontend import DeepSpeakerFrontend
from audiocert.kinds.certify import read_certificates
from audiocert.provenance import code_version, read_json, seal
from audiocert.statistics import certified_accuracy, max_certifiable_radius

CROP = 4000  # 24 frames: a short crop keeps the sweep and its Lipschitz constant cheap
# (stage, sigma, n): magspec rows differ in n, so their table must say so.
CONFIGS = [("waveform", 0.05, 30), ("waveform", 0.25, 30), ("magspec", 0.25, 30), ("magspec", 0.5, 40),
           ("mfbe", 0.25, 30)]
INCOMPLETE = ("mfbe", 0.5, 30)


def tiny_checkpoint(path: Path, speakers: list[int]) -> Path:
    """A random-init tiny ResCNN in load_checkpoint's format, nudged so that it often predicts speaker 0."""
    from audiocert.checkpoint import build_model, save_checkpoint

    torch.manual_seed(0)
    model_cfg = {"widths": [4, 8, 8, 16], "embedding_dim": 16, "dropout": 0.5, "bn_momentum": 0.1}
    model = build_model(model_cfg, len(speakers))
    with torch.no_grad():
        model.head[1].weight.mul_(0.1)
        model.head[1].bias.zero_()
        model.head[1].bias[0] = 1.0
    frontend = {"sample_rate": 16000, "frame_length": 400, "hop_length": 160, "nfft": 512, "num_filters": 64,
                "preemphasis": 0.97, "low_hz": 0.0, "high_hz": 8000.0}
    return save_checkpoint(path, {"model": model.state_dict(), "num_classes": len(speakers), "speakers": speakers,
                                  "config": {"model": model_cfg, "frontend": frontend},
                                  "metrics": {"clean_test_accuracy": 0.625}})


def write_summary(directory: Path, summary: dict) -> None:
    """summary.json as the certification reducer writes it: sealed, with the digest of the config's
    certificates.tsv (what readers check the table against)."""
    from audiocert.kinds.certify.certificates import certificates_digest
    from audiocert.provenance import SEAL_KEY, atomic_write_json, seal

    summary = {k: v for k, v in summary.items() if k != SEAL_KEY}
    summary["certificates_sha256"] = certificates_digest((directory / "certificates.tsv").read_text())
    atomic_write_json(directory / "summary.json", seal(summary))


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name=name, overrides=overrides)


@pytest.fixture(scope="module")
def sweep(tiny_corpus, tmp_path_factory) -> dict:
    from audiocert.kinds.certify import make_plan
    from audiocert.launching.planning import config_dir_for, plan_config
    from audiocert.launching.sweep import finish_sweep
    from audiocert.shards import write_plan

    root = tmp_path_factory.mktemp("report")
    speakers = sorted(int(p.name) for p in (tiny_corpus / "train-clean-360").iterdir() if p.is_dir())
    checkpoint = tiny_checkpoint(root / "tiny.pt", speakers)
    base = [f"dataset.root={tiny_corpus}", "dataset.name=tiny4", "dataset.num_classes=4", "dataset.generate=null",
            f"dataset.crop_samples={CROP}", "dataset.test_crops_per_speaker=2", "dataset.train_crops_per_speaker=2",
            "certify.points_per_speaker=2", "certify.n0=10", "certify.shard.samples=20", "certify.shard.examples=8",
            f"checkpoint={checkpoint}", f"sweep.dir={root / 'sweep'}", "sweep.name=tiny", f"paths.runs_dir={root}",
            "logger=disabled", "launcher=debug", "launcher.threads=1"]  # one thread: no OpenMP contention
    threads = torch.get_num_threads()  # run_shards sets the process-wide count; restore it afterwards
    dirs = {}
    try:
        for stage, sigma, n in CONFIGS:
            overrides = [*base, f"representation={stage}", f"smoothing.sigma={sigma}", f"certify.n={n}"]
            entry = plan_config(compose("certify", overrides))
            finish_sweep([entry], progress=False)
            dirs[(stage, sigma)] = Path(entry["config_dir"])
    finally:
        torch.set_num_threads(threads)
    stage, sigma, n = INCOMPLETE  # planned, never run: the report must list it as incomplete
    cfg = compose("certify", [*base, f"representation={stage}", f"smoothing.sigma={sigma}", f"certify.n={n}"])
    plan = make_plan(cfg)
    incomplete = config_dir_for(Path(cfg.sweep.dir), plan)
    write_plan(plan, incomplete)
    from audiocert.report import write_report

    report = write_report([root / "sweep"])
    return {"dir": root / "sweep", "dirs": dirs, "incomplete": incomplete, "report": report,
            "text": report.read_text(), "checkpoint": checkpoint, "base": base, "speakers": speakers}


def tables(text: str) -> dict[str, list[list[str]]]:
    """Markdown tables under '### <dataset>, <name> (<stage>)' headings, keyed by stage."""
    found = {}
    for match in re.finditer(r"^### tiny4, [^\n]* \((\w+)\)\n\n((?:\|[^\n]*\n)+)", text, flags=re.M):
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in match[2].strip().splitlines()]
        found[match[1]] = rows
    return found


def number(cell: str) -> float:
    return float(cell.replace("*", ""))


def test_default_output_and_files(sweep):
    assert sweep["report"] == sweep["dir"] / "report" / "report.md"
    assert (sweep["dir"] / "report" / "lipschitz.json").is_file()


def test_tables_agree_with_certificates_bold_and_ceilings(sweep):
    text = sweep["text"]
    found = tables(text)
    assert set(found) == {"waveform", "magspec", "mfbe"}
    for stage, rows in found.items():
        header, body = rows[0], rows[2:]
        radii = [float(h.split("=")[1]) for h in header[1:] if h.startswith("r =")]
        assert radii == [0.01, 0.05, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
        k = len(radii)
        assert header[k + 1:k + 3] == ["ceiling", "n"]
        configs = {s: n for st, s, n in CONFIGS if st == stage}
        assert len(body) == len(configs)
        columns = [[] for _ in radii]
        for row in body:
            sigma = float(re.match(r"σ = ([\d.]+)", row[0])[1])
            n = configs[sigma]
            certs = read_certificates(sweep["dirs"][(stage, sigma)] / "certificates.tsv")
            radius = np.array([c["radius"] for c in certs])
            correct = np.array([c["correct"] for c in certs])
            for j, r in enumerate(radii):
                assert number(row[1 + j]) == pytest.approx(certified_accuracy(radius, correct, r), abs=5e-4)
                columns[j].append(row[1 + j])
            assert float(row[k + 1]) == pytest.approx(max_certifiable_radius(sigma, n, 0.001), rel=1e-3)
            assert int(row[k + 2]) == n
            assert int(row[k + 3]) == len(certs) == 8
        for cells in columns:  # the best of each column bold, ties included; nothing bold when all are 0
            values = [number(c) for c in cells]
            bold = [c.startswith("**") for c in cells]
            assert bold == [max(values) > 0 and v == max(values) for v in values]
    assert "differ in n (30, 40)" in text.split("(magspec)")[1].split("###")[0]
    assert "All rows: n0 = 10, n = 30" in text.split("(waveform)")[1].split("###")[0]


def test_figures_exist_and_are_valid_pngs(sweep):
    from matplotlib.image import imread

    names = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", sweep["text"])
    # one per stage, one per sigma certified at two or more stages (only 0.25), one in waveform space
    assert names == ["certified_tiny4_waveform.png", "certified_tiny4_magspec.png", "certified_tiny4_mfbe.png",
                     "certified_tiny4_sigma0.25.png", "waveform_equivalent_tiny4.png"]
    for name in names:
        path = sweep["report"].parent / name
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name
        image = imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 500
        assert f"*Figure {names.index(name) + 1}:" in sweep["text"]


def section(text: str, stage: str, sigma: float) -> str:
    start = text.index(f"### tiny4-{stage}-sigma{sigma:g} (")
    return text[start:text.index("\n### ", start + 1) if "\n### " in text[start + 1:] else len(text)]


def frontend_cfg(sweep) -> dict:
    return read_json(sweep["dirs"][("magspec", 0.25)] / "plan.json")["config"]["frontend"]


def test_magspec_states_proven_lipschitz_bound_and_waveform_radius(sweep):
    from audiocert.lipschitz import waveform_lipschitz_bound
    from audiocert.lipschitz_estimate import lipschitz_power_iteration

    proven = waveform_lipschitz_bound(frontend_cfg(sweep), CROP)
    assert proven.boundary_excess > 0  # 4,000 samples: the last frame is zero-padded, a boundary term is added
    lower = lipschitz_power_iteration(DeepSpeakerFrontend(), CROP)["lipschitz"]
    assert lower <= proven.bound
    for sigma in (0.25, 0.5):
        text = section(sweep["text"], "magspec", sigma)
        L = float(re.search(r"proven Lipschitz bound L = ([\d.]+)", text)[1])
        assert proven.bound <= L <= proven.bound + 1e-6  # displayed rounded up, never below the proven value
        for words in ("polyphase symbol", "branch-and-bound", f"within {proven.tolerance:g}", "boundary term",
                      f"D = {proven.derivative_bound:.4g}", "closed form"):
            assert words in text, words
        assert "power iteration" not in text and "from below" not in text
        raw = float(re.search(r"Raw radius:\*\* median ([\d.e+-]+)", text)[1])
        certs = read_certificates(sweep["dirs"][("magspec", sigma)] / "certificates.tsv")
        certified = [c["radius"] for c in certs if c["correct"] and c["radius"] > 0]
        assert certified, "the tiny model should certify some magspec points"
        assert raw == pytest.approx(float(np.median(certified)), rel=1e-3)
        waveform = float(re.search(r"waveform radius r / L = ([\d.e+-]+)", text)[1])
        assert waveform == pytest.approx(raw / proven.bound, rel=1e-3)
        assert "SNR-equivalent" in text and "dB" in text and "Waveform-equivalent SNR" in text


def waveform_rows(text: str) -> dict[str, list[str]]:
    """The rows of the waveform-guarantee table (first in 'What each certificate means'), keyed by config."""
    table = text.split("## What each certificate means")[1].split("\n### ")[0]
    return {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
            for line in table.splitlines() if line.startswith("| ") and not line.startswith("| config |")}


def test_waveform_snr_of_magspec_is_the_reducer_median_plus_20_log10_L(sweep, tmp_path):
    """median_wave_to_radius_db + 20 log10(L) beside the feature SNR; 'n/a' for a summary without the field."""
    import math
    import shutil

    from audiocert.lipschitz import waveform_lipschitz_bound
    from audiocert.report import write_report

    source = sweep["dirs"][("magspec", 0.25)]
    new, old = tmp_path / "sweep" / "new-magspec", tmp_path / "sweep" / "old-magspec"
    for target, label in ((new, "tiny4-magspec-new"), (old, "tiny4-magspec-old")):
        shutil.copytree(source, target)
        plan = read_json(target / "plan.json")
        summary = read_json(target / "summary.json")
        plan["label"], summary["label"] = label, label
        summary.pop("median_wave_to_radius_db", None)
        if target == new:
            summary |= {"median_wave_to_radius_db": 3.25, "median_waveform_norm": 12.5}
        rewrite_plan(target, plan)
        write_summary(target, summary)
    text = write_report([tmp_path / "sweep"], tmp_path / "out").read_text()
    L = waveform_lipschitz_bound(frontend_cfg(sweep), CROP).bound
    expected = f"{3.25 + 20 * math.log10(L):.1f} dB"
    new_section = text[text.index("### tiny4-magspec-new ("):]
    new_section = new_section[:new_section.index("\n### ")]
    assert f"median 20 log10(‖x_waveform‖·L / r) = {expected}" in new_section
    assert "median ‖x_waveform‖ = 12.5" in new_section
    old_section = text[text.index("### tiny4-magspec-old ("):]
    assert "**Waveform-equivalent SNR:** n/a" in old_section.split("\n### ")[0]
    rows = waveform_rows(text)
    assert rows["tiny4-magspec-new"][6] == expected and rows["tiny4-magspec-old"][6] == "n/a"
    assert rows["tiny4-magspec-new"][3].endswith("dB")  # the feature-space SNR beside it


def resealed(plan: dict, rehash: bool = False) -> dict:
    """An edited plan as make_plan would have written it: sealed, and with ``rehash`` its quantities and config hash
    recomputed from its config (readers refuse a plan whose config, hash and seal disagree)."""
    from audiocert.kinds.certify import certified_quantities
    from audiocert.provenance import stable_hash

    if rehash:
        quantities = certified_quantities(plan["config"], device_type=plan["quantities"]["device_type"])
        quantities["checkpoint_digest"] = plan["quantities"]["checkpoint_digest"]
        plan.update(quantities=quantities, config_hash=stable_hash(quantities))
    plan.pop("content_sha256", None)
    return seal(plan)


def rewrite_plan(target, plan: dict, rehash: bool = False) -> None:
    from audiocert.provenance import atomic_write_json

    atomic_write_json(target / "plan.json", resealed(plan, rehash))


def test_waveform_table_and_snr_lines(sweep):
    text = sweep["text"]
    table = text.split("## What each certificate means")[1].split("\n### ")[0]
    assert "| config | stage | median radius (stage) | SNR-equivalent (stage) | L | median waveform radius | " \
           "waveform-equivalent SNR |" in table
    rows = waveform_rows(text)
    assert len(rows) == len(CONFIGS)
    mfbe = rows["tiny4-mfbe-sigma0.25"]
    assert mfbe[4] == "none (normalization)" and mfbe[5] == "no waveform guarantee" and mfbe[6] == "none"
    waveform = rows["tiny4-waveform-sigma0.25"]
    assert waveform[4] == "— (direct)" and waveform[6] == waveform[3]  # the two SNRs coincide
    magspec = rows["tiny4-magspec-sigma0.25"]
    assert float(magspec[4]) == pytest.approx(69.0805, abs=1e-3)
    assert "Waveform-equivalent SNR:** none (no waveform guarantee)" in section(text, "mfbe", 0.25)


def test_a_frontend_without_proven_bound_gets_no_waveform_guarantee(sweep, tmp_path):
    import shutil

    from audiocert.report import write_report
    from audiocert.reporting import NO_BOUND

    target = tmp_path / "sweep" / "hann-magspec"
    shutil.copytree(sweep["dirs"][("magspec", 0.25)], target)
    shutil.copytree(sweep["dirs"][("waveform", 0.25)], tmp_path / "sweep" / "waveform")
    plan = read_json(target / "plan.json")
    plan["label"] = "tiny4-magspec-hann"
    plan["config"]["frontend"] = {**plan["config"]["frontend"], "window": "hann"}  # not what the bound derives
    rewrite_plan(target, plan, rehash=True)
    text = write_report([tmp_path / "sweep"], tmp_path / "out").read_text()
    meaning = text[text.index("### tiny4-magspec-hann ("):]
    assert NO_BOUND in meaning and "r / L" not in meaning and "Lipschitz bound L =" not in meaning
    assert "Waveform-equivalent SNR:** none" in meaning
    row = waveform_rows(text)["tiny4-magspec-hann"]
    assert row[4] == "no proven bound" and row[5] == "no waveform guarantee" and row[6] == "none"
    assert f"Left out ({NO_BOUND}): tiny4-magspec-hann" in text  # the waveform-space figure's caption
    assert (tmp_path / "out" / "waveform_equivalent_tiny4.png").is_file()


def test_report_never_writes_outside_its_directory(sweep, tmp_path):
    """Names from a crafted plan cannot steer a file out of the report dir: an unsafe label or hash makes the plan
    untrusted (listed as damaged), and dataset / stage names that pass are slugged before they name a file."""
    import shutil

    from audiocert.provenance import atomic_write_json
    from audiocert.report import write_report
    from audiocert.reporting import SAFE_NAME, output_file, slug

    root = tmp_path / "root"
    for (stage, sigma), name in (((("magspec", 0.25)), "a"), ((("waveform", 0.25)), "b"), ((("mfbe", 0.25)), "c")):
        target = root / "sweep" / name
        shutil.copytree(sweep["dirs"][(stage, sigma)], target)
        plan, summary = read_json(target / "plan.json"), read_json(target / "summary.json")
        plan["config"]["dataset"]["name"] = summary["dataset"] = "../../escaped/ds"
        if name == "b":
            plan["config"]["representation"]["stage"] = summary["stage"] = "../../../stage/evil"
        if name == "c":  # a hostile label and hash: sealed, but never trusted
            plan["label"] = summary["label"] = "../../x"
            plan["config_hash"] = summary["config_hash"] = "../../../hash/" + name
            atomic_write_json(target / "plan.json", seal(plan))
        else:
            rewrite_plan(target, plan, rehash=True)
        write_summary(target, summary)
    out = root / "sweep" / "deep" / "report"
    before = {p for p in tmp_path.rglob("*")}
    report = write_report([root / "sweep"], out)
    written = {p for p in tmp_path.rglob("*")} - before
    assert report.parent == out and written, "the report should have been written"
    outside = [p for p in written if not (p == out or out in p.parents or p in out.parents)]
    assert not outside, outside
    assert not (root / "escaped").exists() and not (tmp_path / "x").exists() and not (root / "stage").exists()
    text = report.read_text()
    assert f"**damaged** `{root / 'sweep' / 'c'}`" in text and "is not 12 hex digits" in text
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs and all(SAFE_NAME.fullmatch(name) for name in pngs)
    assert all(p.parent == out for p in out.rglob("*"))
    text = report.read_text()
    for name in pngs:
        assert f"]({name})" in text
    # the slug keeps distinct names apart and never leaves [A-Za-z0-9._-]
    assert slug("tiny4") == "tiny4" and slug("a/b") != slug("a_b") and SAFE_NAME.fullmatch(slug("../../é x"))
    assert not slug("..").startswith(".") and not slug(".hidden").startswith(".")
    # every path is checked: anything that is not a plain name inside the directory raises, naming it
    for bad in ("../x.png", "a/b.png", "..", "", "x\x00.png", "é.png"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            output_file(out, bad)
    (out / "link.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(ValueError, match="link.png"):
        output_file(out, "link.png")


def test_waveform_and_mfbe_meaning(sweep):
    waveform = section(sweep["text"], "waveform", 0.25)
    assert "Waveform guarantee:** direct" in waveform
    mfbe = section(sweep["text"], "mfbe", 0.25)
    assert "feature space only" in mfbe and "r / L" not in mfbe and "Lipschitz constant L" not in mfbe
    for key in ("Certified object", "Perturbation location", "Gain policy", "Post-noise modification",
                "Raw radius", "SNR-equivalent"):
        assert key in mfbe and key in waveform


def test_header_accuracy_and_incomplete(sweep):
    text = sweep["text"]
    assert code_version() in text and "Generated " in text
    digest = read_json(sweep["dirs"][("mfbe", 0.25)] / "provenance.json")["checkpoint_digest"]
    assert f"`{digest}`" in text and str(sweep["checkpoint"].resolve()) in text
    for directory in sweep["dirs"].values():
        assert read_json(directory / "plan.json")["config_hash"] in text
    # the base classifier's clean accuracy comes from its checkpoint metrics
    assert "| 0.6250 |" in text and "| 0.625 |" in text
    incomplete = [line for line in text.splitlines() if line.startswith("- **incomplete**")]
    assert len(incomplete) == 1 and "tiny4-mfbe-sigma0.5" in incomplete[0] and "not reduced" in incomplete[0]
    assert "0/2 shards present" in incomplete[0]
    accuracy = text.split("## Accuracy and abstentions")[1]
    for (stage, sigma), directory in sweep["dirs"].items():
        certs = read_certificates(directory / "certificates.tsv")
        row = next(line for line in accuracy.splitlines() if line.startswith(f"| tiny4-{stage}-sigma{sigma:g} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2]) == pytest.approx(np.mean([c["correct"] for c in certs]), abs=5e-4)
        assert float(cells[3]) == pytest.approx(np.mean([c["predict"] == -1 for c in certs]), abs=5e-4)


def test_rerun_uses_lipschitz_cache_and_custom_radii(sweep, tmp_path, monkeypatch):
    import json
    import shutil

    import audiocert.report as report
    import audiocert.reporting.waveform_guarantee as waveform_guarantee

    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(sweep["report"].parent / "lipschitz.json", out / "lipschitz.json")
    [entry] = json.loads((out / "lipschitz.json").read_text()).values()
    assert entry["num_samples"] == CROP and entry["bound"] >= entry["lower"] and "derivative_bound" in entry
    assert entry["tolerance"] == 1e-6 and "polyphase" in entry["method"]

    def refuse(*args, **kwargs):
        raise AssertionError("the cached Lipschitz bound should have been used")

    monkeypatch.setattr(waveform_guarantee, "bound_for", refuse)
    path = report.write_report([sweep["dir"]], out, radii=[0.1, 0.2])
    text = path.read_text()
    assert path == out / "report.md" and "| r = 0.1 | r = 0.2 | ceiling |" in text
    assert not list(out.glob(".*.tmp"))
    # a cache entry that does not hold together is recomputed, not trusted
    key = next(iter(json.loads((out / "lipschitz.json").read_text())))
    (out / "lipschitz.json").write_text(json.dumps({key: {**entry, "bound": 1.0}}))
    with pytest.raises(AssertionError, match="cached Lipschitz bound"):
        report.write_report([sweep["dir"]], out)


def test_configs_of_a_retrained_checkpoint_are_superseded(sweep, tmp_path):
    """Retraining in place changes the checkpoint's digest: the old certificates leave the tables."""
    from audiocert.checkpoint import save_checkpoint
    from audiocert.launching.planning import plan_config
    from audiocert.launching.sweep import finish_sweep
    from audiocert.report import write_report

    def certify(overrides: list[str]) -> Path:
        entry = plan_config(compose("certify", overrides))
        finish_sweep([entry], progress=False)
        return Path(entry["config_dir"])

    checkpoint = tiny_checkpoint(tmp_path / "model.pt", sweep["speakers"])
    overrides = [*sweep["base"], f"checkpoint={checkpoint}", f"sweep.dir={tmp_path / 'sweep'}",
                 "representation=mfbe", "smoothing.sigma=0.25", "certify.n=30"]
    threads = torch.get_num_threads()
    try:
        old = certify(overrides)
        state = torch.load(checkpoint, weights_only=True)
        save_checkpoint(checkpoint, {**state, "metrics": {"clean_test_accuracy": 0.75}})  # "retrained"
        new = certify(overrides)
    finally:
        torch.set_num_threads(threads)
    assert old != new and (old / "certificates.tsv").is_file() and (new / "certificates.tsv").is_file()
    text = write_report([tmp_path / "sweep"]).read_text()
    [mfbe] = [t for stage, t in tables(text).items() if stage == "mfbe"]
    assert len(mfbe) == 3  # header, separator, one row: the current model's
    assert "(2 reduced, 0 incomplete, 1 superseded)" in text
    [listed] = [line for line in text.splitlines() if line.startswith("- **superseded**")]
    assert old.name[-8:] in listed and new.name[-8:] not in listed
    assert "| 0.7500 |" in text and "superseded: the checkpoint file has changed" in text
    accuracy = text.split("## Accuracy and abstentions")[1]
    assert len([line for line in accuracy.splitlines() if line.startswith("| tiny4-mfbe")]) == 1
    everything = write_report([tmp_path / "sweep"], tmp_path / "all", include_superseded=True).read_text()
    assert len(tables(everything)["mfbe"]) == 4 and "- **superseded**" not in everything


# ----------------------------------------------------------------------------------------------------------
# Two sweeps of the same configs, certified by Cohen and by sequential (issue 14, items 7 and 9)
# ----------------------------------------------------------------------------------------------------------
SEQUENTIAL_SHRINK = 0.7  # the fabricated sequential radii: Cohen's certified radii times this


@pytest.fixture(scope="module")
def twin_sweeps(sweep, tmp_path_factory) -> dict:
    """Sweeps 'cohen' and 'sequential' of the fixture's five configs: the Cohen directories as certified, and
    sequential twins (same points and noise streams, counted_inputs equal) whose certified radii are Cohen's times
    SEQUENTIAL_SHRINK — the plan's algorithm, sequential options (read from conf/) and config hash are what a real
    sequential plan holds. The report over both sweeps is written with every figure's legend captured before saving."""
    import shutil

    import audiocert.report as report
    import audiocert.reporting.figures as report_figures
    from audiocert.kinds.certify import certificates_tsv, certified_quantities
    from audiocert.provenance import atomic_write_json, atomic_write_text

    root = tmp_path_factory.mktemp("twins")
    options = certified_quantities(compose("certify", [*sweep["base"], "certify.algorithm=sequential"]))["sequential"]
    dirs = {}
    for (stage, sigma), source in sweep["dirs"].items():
        cohen = root / "cohen" / source.name
        shutil.copytree(source, cohen)
        plan, summary = read_json(source / "plan.json"), read_json(source / "summary.json")
        plan["config"]["certify"]["algorithm"] = "sequential"
        plan = resealed(plan, rehash=True)
        assert plan["quantities"]["sequential"] == options
        summary["config_hash"] = plan["config_hash"]
        summary["algorithm"] = "sequential"
        target = root / "sequential" / f"{plan['label']}-{plan['config_hash'][:8]}"
        shutil.copytree(source, target)
        atomic_write_json(target / "plan.json", plan)
        rows = read_certificates(source / "certificates.tsv")
        for row in rows:
            row["radius"] *= SEQUENTIAL_SHRINK
        atomic_write_text(target / "certificates.tsv", certificates_tsv(rows))
        write_summary(target, summary)
        dirs[stage, sigma] = {"cohen": cohen, "sequential": target}
    figures = {}
    save = report_figures.save_figure

    def capture(fig, path):
        [ax] = fig.axes
        figures[path.name] = {"legend": [t.get_text() for t in ax.get_legend().get_texts()],
                              "lines": {line.get_label(): line for line in ax.get_lines()}}
        return save(fig, path)

    report_figures.save_figure = capture
    try:
        text = report.write_report([root / "cohen", root / "sequential"], root / "report").read_text()
    finally:
        report_figures.save_figure = save
    return {"text": text, "figures": figures, "dirs": dirs}


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of a report: its rows (header first, separator dropped) as lists of cells."""
    found = []
    for block in re.findall(r"(?:^\|[^\n]*\n)+", text + "\n", flags=re.M):
        rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]] for line in block.splitlines()]
        found.append([row for row in rows if not all(set(c) <= {"-"} for c in row)])
    return found


def test_every_table_row_and_legend_entry_names_one_config_of_two_sweeps(twin_sweeps):
    """Cohen and sequential sweeps of the same configs: no table repeats a row name, no figure a legend entry,
    and the names say which algorithm certified them."""
    text = twin_sweeps["text"]
    tables = markdown_tables(text)
    for table in tables:
        first = [row[0] for row in table[1:]]
        assert len(first) == len(set(first)), (table[0], first)
    config_tables = [t for t in tables if t[0][0] in ("config", "", "sequential config")]
    assert len(config_tables) >= 6  # runs, 3 certified accuracy, waveform, accuracy (and the radius comparison)
    for table in config_tables:
        for row in table[1:]:  # every row is one config, and its name says its algorithm
            words = {w for w in ("cohen", "sequential") if w in row[0]}
            assert len(words) == 1, row[0]
    runs = next(t for t in tables if t[0][:4] == ["config", "stage", "σ", "algorithm"])
    assert len(runs) == 1 + 2 * len(CONFIGS)
    assert all(row[3] in row[0] for row in runs[1:])  # the algorithm column and the name agree
    headings = re.findall(r"^### (tiny4-[^\n]*)$", text, flags=re.M)
    assert len(headings) == 2 * len(CONFIGS) == len(set(headings))
    figures = twin_sweeps["figures"]
    assert set(figures) == {"certified_tiny4_waveform.png", "certified_tiny4_magspec.png", "certified_tiny4_mfbe.png",
                            "certified_tiny4_sigma0.25.png", "waveform_equivalent_tiny4.png"}
    for name, figure in figures.items():
        legend = figure["legend"]
        assert len(legend) == len(set(legend)), (name, legend)
        entries = [e for e in legend if not e.startswith(("dashed:", "markers:"))]
        assert entries and all(("cohen" in e) != ("sequential" in e) for e in entries), (name, entries)
        assert sum("sequential" in e for e in entries) == sum("cohen" in e for e in entries), (name, entries)
    sigma = figures["certified_tiny4_sigma0.25.png"]["legend"]
    assert "waveform, cohen" in sigma and "waveform, sequential (at its table radii)" in sigma


def result(label: str = "tiny4-mfbe-sigma0.25", sweep: str = "s", config_hash: str | None = None, **changes):
    """A complete ConfigResult without files, for naming tests: ``changes`` set fields (and the same certified
    quantities), ``quantities`` adds more; the config hash covers them all unless given."""
    from audiocert.provenance import stable_hash
    from audiocert.reporting import ConfigResult

    algorithm = changes.pop("algorithm", "cohen")
    fields = {"dataset": "tiny4", "stage": "mfbe", "sigma": 0.25, "n0": 10, "n": 30, "alpha": 0.001, "seed": 0,
              "checkpoint": "m.pt", "checkpoint_digest": "abc"}
    extra = changes.pop("quantities", {})
    fields |= changes
    quantities = {k: v for k, v in fields.items() if k not in ("dataset", "checkpoint")}
    quantities |= {"algorithm": algorithm, **extra}
    config_hash = config_hash or stable_hash({"label": label, "quantities": quantities})
    return ConfigResult(directory=Path(sweep) / f"{label}-{config_hash[:8]}", sweep_dir=Path(sweep), label=label,
                        config_hash=config_hash, plan_code_version="v", reducer_code_version="v",
                        config={"certify": {"algorithm": algorithm}}, complete=True, quantities=quantities,
                        **fields)


def test_distinct_names_append_only_what_tells_configs_of_one_label_apart():
    from audiocert.reporting import distinct_names

    other = result("tiny4-waveform-sigma0.25")
    assert distinct_names([result(), other]) == ["tiny4-mfbe-sigma0.25", "tiny4-waveform-sigma0.25"]
    assert distinct_names([result(), result(algorithm="sequential"), other]) == [
        "tiny4-mfbe-sigma0.25, cohen", "tiny4-mfbe-sigma0.25, sequential", "tiny4-waveform-sigma0.25"]
    # two sequential configs that differ in an option: the algorithm, then that option
    names = distinct_names([result(), result(algorithm="sequential", quantities={"sequential": {"last_share": 0.5}}),
                            result(algorithm="sequential", quantities={"sequential": {"last_share": 0.75}})])
    assert names == ["tiny4-mfbe-sigma0.25, cohen", "tiny4-mfbe-sigma0.25, sequential, sequential.last_share = 0.5",
                     "tiny4-mfbe-sigma0.25, sequential, sequential.last_share = 0.75"]
    # seed before sweep; n and α; a checkpoint retrained in between
    assert distinct_names([result(seed=1, sweep="a"), result(seed=2, sweep="b")]) == [
        "tiny4-mfbe-sigma0.25, seed 1", "tiny4-mfbe-sigma0.25, seed 2"]
    assert distinct_names([result(n=30), result(n=40, alpha=0.01)]) == [
        "tiny4-mfbe-sigma0.25, n = 30", "tiny4-mfbe-sigma0.25, n = 40"]
    assert distinct_names([result(checkpoint_digest="1234567890"), result(checkpoint_digest="abcdef0123")]) == [
        "tiny4-mfbe-sigma0.25, checkpoint 12345678", "tiny4-mfbe-sigma0.25, checkpoint abcdef01"]
    # the same config (same hash) certified in two sweeps; then the same directory read twice
    assert distinct_names([result(config_hash="f" * 16, sweep="a"), result(config_hash="f" * 16, sweep="b")]) == [
        "tiny4-mfbe-sigma0.25, sweep a", "tiny4-mfbe-sigma0.25, sweep b"]
    twice = result(config_hash="f" * 16)
    assert distinct_names([twice, twice]) == ["tiny4-mfbe-sigma0.25, #1", "tiny4-mfbe-sigma0.25, #2"]
    # the certified-accuracy tables' row names: σ first, the same rule after it
    from audiocert.reporting import row_labels

    assert row_labels([result(), result(algorithm="sequential"), result(sigma=0.5)]) == [
        "σ = 0.25, cohen", "σ = 0.25, sequential", "σ = 0.5"]


def test_sequential_radii_are_compared_with_cohen_and_explained(twin_sweeps):
    """Per sequential / Cohen pair: both median radii, their ratio and the per-point ratio, recomputed from the
    certificates; the report says what a sequential radius is."""
    text = twin_sweeps["text"]
    section = text.split("### Sequential radii against Cohen's")[1].split("\n## ")[0]
    [table] = markdown_tables(section)
    assert table[0][:2] == ["sequential config", "Cohen config"] and len(table) == 1 + len(CONFIGS)
    compared = 0
    for (stage, sigma), pair in twin_sweeps["dirs"].items():
        row = next(r for r in table[1:] if r[0].startswith(f"tiny4-{stage}-sigma{sigma:g}"))
        assert "sequential" in row[0] and "cohen" in row[1] and row[2] == stage
        radii = {}
        for algorithm, directory in pair.items():
            certs = read_certificates(directory / "certificates.tsv")
            radii[algorithm] = [c["radius"] for c in certs if c["correct"] and c["radius"] > 0]
        if not radii["cohen"]:
            assert row[5] == "n/a / n/a" and row[6] == "n/a"
            continue
        seq, cohen = (float(np.median(radii[a])) for a in ("sequential", "cohen"))
        assert [float(x) for x in row[5].split(" / ")] == pytest.approx([seq, cohen], rel=1e-3)
        assert row[6] == f"{SEQUENTIAL_SHRINK:.3f} ({(1 - SEQUENTIAL_SHRINK) * 100:.0f}% smaller)"
        assert row[7] == f"{SEQUENTIAL_SHRINK:.3f} ({len(radii['cohen'])})"
        compared += 1
    assert compared >= 2
    for words in ("A `sequential` radius is a lower bound at the level of the look where the point stopped",
                  "**Sequential configs** answer \"R ≥ r?\" at their table radii"):
        assert words in text
    meaning = text[text.index("### tiny4-magspec-sigma0.25, sequential ("):]
    meaning = meaning[:meaning.index("\n### ")]
    assert "**Sequential radius:**" in meaning and "the look where the point stopped" in meaning
    assert "\"R ≥ r?\" at the table radii (0.01, 0.05, 0.25, 0.5, 0.75, 1, 1.25, 1.5)" in meaning
    cohen_meaning = text[text.index("### tiny4-magspec-sigma0.25, cohen ("):]
    assert "**Sequential radius:**" not in cohen_meaning[:cohen_meaning.index("\n### ")]


def test_sequential_curves_are_steps_at_their_table_radii(twin_sweeps):
    """Figures draw a sequential config through its certified accuracy at 0 and at its table radii (held over
    (r_(k-1), r_k]); a Cohen config keeps its curve from the per-point radii."""
    from audiocert.statistics import REPORT_RADII

    lines = twin_sweeps["figures"]["certified_tiny4_magspec.png"]["lines"]
    pair = twin_sweeps["dirs"]["magspec", 0.25]
    seq = lines["σ = 0.25, sequential, n = 30 (at its table radii)"]  # magspec rows differ in n
    certs = read_certificates(pair["sequential"] / "certificates.tsv")
    radius, correct = np.array([c["radius"] for c in certs]), np.array([c["correct"] for c in certs])
    assert seq.get_drawstyle() == "steps-pre" and seq.get_marker() == "o"
    assert list(seq.get_xdata()) == [0.0, *REPORT_RADII]
    assert list(seq.get_ydata()) == [certified_accuracy(radius, correct, x) for x in (0.0, *REPORT_RADII)]
    cohen = lines["σ = 0.25, cohen, n = 30"]
    certs = read_certificates(pair["cohen"] / "certificates.tsv")
    radius, correct = np.array([c["radius"] for c in certs]), np.array([c["correct"] for c in certs])
    assert cohen.get_drawstyle() == "steps-post" and len(cohen.get_xdata()) == 800
    x = cohen.get_xdata()
    assert list(cohen.get_ydata()) == [certified_accuracy(radius, correct, r) for r in x]
    # in waveform space a magspec table radius r is r / L
    wave = twin_sweeps["figures"]["waveform_equivalent_tiny4.png"]["lines"]
    [magspec] = [line for label, line in wave.items() if label.startswith("magspec stage") and "σ = 0.25" in label
                 and "sequential" in label]
    L = float(re.search(r"L = ([\d.]+)", magspec.get_label())[1])
    assert magspec.get_xdata()[1:] == pytest.approx(np.array(REPORT_RADII) / L, rel=1e-3)


def test_table_radius_rounds_down_to_the_grid():
    from audiocert.reporting import table_radius

    grid = (0.25, 0.5, 1.0)
    assert list(table_radius(np.array([0.0, 0.1, 0.25, 0.3, 0.99, 1.0, 7.0]), grid)) == [
        0.0, 0.0, 0.25, 0.25, 0.5, 1.0, 1.0]


def test_a_near_constant_smoothed_classifier_is_flagged():
    """One class for (almost) every point, or accuracy at chance: the summary and the report say its radii describe
    a near-constant classifier."""
    import numpy as np

    from audiocert.kinds.certify.reduce import degenerate

    labels = np.arange(40) % 4
    assert "class 2 is predicted for 98%" in degenerate(np.where(np.arange(40) < 38, 2, labels), labels == 2, 4)
    chance = np.where(np.arange(40) % 4 == 0, labels, (labels + 1) % 4)  # right on 1 point in 4, every class used
    assert "at chance" in degenerate(chance, chance == labels, 4)
    assert degenerate(labels, np.ones(40, dtype=bool), 4) is None  # a model: every class, all correct
    assert degenerate(np.full(40, -1), np.zeros(40, dtype=bool), 4).startswith("accuracy 0.000 is at chance")
