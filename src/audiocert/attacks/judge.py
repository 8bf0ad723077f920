"""The judges of an attacked input: PREDICT of g (the sampler's "prediction" stream), f's argmax, robust accuracy.

The judge of g is PREDICT continued on the inputs it cannot decide: looks at a fixed schedule n, 2n, 4n, ... up
to ``max_n`` samples (one prefix of the prediction stream, so each look adds samples), each at level alpha / K
for K looks. Whatever the true class probabilities, the chance that any look names a class other than g's is at
most the sum of the looks' levels, alpha (a union bound over the fixed schedule; Cohen's PREDICT bound at each
look). So a *flipped* answer (another class) is wrong about g with probability <= alpha, and an abstention after
the last look is *undecided*: the attacked point is not shown broken.

An attacked input that is not finite (a perturbation or a stage value that overflowed) is never judged: its class
is ``UNJUDGED`` (-2) and no sample is drawn for it. It shows nothing about g, so, like an undecided one, it does not
show the point broken; the reducer counts and reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from audiocert.attacks.settings import _count
from audiocert.attacks.space import Classifier
from audiocert.sampler import Smooth
from audiocert.statistics import ABSTAIN, check_alpha, predict_from_counts

UNJUDGED = -2  # the class of an attacked input that is not finite: never judged


def finite_rows(z: torch.Tensor) -> np.ndarray:
    """(E,) booleans: row e of z (E, ...) holds only finite values."""
    return torch.isfinite(z.reshape(z.shape[0], -1)).all(dim=1).cpu().numpy()


def judge_looks(n: int, max_n: int | None = None) -> list[int]:
    """The judge's fixed schedule of sample counts: n, 2n, 4n, ... below ``max_n``, then ``max_n`` (n alone when
    ``max_n`` is None or at most n)."""
    last = n if max_n is None else max(int(max_n), n)
    looks = [n]
    while looks[-1] < last:
        looks.append(min(2 * looks[-1], last))
    return looks


def sequential_predict(counts_of: Callable[[int, int], np.ndarray], n: int, max_n: int | None, alpha: float
                       ) -> tuple[int, int]:
    """(class or -1, samples drawn): PREDICT at each look of :func:`judge_looks` at level alpha / K on the counts of
    samples [0, look) (``counts_of(lo, hi)``: the class counts of samples [lo, hi) of one stream), stopping at the
    first look that decides. With ``max_n`` None this is PREDICT(n, alpha)."""
    looks = judge_looks(n, max_n)
    level = alpha / len(looks)
    counts: np.ndarray | None = None
    done = 0
    for look in looks:
        new = counts_of(done, look)
        counts = new if counts is None else counts + new
        done = look
        decided = predict_from_counts(counts, level)
        if decided != ABSTAIN:
            return int(decided), done
    return ABSTAIN, done


def judge_attacked(smooth: Smooth, z: torch.Tensor, n: int, alpha: float, batch_size: int, example: int,
                   max_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The judge of g (:func:`sequential_predict`) on each attacked stage input z[e], with the "prediction" stream
    of ``example`` (the noise of certification's clean PREDICT; the attack never draws from it): (classes (E,),
    -1 = undecided, -2 = not finite, never judged; samples drawn (E,))."""
    check_alpha(alpha)
    n = _count(n, "attack.n")
    if max_n is not None:
        _count(max_n, "attack.judge.max_n")
    finite = finite_rows(z)
    judged = [sequential_predict(lambda lo, hi, row=row: smooth.counts(row, "prediction", lo, hi, batch_size,
                                                                          example), n, max_n, alpha)
              if ok else (UNJUDGED, 0) for row, ok in zip(z, finite, strict=True)]
    return (np.array([c for c, _ in judged], dtype=np.int64).reshape(-1),
            np.array([s for _, s in judged], dtype=np.int64).reshape(-1))


def predict_attacked(smooth: Smooth, z: torch.Tensor, n: int, alpha: float, batch_size: int,
                     example: int, max_n: int | None = None) -> np.ndarray:
    """The classes of :func:`judge_attacked` (-1 = undecided): PREDICT(n, alpha) of g when ``max_n`` is None."""
    return judge_attacked(smooth, z, n, alpha, batch_size, example, max_n)[0]


def base_predict(classifier: Classifier, z: torch.Tensor, batch_size: int = 256, autocast_bf16: bool = False
                 ) -> np.ndarray:
    """f's argmax class on each row of z (E, *stage shape); ``UNJUDGED`` (-2) for a row that is not finite."""
    out = []
    with torch.no_grad():
        for lo in range(0, z.shape[0], batch_size):
            with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                out.append(classifier(z[lo:lo + batch_size]).float().argmax(dim=-1))
    return np.where(finite_rows(z), torch.cat(out).cpu().numpy().astype(np.int64), UNJUDGED)


def robust_accuracy(predictions: np.ndarray | Sequence[Sequence[int]], labels: np.ndarray | Sequence[int]
                    ) -> np.ndarray:
    """Empirical robust accuracy per eps: fraction of points whose PREDICT on the attacked input is the label
    (abstain, -1, counts as not robust). predictions (P, E), labels (P,) -> (E,)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 2 or predictions.shape[0] != labels.shape[0]:
        raise ValueError(f"predictions {predictions.shape} must be (points, eps) with one label per point "
                         f"({labels.shape})")
    if predictions.shape[0] == 0:
        return np.full(predictions.shape[1], np.nan)
    return (predictions == labels[:, None]).mean(axis=0)
