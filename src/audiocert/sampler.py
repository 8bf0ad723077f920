"""Monte-Carlo sampling for randomized smoothing: batched Gaussian noise, class counts, CERTIFY and PREDICT.

The smoothed classifier is g(x) = argmax_c P(f(x + eps) = c), eps ~ N(0, sigma^2 I). ``Smooth`` keeps the
interface of locuslab/smoothing (``certify``, ``predict``, abstain = -1); underneath, everything is built on
``Smooth.counts``: the class-count vector of f over one range of sample indices of one phase of one example.
Counts over disjoint ranges of the same (example, phase) are independent and add up, which is what lets
shards split the work.

Noise streams. Sample i of (example, phase) lives in noise block b = i // block_size. Each block has its own
torch.Generator on the compute device, seeded with ``block_seed(seed, example, phase, b)``: the packed index
(example << 14 | phase << 12 | b) run through a 4-round Feistel permutation of 32-bit words keyed by ``seed``.
Only 32 bits, because torch's CPU generator (MT19937) keeps only the low 32 bits of a seed: seeds s and
s + 2**32 give the same stream. A permutation is a bijection, so two different (example, phase, block) of one
seed never share a stream, on any device (``MAX_EXAMPLES`` examples, ``MAX_BLOCKS`` blocks per phase; beyond
that ``block_seed`` refuses). So the noise of a sample depends only on (seed, example, phase, i, block_size,
device type): the same range always gives the same counts whatever the batch size or the shard boundaries, no
two blocks share noise, and the phases (selection 0, estimation 1, prediction 2, attack 3) use disjoint streams, so
selection and estimation samples are independent. CPU and CUDA generators differ, so counts are reproducible
per device type.

Sampling is batched: noise is drawn in float32 (or the input's wider dtype) straight into the batch buffer,
x is broadcast into it in place (never repeated), noise is never clipped, predictions are counted with
bincount on the device and copied to the host once per ``counts`` call. Optional bf16 autocast covers only
the base classifier, after the noise was added in full precision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from audiocert.frontend import DeepSpeakerFrontend
from audiocert.stages import check_stage
from audiocert.statistics import ABSTAIN, certify_from_counts, predict_from_counts

# attack: the noise draws of attacks on the smoothed classifier (audiocert.attacks), disjoint from certification's.
PHASES: dict[str, int] = {"selection": 0, "estimation": 1, "prediction": 2, "attack": 3}
DEFAULT_BLOCK_SIZE = 50


EXAMPLE_BITS, PHASE_BITS, BLOCK_BITS = 18, 2, 12  # 32 bits in all: what torch's CPU generator keeps of a seed
MAX_EXAMPLES = 1 << EXAMPLE_BITS  # dataset indices 0 .. 262,143
MAX_BLOCKS = 1 << BLOCK_BITS  # noise blocks per (example, phase): n <= 4096 * block_size
_MASK16 = np.uint64(0xFFFF)


def _round_keys(seed: int) -> np.ndarray:
    if isinstance(seed, bool) or not 0 <= int(seed) < 1 << 63:
        raise ValueError(f"seed={seed} must be an integer in [0, 2**63)")
    return np.random.SeedSequence([int(seed), 0x6E6F697365]).generate_state(4, np.uint32).astype(np.uint64)


def feistel32(seed: int, words: np.ndarray) -> np.ndarray:
    """A keyed permutation of 32-bit words: 4 Feistel rounds on their 16-bit halves, round keys from a
    SeedSequence of ``seed``. A Feistel network is a bijection whatever its round function."""
    words = np.asarray(words, dtype=np.uint64)
    left, right = words >> np.uint64(16), words & _MASK16
    for key in _round_keys(seed):
        mixed = ((right ^ key) * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
        mixed ^= mixed >> np.uint64(15)
        left, right = right, left ^ ((mixed * np.uint64(0x85EBCA6B) >> np.uint64(16)) & _MASK16)
    return ((left << np.uint64(16)) | right).astype(np.uint32)


def block_seeds(seed: int, examples: np.ndarray, phase_ids: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Vectorised ``block_seed``: uint32 seeds of the noise blocks (examples[k], phase_ids[k], blocks[k]).

    The packed index (example | phase | block in 18 | 2 | 12 bits) is injective, and ``feistel32`` is a
    bijection, so distinct blocks get distinct seeds.
    """
    examples, phase_ids, blocks = (np.asarray(a, dtype=np.int64) for a in (examples, phase_ids, blocks))
    if examples.size and not (0 <= examples.min() and examples.max() < MAX_EXAMPLES):
        raise ValueError(f"example index out of [0, {MAX_EXAMPLES}): noise streams are keyed by 32 bits "
                         f"({EXAMPLE_BITS} for the example); certify fewer or lower-indexed test examples")
    if blocks.size and not (0 <= blocks.min() and blocks.max() < MAX_BLOCKS):
        raise ValueError(f"noise block out of [0, {MAX_BLOCKS}): raise certify.block_size so that "
                         f"n <= {MAX_BLOCKS} * block_size")
    if phase_ids.size and not (0 <= phase_ids.min() and phase_ids.max() < len(PHASES)):
        raise ValueError(f"phase id out of [0, {len(PHASES)})")
    return feistel32(seed, (examples << (PHASE_BITS + BLOCK_BITS)) | (phase_ids << BLOCK_BITS) | blocks)


