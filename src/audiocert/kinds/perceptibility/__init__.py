"""Perceptibility as shard work: does a certified radius cover the perturbations a listener cannot hear?

``audiocert perceptibility`` composes the same config as ``audiocert certify`` plus a ``perceptibility`` section
(conf/perceptibility/). It needs the certification of the same config reduced first: the certified class and
radius of every point are read from its certificates.tsv when the work is planned and become part of the plan (and
of its hash). Each certification config gets a perceptibility config in a directory of its own inside the
certification's, ``<config>/perceptibility-<hash>/``, whose plan has kind "perceptibility": the certification's
quantities, inputs and certificates, the checked settings, and shards of ``perceptibility.shard.examples`` test
points (``ranges = {"radii": [0, G)}``: every shard measures all G radii of its points).

Per point a shard computes (everything seeded from (seed, example), so a rerun gives the same numbers):

1. The global masking threshold theta of the clean waveform and its imperceptible budget B (the largest
   imperceptible waveform L2 norm the construction finds, a lower bound) with the upper bound U of the largest one
   (:func:`audiocert.psychoacoustics.imperceptible_budget`).
2. Perturbations of exactly L2 norm r *at the stage*, for each radius r of the grid (``perceptibility.radii``,
   default the report's radii) and for the point's certified radius R: ``draws`` uniformly random directions (the
   same directions at every radius) and one masking-shaped direction (the budget's, the least audible direction
   the construction finds). Waveform stage: the perturbation is the waveform's. Magspec: a perturbation Delta of
   the magnitude spectrogram is resynthesised to a waveform with the clean phase (inverse rfft, least-squares
   overlap-add, inverse pre-emphasis; :func:`audiocert.psychoacoustics.magspec_to_waveform`); the waveform
   perturbation is resynth(M + Delta) - resynth(M), linear in Delta (so norms scale exactly), the shaped Delta is
   the budget perturbation's image under the linearised magnitude map Re(conj(X / |X|) F d), and the magspec
   displacement the resynthesised audio really carries is measured (``stage_l2``: a random Delta is not the
   magnitude spectrogram of any signal, so resynthesis keeps only part of it). mfbe has no waveform counterpart:
   its grid radii are taken as waveform norms ("how audible is a waveform perturbation of norm r") and the mfbe
   displacement each causes is measured; its certified radius is not resynthesised.
3. For each perturbation: its max excess over theta (dB; > 0 is audible under the model) and the fraction of
   time-frequency bins above theta; for the shaped one and the first ``quality_draws`` random ones, wideband PESQ
   and STOI of x + delta against x (null with the reason where the package refuses).
4. The imperceptible attack (:mod:`audiocert.imperceptible`, when ``perceptibility.attack.enabled``) on points that
   PREDICT classifies correctly: the quietest successful attack found, its L2 and L-infinity norms and its max
   excess over theta. The delta of each shard's quietest success is saved beside its record (``*.delta.npy``,
   SHA-256 in the record) for the report's audio.

The reducer (:meth:`PerceptibilityKind.reduce`) writes points.tsv (one row per point), audibility.csv (per radius and
direction), summary.json with a one-line headline, provenance.json, wandb.json, psd.png (threshold vs perturbation
PSD for one point at every radius) and the quietest attack as audio. The certified waveform radius is R at the
waveform stage and R / L at magspec (L the proven Lipschitz bound, :func:`audiocert.kinds.derived.lipschitz_of`); a
certificate covers the whole imperceptible set when R_w >= the largest imperceptible norm, which lies in [B, U]:
proven when R_w >= U, impossible when R_w < B.
"""

from audiocert.kinds.perceptibility.kind import PERCEPTIBILITY, PerceptibilityAccumulator, PerceptibilityKind
from audiocert.kinds.perceptibility.measure import (
    PointPerturbations,
    linearised_magspec,
    measure_point,
    point_seed,
)
from audiocert.kinds.perceptibility.reduce import coverage, reduce_perceptibility
from audiocert.kinds.perceptibility.settings import KIND, perceptibility_settings

perceptibility_dirs = PERCEPTIBILITY.directories
read_perceptibility_summary = PERCEPTIBILITY.read_summary

__all__ = ["KIND", "PERCEPTIBILITY", "PerceptibilityAccumulator", "PerceptibilityKind", "PointPerturbations",
           "coverage", "linearised_magspec", "measure_point", "perceptibility_dirs", "perceptibility_settings",
           "point_seed", "read_perceptibility_summary", "reduce_perceptibility"]
