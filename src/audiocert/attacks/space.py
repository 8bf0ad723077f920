"""Where delta enters: the attack spaces ("stage", "waveform") and the map s(x + delta) to the smoothing stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from audiocert.sampler import StagedClassifier
from audiocert.stages import check_stage

SPACES: tuple[str, ...] = ("stage", "waveform")

Classifier = Callable[[torch.Tensor], torch.Tensor]
StageMap = Callable[[torch.Tensor], torch.Tensor]


def check_space(space: str, stage: str | None = None, stages: Sequence[str] | None = None) -> str:
    """``space`` if delta can enter there for smoothing at ``stage``; ValueError naming ``attack.space``.

    "waveform" needs the stage to be computed from the waveform by a differentiable map, which holds for the
    stages of the frontend (``stages``, e.g. ``frontend.stages``) and for the waveform itself (then the two spaces
    are one). A stage outside ``stages`` cannot take a waveform attack.
    """
    if space not in SPACES:
        raise ValueError(f"attack.space={space!r} is not an attack space: choose one of {', '.join(SPACES)}")
    if stage is not None:
        check_stage(stage)
        if space == "waveform" and stages is not None and stage not in stages:
            raise ValueError(f"attack.space='waveform' cannot reach smoothing stage {stage!r}: the frontend computes "
                             f"only {', '.join(stages)} from the waveform; use attack.space=stage")
    return space


def attack_inputs(staged: StagedClassifier, waveform: torch.Tensor, space: str) -> tuple[torch.Tensor, StageMap | None]:
    """(x, to_stage) for attacking ``staged`` on one ``waveform`` (N,) in ``space``.

    "stage": x = x_stage (the clean representation the noise is added to), to_stage None (delta at the stage).
    "waveform": x = the waveform, to_stage = the differentiable frontend up to the stage (None when the stage is
    the waveform, where the two spaces coincide).
    """
    check_space(space, staged.stage, staged.frontend.stages)
    if space == "stage" or staged.stage == "waveform":
        with torch.no_grad():
            return staged.clean(waveform[None])[0], None
    frontend, stage = staged.frontend, staged.stage
    return waveform, lambda w: frontend.to_stage(w, stage)


def _stage_inputs(x: torch.Tensor, delta: torch.Tensor, to_stage: StageMap | None) -> torch.Tensor:
    """s(x + delta): the representation at the smoothing stage of each attacked row."""
    moved = x[None] + delta
    return moved if to_stage is None else to_stage(moved)


def attacked_stage_inputs(x: torch.Tensor, delta: torch.Tensor, to_stage: StageMap | None = None) -> torch.Tensor:
    """s(x + delta) for each row of ``delta`` (E, *x.shape): the attacked inputs at the smoothing stage."""
    with torch.no_grad():
        return _stage_inputs(x.detach(), delta.to(x.dtype), to_stage)