def block_seed(seed: int, example: int, phase: str, block: int) -> int:
    """Seed of one noise block of (example, phase); distinct blocks of one ``seed`` never share a seed."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}: choose one of {', '.join(PHASES)}")
    return int(block_seeds(seed, np.array([example]), np.array([PHASES[phase]]), np.array([block]))[0])


def sample_batches(start: int, stop: int, batch_size: int, block_size: int) -> Iterator[tuple[int, int]]:
    """Split [start, stop) into batches whose inner boundaries fall on noise-block boundaries.

    The batch size is rounded down to whole blocks (at least one) so no block is drawn twice.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be positive")
    per_batch = max(1, batch_size // block_size) * block_size
    lo = start
    while lo < stop:
        hi = min(stop, (lo // block_size) * block_size + per_batch)
        yield lo, hi
        lo = hi


def fill_noise(
    out: torch.Tensor, seed: int, example: int, phase: str, start: int, block_size: int
) -> torch.Tensor:
    """Write the standard-normal noise of samples [start, start + len(out)) into ``out``, block by block."""
    shape = tuple(out.shape[1:])
    lo, stop = start, start + out.shape[0]
    while lo < stop:
        block = lo // block_size
        hi = min(stop, (block + 1) * block_size)
        generator = torch.Generator(device=out.device)
        generator.manual_seed(block_seed(seed, example, phase, block))
        if lo == block * block_size and hi - lo == block_size:
            torch.randn((block_size, *shape), generator=generator, out=out[lo - start : hi - start])
        else:  # a partial block at the edge of a range: draw the whole block, keep our rows
            whole = torch.randn((block_size, *shape), generator=generator, device=out.device, dtype=out.dtype)
            offset = block * block_size
            out[lo - start : hi - start] = whole[lo - offset : hi - offset]
        lo = hi
    return out


class Smooth:
    """A smoothed classifier g around ``base_classifier`` f with isotropic Gaussian noise N(0, sigma^2 I).

    ``base_classifier`` maps a batch (B, *x.shape) to logits (B, num_classes). Inputs ``x`` are single
    examples without a batch dimension: a waveform, a spectrogram, a feature matrix or a plain vector.
    """

    ABSTAIN = ABSTAIN

    def __init__(
        self, base_classifier: Callable[[torch.Tensor], torch.Tensor], num_classes: int, sigma: float,
        seed: int = 0, block_size: int = DEFAULT_BLOCK_SIZE, autocast_bf16: bool = False,
    ) -> None:
        if sigma <= 0:
            raise ValueError(f"sigma={sigma} must be positive")
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes} must be at least 2")
        if block_size < 1:
            raise ValueError(f"block_size={block_size} must be positive")
        self.base_classifier, self.num_classes, self.sigma = base_classifier, num_classes, float(sigma)
        self.seed, self.block_size, self.autocast_bf16 = int(seed), int(block_size), autocast_bf16

    @torch.inference_mode()
    def counts(
        self, x: torch.Tensor, phase: str, start: int, stop: int, batch_size: int, example: int = 0
    ) -> np.ndarray:
        """Class counts of f(x + sigma * eps_i) for sample indices i in [start, stop) of (example, phase)."""
        if not 0 <= start <= stop:
            raise ValueError(f"bad sample range [{start}, {stop})")
        dtype = x.dtype if x.dtype in (torch.float64,) else torch.float32
        x = x.to(dtype)
        counts = torch.zeros(self.num_classes, dtype=torch.int64, device=x.device)
        buffer = torch.empty((0, *x.shape), dtype=dtype, device=x.device)
        for lo, hi in sample_batches(start, stop, batch_size, self.block_size):
            if buffer.shape[0] < hi - lo:
                buffer = torch.empty((hi - lo, *x.shape), dtype=dtype, device=x.device)
            noisy = fill_noise(buffer[: hi - lo], self.seed, example, phase, lo, self.block_size)
            noisy.mul_(self.sigma).add_(x)  # x broadcast over the batch; no copy of x per sample
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                logits = self.base_classifier(noisy)
            if logits.shape[-1] != self.num_classes:  # dropping classes would shrink n and inflate the radius
                raise ValueError(f"base classifier returned {logits.shape[-1]} logits, Smooth has "
                                 f"num_classes={self.num_classes}")
            counts += torch.bincount(logits.argmax(dim=1), minlength=self.num_classes)
        return counts.cpu().numpy()

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, example: int = 0
    ) -> tuple[int, float]:
        """CERTIFY: (class, radius) with the guarantee holding with probability >= 1 - alpha, or (-1, 0.0)."""
        selection = self.counts(x, "selection", 0, n0, batch_size, example)
        estimation = self.counts(x, "estimation", 0, n, batch_size, example)
        prediction, radius, _ = certify_from_counts(selection, estimation, alpha, self.sigma)
        return prediction, radius

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int, example: int = 0) -> int:
        """PREDICT: the smoothed class, or -1; returns a wrong class with probability at most alpha."""
        return predict_from_counts(self.counts(x, "prediction", 0, n, batch_size, example), alpha)


class StagedClassifier(nn.Module):
    """f for smoothing at a frontend stage: representation at ``stage`` -> rest of the frontend -> model."""

    def __init__(self, frontend: DeepSpeakerFrontend, stage: str, model: nn.Module) -> None:
        super().__init__()
        check_stage(stage)
        self.frontend, self.stage, self.model = frontend, stage, model

    def clean(self, waveform: torch.Tensor) -> torch.Tensor:
        """The clean representation x_stage that the smoothing noise is added to."""
        return self.frontend.to_stage(waveform, self.stage)

    def forward(self, x_stage: torch.Tensor) -> torch.Tensor:
        return self.model(self.frontend.from_stage(x_stage, self.stage))


def smoothed_speaker_classifier(
    frontend: DeepSpeakerFrontend, stage: str, model: nn.Module, num_classes: int, sigma: float, **kwargs
) -> tuple[Smooth, StagedClassifier]:
    """A smoothed speaker classifier with noise entering at ``stage``; certify ``staged.clean(waveform)``."""
    staged = StagedClassifier(frontend, stage, model).eval()
    return Smooth(staged, num_classes, sigma, **kwargs), staged
