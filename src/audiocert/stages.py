"""The smoothing stages: one registry of what each stage of the frontend is and what a certificate there means.

A stage is a point of the frontend (:mod:`audiocert.frontend`) where the smoothing noise can enter. Everything the
rest of the code says *about* a stage (its title and units in reports, the certified object of its certificates,
whether and how its radius is a waveform guarantee) lives in its :class:`Stage` entry here; how the frontend
*computes* it lives in the frontend. Adding a stage means adding its computation to the frontend and one entry to
:data:`STAGE_REGISTRY`, nothing else.

The waveform guarantee of a certificate of radius r at a stage (Park et al. 2026, design.md "Reporting what a
certificate means"):

- ``direct``: the stage is the waveform; r is a waveform radius.
- ``lipschitz``: a waveform radius r / L through a proven upper bound L on the Lipschitz constant of the map
  waveform -> stage (:func:`audiocert.lipschitz.waveform_lipschitz_bound`, which covers the magnitude
  spectrogram: its linear part's operator norm, |.| being 1-Lipschitz).
- ``none``: a feature-space guarantee only (no Lipschitz bound of waveform -> stage).

This is the lowest layer (no torch, no other audiocert module): any layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class WaveformBound(StrEnum):
    """How a radius at a stage turns into a waveform guarantee (compares equal to its string value)."""

    DIRECT = "direct"
    LIPSCHITZ = "lipschitz"
    NONE = "none"


@dataclass(frozen=True)
class Stage:
    """One smoothing stage.

    name: the stage's key in configs, file names and the frontend (``representation.stage``).
    title: what the representation is, in words, lower case where the words allow ("magnitude spectrogram").
    units: what a coordinate of the representation is (the units of an L2 radius in that space).
    certified_object: what a certificate at this stage certifies (recorded in each config's semantics).
    waveform_bound: how a radius at this stage is a waveform guarantee (see :class:`WaveformBound`).
    """

    name: str
    title: str
    units: str
    certified_object: str
    waveform_bound: WaveformBound

    def __post_init__(self) -> None:
        object.__setattr__(self, "waveform_bound", WaveformBound(self.waveform_bound))


# In frontend order: the waveform first, each later stage computed from the one before.
STAGE_REGISTRY: dict[str, Stage] = {s.name: s for s in (
    Stage(
        name="waveform",
        title="waveform",
        units="waveform samples, full scale 1",
        certified_object="the waveform (float32 samples in [-1, 1])",
        waveform_bound=WaveformBound.DIRECT,
    ),
    Stage(
        name="magspec",
        title="magnitude spectrogram",
        units="|rfft| magnitude of pre-emphasized frames",
        certified_object="the magnitude spectrogram |rfft| (frames x 257); a waveform guarantee only via the "
                         "Lipschitz bound of the waveform -> magnitude map",
        waveform_bound=WaveformBound.LIPSCHITZ,
    ),
    Stage(
        name="mfbe",
        title="normalized Mel-filterbank energies",
        units="per-frame z-scored Mel energies",
        certified_object="the normalized Mel-filterbank energies (frames x 64): a feature-space guarantee only; "
                         "the normalization has no Lipschitz bound, so it implies nothing for waveform perturbations",
        waveform_bound=WaveformBound.NONE,
    ),
)}

# The stage names, in frontend order.
STAGES: tuple[str, ...] = tuple(STAGE_REGISTRY)


def stage(name: str) -> Stage:
    """The registry entry of stage ``name``; ValueError naming the valid stages when there is none."""
    try:
        return STAGE_REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown smoothing stage {name!r}: choose one of {', '.join(STAGES)}") from None


def find_stage(name: str) -> Stage | None:
    """The registry entry of stage ``name``, or None (for names read from files, which may be anything)."""
    try:
        return STAGE_REGISTRY.get(name)
    except TypeError:  # unhashable
        return None


def check_stage(name: str) -> None:
    """ValueError naming the valid stages unless ``name`` is a registered stage."""
    stage(name)
