"""The judges of an attacked input: PREDICT of g (the sampler's "prediction" stream), f's argmax, robust accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from audiocert.attacks.settings import _count
from audiocert.attacks.space import Classifier
from audiocert.sampler import Smooth
from audiocert.statistics import check_alpha, predict_from_counts


def predict_attacked(smooth: Smooth, z: torch.Tensor, n: int, alpha: float, batch_size: int,
                     example: int) -> np.ndarray:
    """PREDICT(n, alpha) of g on each attacked stage input z[e], with the "prediction" stream of ``example``
    (the noise of certification's clean PREDICT; the attack never draws from it). (E,) classes, -1 = abstain."""
    check_alpha(alpha)
    n = _count(n, "attack.n")
    return np.array([predict_from_counts(smooth.counts(row, "prediction", 0, n, batch_size, example), alpha)
                     for row in z], dtype=np.int64)


def base_predict(classifier: Classifier, z: torch.Tensor, batch_size: int = 256, autocast_bf16: bool = False
                 ) -> np.ndarray:
    """f's argmax class on each row of z (E, *stage shape)."""
    out = []
    with torch.no_grad():
        for lo in range(0, z.shape[0], batch_size):
            with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                out.append(classifier(z[lo:lo + batch_size]).float().argmax(dim=-1))
    return torch.cat(out).cpu().numpy().astype(np.int64)


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
