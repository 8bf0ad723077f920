"""An imperceptible attack on the smoothed classifier g: the quietest adversarial example an attacker finds, to set
beside the certified radius ("the certificate rules out every attack up to R; the quietest successful attack found
has norm N").

The attack edits the waveform (delta of shape (n,), 16 kHz samples) and follows the second stage of Qin, Carlini,
Cottrell, Goodfellow & Raffel (ICML 2019, "Imperceptible, robust and targeted adversarial examples for automatic
speech recognition"), untargeted and on g instead of a plain network. It ascends

    J(delta) = -log q_y(delta) - lambda * P(delta),
    q_y(delta) = (1/m) sum_{i<m} softmax(f(s(x + delta) + sigma e_i))_y,          e_i ~ N(0, I) (SmoothAdv),
    P(delta)   = mean over frames t and bins k of ReLU(PSD_delta(t, k) - theta(t, k))        [dB],

where theta is the global masking threshold of the clean x and PSD_delta the perturbation's PSD on x's 96-dB scale
(:mod:`audiocert.psychoacoustics`), and s the frontend up to the smoothing stage (the identity for the waveform
stage). The penalty is Qin's l_theta: zero exactly when the perturbation stays under the threshold in every bin,
growing with every dB it rises above it. Qin's code takes the ReLU of *linear* powers on the 96-dB scale (up to
10^9.6), which weights the loudest bins by orders of magnitude; the paper writes it in dB, as here, so that one dB
over the threshold costs the same in every bin and lambda has one scale for every utterance. PSD_delta is floored
at ``FLOOR_DB`` (-200 dB, 183 dB under the lowest threshold in quiet) only to keep the logarithm's gradient finite
at bins where delta has no energy (the start, delta = 0); the ReLU is 0 there either way.

The search (one run per point, T steps of m noise draws each):

* L2 ball. delta starts at 0 inside the ball ||delta||_2 <= eps_0 = ``start`` x the point's imperceptible budget
  (its norm already reaches the speech level, see the README); each step is a normalised L2 ascent step on J of
  length ``step_factor`` x eps / T, then the projection onto the current ball (Qin keep delta inside the
  L-infinity bound tau of their first stage; an L2 ball is the certificate's geometry).
* Shrinking (Qin's first stage: tau <- 0.8 tau on success). Step t draws its own m noise samples; their hard votes
  at delta_t are a fresh estimate of whether g is fooled (a class other than y gets more votes than y: "flipped").
  After a flipped step, eps <- ``shrink`` x min(eps, ||delta_t||): the next iterates must be smaller.
* lambda (Qin's second stage). At every ``up_every``-th step a flipped one multiplies lambda by ``lambda_up``
  (Qin: 1.2 every 20 iterations); at every ``down_every``-th step one that did not flip multiplies it by
  ``lambda_down`` (0.8 every 50): the penalty grows while the attack succeeds and yields while it does not
  (:func:`next_lambda`).
* Candidates. Every flipped iterate delta_t (and the last one, delta_T, if it flips on the m evaluation draws) is
  a candidate. Candidates are ordered quietest first: by max(0, max excess over theta) (every inaudible one before
  any audible one), then by L2 norm. PREDICT(n, alpha) of g judges at most ``candidates`` of them, in that order,
  with the sampler's "prediction" stream of the example (never drawn by the attack, so the judge keeps its
  guarantee: a wrong class with probability <= alpha). The first one PREDICTed as a class other than y (an
  abstention is no success: the certificate does not rule it out) is the point's quietest successful attack.

Noise: step t uses samples (1 + t) m ... (2 + t) m - 1 of the "attack" stream of (seed, example), the final
evaluation samples 0 .. m - 1 (:func:`audiocert.attacks.smoothed_pgd`'s layout for one restart), so the search is a
function of (seed, example, x, y, settings, device type). Gradients of log q_y are exact: the log of a sum over
chunks of noisy copies is combined by logsumexp, and its gradient is the softmax-weighted sum of the chunks'.

x + delta is not clipped to [-1, 1] (as in :mod:`audiocert.attacks`): the speech crops peak well below 1, and the
found perturbations are measured as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from audiocert.attacks import UNJUDGED, attacked_stage_inputs, check_stream, judge_attacked
from audiocert.psychoacoustics import HOP, N_FFT, REFERENCE_DB, WINDOW_GAIN, MaskingThreshold, audibility
from audiocert.sampler import Smooth, fill_noise
from audiocert.settings import check_number, require
from audiocert.statistics import ABSTAIN

FLOOR_DB = -200.0  # PSD_delta floor of the penalty (see the module docstring)

Classifier = Callable[[torch.Tensor], torch.Tensor]
StageMap = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImperceptibleSettings:
    """The ``perceptibility.attack`` config section, checked (see :func:`check_imperceptible_settings`)."""

    start: float          # eps_0 = start x the point's imperceptible budget (waveform L2)
    shrink: float         # eps <- shrink x min(eps, ||delta_t||) after a flipped step, in (0, 1]
    steps: int            # T
    samples: int          # m noise draws per step
    step_factor: float    # step length step_factor x eps / T
    lambda0: float        # initial weight of the masking penalty (>= 0; 0: no penalty, as lambda only scales)
    lambda_up: float      # lambda x lambda_up at every up_every-th step that flipped (>= 1)
    lambda_down: float    # lambda x lambda_down at every down_every-th step that did not (in (0, 1])
    up_every: int
    down_every: int
    candidates: int       # PREDICT judges at most this many candidates, quietest first
    n: int                # PREDICT's samples
    alpha: float          # PREDICT's level
    batch_size: int       # noisy copies per forward/backward pass
    bf16: bool = False    # autocast f to bfloat16 on CUDA for the search's passes (the judge uses the Smooth's f)
    judge_max_n: int | None = None  # the judge continues on undecided candidates up to this many samples


INT_FIELDS = ("steps", "samples", "up_every", "down_every", "candidates", "n", "batch_size")


def check_imperceptible_settings(mapping: Mapping[str, Any], prefix: str = "perceptibility.attack"
                                 ) -> ImperceptibleSettings:
    """The checked settings; ValueError naming ``<prefix>.<field>`` for a missing, non-finite or out-of-range value.

    Also refused: a setting whose noise draws would not fit an example's attack stream (audiocert.attacks).
    """
    fields = [f for f in ImperceptibleSettings.__dataclass_fields__ if f not in ("bf16", "judge_max_n")]
    missing = [f for f in fields if mapping.get(f) is None]
    if missing:
        raise ValueError(f"the config lacks {', '.join(f'{prefix}.{f}' for f in missing)}")

    def number(name: str, **bounds: Any) -> Any:
        return check_number(mapping[name], f"{prefix}.{name}", **bounds)

    values: dict[str, Any] = {name: number(name, minimum=1, integer=True) for name in INT_FIELDS}
    values["start"] = number("start", above=0, maximum=100)
    values["shrink"] = number("shrink", above=0, maximum=1)
    values["step_factor"] = number("step_factor", above=0, maximum=100)
    values["lambda0"] = number("lambda0", minimum=0, maximum=1e6)
    values["lambda_up"] = number("lambda_up", minimum=1, maximum=100)
    values["lambda_down"] = number("lambda_down", above=0, maximum=1)
    values["alpha"] = number("alpha", above=0, below=0.5)
    bf16 = mapping.get("bf16", False)
    if not isinstance(bf16, (bool, np.bool_)):
        raise ValueError(f"{prefix}.bf16={bf16!r} must be true or false")
    try:
        check_stream(values["steps"], values["samples"], 1)
    except ValueError as error:
        raise ValueError(f"{prefix}.steps={values['steps']} x {prefix}.samples={values['samples']}: {error}") from None
    max_n = (mapping.get("judge") or {}).get("max_n")
    if max_n is not None:
        max_n = int(check_number(max_n, f"{prefix}.judge.max_n", minimum=values["n"], integer=True))
    return ImperceptibleSettings(**values, bf16=bool(bf16), judge_max_n=max_n)


def next_lambda(lam: float, flipped: bool, step: int, settings: ImperceptibleSettings) -> float:
    """Qin's schedule after step ``step`` (0-based): x lambda_up at every up_every-th step that flipped, x
    lambda_down at every down_every-th step that did not; otherwise unchanged."""
    count = step + 1
    if flipped and count % settings.up_every == 0:
        return lam * settings.lambda_up
    if not flipped and count % settings.down_every == 0:
        return lam * settings.lambda_down
    return lam


# ----------------------------------------------------------------------------------------------------------
# The masking penalty
# ----------------------------------------------------------------------------------------------------------
class MaskingPenalty:
    """P(delta) = mean_{t,k} ReLU(PSD_delta(t, k) - theta(t, k)) of waveforms delta (E, n), differentiable.

    PSD_delta = 96 - p_max + 10 log10(|g STFT(delta) / N|^2 + 10^(FLOOR_DB / 10) 10^((p_max - 96) / 10)): the
    psychoacoustic model's PSD (same STFT, window gain g, clean anchor p_max), floored at FLOOR_DB on the 96-dB scale.
    In float64 on the threshold's device (the tensors are tens of frames x 1025 bins).
    """

    def __init__(self, threshold: MaskingThreshold, device: torch.device | str | None = None) -> None:
        if threshold.batch_shape:
            raise ValueError(f"the penalty is of one utterance; this threshold is of a batch {threshold.batch_shape}")
        p_max = float(threshold.psd_max_db)
        if not math.isfinite(p_max):
            raise ValueError("the clean utterance is digitally silent: no level anchors the masking threshold, so no "
                             "perturbation of it is imperceptible")
        device = torch.device(device) if device is not None else threshold.theta_db.device
        self.theta_db = threshold.theta_db.to(device=device, dtype=torch.float64)
        self.num_samples = threshold.num_samples
        self.window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64, device=device)
        # 10^((96 - p_max) / 10) (g / N)^2: |X|^2 -> linear power on the 96-dB scale
        self.scale = 10.0 ** ((REFERENCE_DB - p_max) / 10.0) * (WINDOW_GAIN / N_FFT) ** 2
        self.floor = 10.0 ** (FLOOR_DB / 10.0)

    def excess_db(self, delta: torch.Tensor) -> torch.Tensor:
        """(E, frames, 1025) PSD_delta - theta (floored PSD), differentiable in ``delta`` (E, n)."""
        if delta.ndim != 2 or delta.shape[-1] != self.num_samples:
            raise ValueError(f"delta has shape {tuple(delta.shape)}; expected (E, {self.num_samples})")
        d = delta.to(device=self.theta_db.device, dtype=torch.float64)
        spec = torch.stft(d, N_FFT, HOP, N_FFT, window=self.window, center=True, pad_mode="constant",
                          return_complex=True).transpose(-1, -2)
        power = torch.view_as_real(spec).square().sum(-1)  # |X|^2 with a gradient of 0 (not nan) at X = 0
        psd = 10.0 * torch.log10(self.scale * power + self.floor)
        return psd - self.theta_db

    def __call__(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P(delta) (E,), max excess over theta in dB (E,)); P is 0 exactly when every bin is at or under theta."""
        excess = self.excess_db(delta)
        return torch.relu(excess).mean(dim=(-2, -1)), excess.detach().amax(dim=(-2, -1))


