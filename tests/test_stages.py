"""The stage registry: one entry per frontend stage, and what a certificate at each stage means."""

import dataclasses

import pytest
import torch

from audiocert import frontend as frontend_module
from audiocert.frontend import DeepSpeakerFrontend, check_stage
from audiocert.stages import STAGE_REGISTRY, STAGES, Stage, WaveformBound, find_stage, stage

NUM_SAMPLES = 4000  # 24 frames: short, so that the frontend runs in milliseconds


@pytest.fixture(scope="module")
def frontend() -> DeepSpeakerFrontend:
    return DeepSpeakerFrontend()


def test_registry_names_are_the_frontends_stages_in_order(frontend):
    assert STAGES == tuple(STAGE_REGISTRY) == frontend.stages == ("waveform", "magspec", "mfbe")
    assert frontend_module.STAGES is STAGES  # the frontend's STAGES is the registry's, not a copy
    assert all(key == entry.name for key, entry in STAGE_REGISTRY.items())


@pytest.mark.parametrize("name", STAGES)
def test_frontend_can_be_entered_at_every_registered_stage(frontend, name):
    waveform = torch.randn(2, NUM_SAMPLES, generator=torch.Generator().manual_seed(0)) * 0.1
    x = frontend.to_stage(waveform, name)
    assert tuple(x.shape) == (2, *frontend.stage_shape(name, NUM_SAMPLES))
    torch.testing.assert_close(frontend.from_stage(x, name), frontend(waveform))


def test_registered_stage_the_frontend_lacks_is_an_error(frontend, monkeypatch):
    extra = Stage("logmel", "log Mel energies", "dB", "the log Mel energies", WaveformBound.NONE)
    monkeypatch.setitem(STAGE_REGISTRY, "logmel", extra)
    with pytest.raises(ValueError, match="registered but the frontend does not compute it"):
        frontend.to_stage(torch.zeros(1, NUM_SAMPLES), "logmel")


def test_unknown_stage_names_the_valid_ones(frontend):
    for call in (lambda: stage("logmel"), lambda: check_stage("logmel"),
                 lambda: frontend.to_stage(torch.zeros(1, NUM_SAMPLES), "logmel"),
                 lambda: frontend.from_stage(torch.zeros(1, NUM_SAMPLES), "logmel"),
                 lambda: frontend.stage_shape("logmel", NUM_SAMPLES)):
        with pytest.raises(ValueError, match="unknown smoothing stage 'logmel'") as caught:
            call()
        assert all(name in str(caught.value) for name in STAGES)
    with pytest.raises(ValueError, match="unknown smoothing stage"):
        stage(["not", "hashable"])  # type: ignore[arg-type]
    assert find_stage("logmel") is None and find_stage(["x"]) is None  # type: ignore[arg-type]
    assert find_stage("mfbe") is stage("mfbe") is STAGE_REGISTRY["mfbe"]


def test_waveform_bound_kinds():
    assert {name: entry.waveform_bound for name, entry in STAGE_REGISTRY.items()} == {
        "waveform": WaveformBound.DIRECT, "magspec": WaveformBound.LIPSCHITZ, "mfbe": WaveformBound.NONE}
    # A "lipschitz" stage relies on audiocert.lipschitz's proven bound, which covers waveform -> magspec only.
    assert [e.name for e in STAGE_REGISTRY.values() if e.waveform_bound is WaveformBound.LIPSCHITZ] == ["magspec"]
    assert stage("magspec").waveform_bound == "lipschitz"  # a StrEnum: compares equal to its string


def test_entries_are_frozen_and_complete():
    entry = stage("mfbe")
    assert entry.title == "normalized Mel-filterbank energies"
    assert entry.units == "per-frame z-scored Mel energies"
    assert entry.certified_object.startswith("the normalized Mel-filterbank energies (frames x 64)")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.title = "something else"  # type: ignore[misc]
    for e in STAGE_REGISTRY.values():
        assert e.name and e.title and e.units and e.certified_object
    assert Stage("x", "x", "u", "o", "none").waveform_bound is WaveformBound.NONE  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Stage("x", "x", "u", "o", "sometimes")  # type: ignore[arg-type]


def test_certificate_semantics_and_report_read_the_registry():
    from audiocert.kinds.certify import certificate_semantics
    from audiocert.reporting import stage_title, stage_units, waveform_bound

    for name, entry in STAGE_REGISTRY.items():
        assert certificate_semantics({}, name)["certified_object"] == entry.certified_object
        assert (stage_title(name), stage_units(name), waveform_bound(name)) == (
            entry.title, entry.units, entry.waveform_bound)
    # stage names read from a sweep's files may be anything: the report falls back instead of failing
    assert (stage_title("logmel"), stage_units("logmel"), waveform_bound("logmel")) == ("logmel", "stage units", None)
    with pytest.raises(ValueError, match="unknown smoothing stage 'logmel'"):
        certificate_semantics({}, "logmel")