# ----------------------------------------------------------------------------------------------------------
# The smoothed classification loss with its exact gradient
# ----------------------------------------------------------------------------------------------------------
def smoothed_log_probability(classifier: Classifier, z: torch.Tensor, noise: torch.Tensor, y: int,
                             batch_size: int = 256, autocast_bf16: bool = False, need_grad: bool = True
                             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """log q_y(z_e) = log((1/m) sum_i softmax(f(z_e + noise_i))_y) for each row e of ``z`` (E, *S); its gradient
    w.r.t. z (E, *S) when ``need_grad``; and the m hard votes per row as (E, 2) [votes for y, most votes of another
    class].

    The E x m noisy copies are cut into chunks of at most ``batch_size`` (whole rows when batch_size >= m). A chunk c
    gives per row L_c = logsumexp of its log p_y and grad L_c; rows combine as log S = logsumexp_c L_c and
    grad log S = sum_c exp(L_c - log S) grad L_c (the gradient of a logsumexp), exactly, whatever the chunking.
    """
    rows, m = z.shape[0], noise.shape[0]
    if rows == 0 or m == 0:
        raise ValueError("no rows or no noise draws")
    z_leaf = z.detach().requires_grad_(need_grad)
    total = torch.full((rows,), -math.inf, dtype=torch.float64, device=z.device)
    total_grad = torch.zeros_like(z_leaf) if need_grad else None
    counts: torch.Tensor | None = None
    per_chunk = max(1, batch_size // m) if batch_size >= m else 1
    draws = m if batch_size >= m else batch_size
    for r0 in range(0, rows, per_chunk):
        r1 = min(rows, r0 + per_chunk)
        for i0 in range(0, m, draws):
            i1 = min(m, i0 + draws)
            with torch.set_grad_enabled(need_grad):
                noisy = (z_leaf[r0:r1, None] + noise[None, i0:i1]).flatten(0, 1)
                with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                    logits = classifier(noisy)
                logits = logits.float()
                if not 0 <= y < logits.shape[-1]:
                    raise ValueError(f"label y={y} is not one of the classifier's {logits.shape[-1]} classes")
                log_p = torch.log_softmax(logits, dim=-1)[:, y].reshape(r1 - r0, i1 - i0)
                chunk = torch.logsumexp(log_p, dim=1)
                grad = torch.autograd.grad(chunk.sum(), z_leaf)[0][r0:r1] if need_grad else None
            if counts is None:
                counts = torch.zeros((rows, logits.shape[-1]), dtype=torch.int64, device=z.device)
            predicted = logits.detach().argmax(dim=-1).reshape(r1 - r0, i1 - i0)
            counts[r0:r1].scatter_add_(1, predicted, torch.ones_like(predicted))
            chunk = chunk.detach().double()
            merged = torch.logaddexp(total[r0:r1], chunk)
            if total_grad is not None and grad is not None:
                # softmax weights of the old total and the chunk (0 for the first chunk: exp(-inf)); nan only if
                # both are -inf (p_y underflowed everywhere), where no direction is preferred
                old = torch.nan_to_num(torch.exp(total[r0:r1] - merged)).to(grad.dtype)
                new = torch.nan_to_num(torch.exp(chunk - merged)).to(grad.dtype)
                shape = (-1, *([1] * (grad.dim() - 1)))
                total_grad[r0:r1] = total_grad[r0:r1] * old.view(shape) + grad * new.view(shape)
            total[r0:r1] = merged
    require(counts is not None)
    others = counts.clone()
    others[:, y] = -1
    votes = torch.stack([counts[:, y], others.amax(dim=1).clamp_min(0)], dim=1)
    return total - math.log(m), total_grad, votes


# ----------------------------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Search:
    """What one search produced: the candidates (flipped iterates) and its course.

    candidates: (C, n) float32 waveform deltas (C may be 0); candidate_steps: the step of each (T for the final
    evaluation); final: delta_T (n,), the last iterate; eps: the ball radius at each step (T + 1 values, the last
    after the final step); lambdas: lambda at each step (T + 1); flipped: per step whether its votes flipped
    (T + 1, the last on the evaluation draws); passes: forward+backward passes of noisy copies (T m); eval_passes:
    forward-only ones (m); nonfinite: non-finite gradient entries replaced by 0.
    """

    candidates: torch.Tensor
    candidate_steps: list[int]
    final: torch.Tensor
    eps: list[float]
    lambdas: list[float]
    flipped: list[bool]
    passes: int
    eval_passes: int
    nonfinite: int


def _project(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """delta scaled into ||delta||_2 <= eps (exactly, after float rounding: the factor leaves 4 units of room)."""
    norm = float(torch.linalg.vector_norm(delta.double()))
    if norm <= eps:
        return delta
    return delta * (eps / norm * (1.0 - 2.0 * torch.finfo(delta.dtype).eps))


def imperceptible_search(classifier: Classifier, x: torch.Tensor, y: int, penalty: MaskingPenalty, eps0: float, *,
                         sigma: float, settings: ImperceptibleSettings, seed: int, example: int,
                         to_stage: StageMap | None = None, block_size: int | None = None) -> Search:
    """Run the search of the module docstring on one waveform ``x`` (n,) with label ``y``; returns its candidates.

    ``classifier`` is f at the smoothing stage (batch (B, *stage shape) -> logits, in eval mode); ``to_stage`` maps
    waveforms (B, n) to the stage differentiably (None for the waveform stage).
    """
    if isinstance(classifier, nn.Module) and classifier.training:
        raise ValueError("the classifier is in training mode: call .eval() first")
    if x.ndim != 1 or not torch.is_floating_point(x) or not bool(torch.isfinite(x).all()):
        raise ValueError("x must be one finite floating-point waveform (n,)")
    if isinstance(y, bool) or not isinstance(y, (int, np.integer)) or y < 0:
        raise ValueError(f"label y={y!r} must be a class index >= 0")
    eps = float(check_number(eps0, "eps0", above=0))
    sigma = float(check_number(sigma, "smoothing.sigma", above=0))
    m, steps = settings.samples, settings.steps
    block_size = m if block_size is None else int(block_size)
    check_stream(steps, m, 1, block_size)
    bf16 = settings.bf16 and x.device.type == "cuda"
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.detach().to(dtype)

    def stage(delta: torch.Tensor) -> torch.Tensor:
        moved = x[None] + delta
        return moved if to_stage is None else to_stage(moved)

    with torch.no_grad():
        noise = torch.empty((m, *stage(torch.zeros_like(x)[None]).shape[1:]), dtype=dtype, device=x.device)
    delta = torch.zeros((1, x.numel()), dtype=dtype, device=x.device)
    lam = float(settings.lambda0)
    candidates, candidate_steps, eps_trace, lambdas, flips = [], [], [], [], []
    nonfinite = 0
    for step in range(steps):
        eps_trace.append(eps)
        lambdas.append(lam)
        delta.requires_grad_(True)
        fill_noise(noise, seed, example, "attack", (1 + step) * m, block_size).mul_(sigma)
        with torch.set_grad_enabled(True):
            z = stage(delta)
        _, grad_z, votes = smoothed_log_probability(classifier, z, noise, int(y), settings.batch_size, bf16)
        grad_cls = grad_z if to_stage is None else torch.autograd.grad(z, delta, grad_outputs=grad_z)[0]
        with torch.set_grad_enabled(True):
            p, _ = penalty(delta)
        grad_pen = torch.autograd.grad(p.sum(), delta)[0].to(dtype) if p.requires_grad else torch.zeros_like(delta)
        delta = delta.detach()
        flipped = bool(votes[0, 1] > votes[0, 0])
        flips.append(flipped)
        norm = float(torch.linalg.vector_norm(delta.double()))
        if flipped and norm > 0:
            candidates.append(delta[0].clone())
            candidate_steps.append(step)
            eps = settings.shrink * min(eps, norm)
        ascent = -grad_cls - lam * grad_pen  # ascend -log q_y - lambda P
        bad = ~torch.isfinite(ascent)
        if bool(bad.any()):
            nonfinite += int(bad.sum())
            ascent = torch.where(bad, torch.zeros_like(ascent), ascent)
        length = float(torch.linalg.vector_norm(ascent.double()))
        if length > 0:
            delta = delta + ascent * (settings.step_factor * eps / steps / length)
        delta = _project(delta, eps)
        lam = next_lambda(lam, flipped, step, settings)
    eps_trace.append(eps)
    lambdas.append(lam)
    with torch.no_grad():
        fill_noise(noise, seed, example, "attack", 0, block_size).mul_(sigma)
        _, _, votes = smoothed_log_probability(classifier, stage(delta), noise, int(y), settings.batch_size, bf16,
                                               need_grad=False)
    flipped = bool(votes[0, 1] > votes[0, 0])
    flips.append(flipped)
    if flipped and float(torch.linalg.vector_norm(delta.double())) > 0:
        candidates.append(delta[0].clone())
        candidate_steps.append(steps)
    stacked = torch.stack(candidates) if candidates else torch.zeros((0, x.numel()), dtype=dtype, device=x.device)
    return Search(candidates=stacked.float() if dtype == torch.float32 else stacked, candidate_steps=candidate_steps,
                  final=delta[0].detach(),
                  eps=eps_trace, lambdas=lambdas, flipped=flips, passes=steps * m, eval_passes=m, nonfinite=nonfinite)


def quietest_order(excess_db: np.ndarray, l2: np.ndarray) -> np.ndarray:
    """Indices of candidates quietest first: by max(0, max excess) (inaudible ones first), then by L2 norm."""
    excess_db, l2 = np.asarray(excess_db, dtype=float), np.asarray(l2, dtype=float)
    return np.lexsort((l2, np.maximum(excess_db, 0.0)))


# ----------------------------------------------------------------------------------------------------------
# One point: search, judge, report
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ImperceptibleResult:
    """The imperceptible attack on one point.

    found: a candidate was PREDICTed as a class other than the label; then delta (n,) is it (the quietest successful
    one judged), with l2, linf, its max excess over theta (dB; <= 0: inaudible under the model), the fraction of
    time-frequency bins above theta, and predict, the class PREDICT gave. judged: the classes PREDICT gave the
    candidates it judged, in order (-1 abstain, -2 not finite: never judged). eps0: the first ball's radius;
    search: the search's course.
    """

    example: int
    label: int
    eps0: float
    found: bool
    judged: list[int]
    search: Search
    predict_passes: int
    delta: torch.Tensor | None = None
    l2: float | None = None
    linf: float | None = None
    max_excess_db: float | None = None
    fraction_above: float | None = None
    predict: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def inaudible(self) -> bool:
        return self.found and self.max_excess_db is not None and self.max_excess_db <= 0

    def to_record(self) -> dict[str, Any]:
        """JSON-ready (no delta)."""
        s = self.search
        return {
            "example": self.example, "label": self.label, "eps0": float(self.eps0), "found": bool(self.found),
            "l2": self.l2, "linf": self.linf, "max_excess_db": self.max_excess_db,
            "fraction_above": self.fraction_above, "predict": self.predict, "judged": [int(c) for c in self.judged],
            "candidates": len(s.candidate_steps), "flipped_steps": int(sum(s.flipped)),
            "final_eps": float(s.eps[-1]), "final_lambda": float(s.lambdas[-1]), "passes": int(s.passes),
            "eval_passes": int(s.eval_passes), "predict_passes": int(self.predict_passes),
            "nonfinite": int(s.nonfinite),
        }


def imperceptible_attack(smooth: Smooth, x: torch.Tensor, y: int, threshold: MaskingThreshold, eps0: float,
                         settings: ImperceptibleSettings, *, example: int, to_stage: StageMap | None = None
                         ) -> ImperceptibleResult:
    """Search (:func:`imperceptible_search`) and judge: what a shard runs per point.

    ``smooth``: the config's smoothed classifier (f, sigma, seed and the prediction stream's block size are reused);
    ``x``: the clean waveform (n,) on the classifier's device; ``threshold``: its masking threshold; ``eps0``: the
    first ball's radius (start x the point's imperceptible budget).
    """
    penalty = MaskingPenalty(threshold, x.device)
    search = imperceptible_search(smooth.base_classifier, x, y, penalty, eps0, sigma=smooth.sigma, settings=settings,
                                  seed=smooth.seed, example=example, to_stage=to_stage)
    result = ImperceptibleResult(example=int(example), label=int(y), eps0=float(eps0), found=False, judged=[],
                                 search=search, predict_passes=0,
                                 settings={**asdict(settings)})
    if search.candidates.shape[0] == 0:
        return result
    measured = audibility(search.candidates.detach().to("cpu", torch.float64), threshold)
    excess = measured.excess_db.numpy()
    above = measured.fraction_above.numpy()
    l2 = torch.linalg.vector_norm(search.candidates.double(), dim=1).cpu().numpy()
    for k in quietest_order(excess, l2)[:settings.candidates]:
        z = attacked_stage_inputs(x, search.candidates[k:k + 1].to(x.dtype), to_stage)
        classes, drawn = judge_attacked(smooth, z, settings.n, settings.alpha, settings.batch_size, example,
                                        settings.judge_max_n)  # the attack's judge: held, flipped or undecided
        predicted = int(classes[0])
        result.judged.append(predicted)
        result.predict_passes += int(drawn[0])
        if predicted not in (int(y), ABSTAIN, UNJUDGED):  # only a judged other class is a success
            delta = search.candidates[k]
            result.found, result.delta, result.predict = True, delta, predicted
            result.l2, result.linf = float(l2[k]), float(delta.double().abs().max())
            result.max_excess_db, result.fraction_above = float(excess[k]), float(above[k])
            break
    return result


__all__ = [
    "FLOOR_DB", "ImperceptibleResult", "ImperceptibleSettings", "MaskingPenalty", "Search",
    "check_imperceptible_settings", "imperceptible_attack", "imperceptible_search", "next_lambda", "quietest_order",
    "smoothed_log_probability",
]
