"""The psychoacoustic model on synthetic speech crops: runtime, imperceptible budgets and their tightness, resynthesis.

For 160-frame Deep Speaker crops (25,840 samples, 1.615 s) of the embedded synthetic corpus it measures
  * the runtime of ``masking_threshold`` and ``imperceptible_budget`` per utterance (wall and process CPU time; batch
    of 1 and of ``--batch``), on the device given;
  * each crop's budget (waveform L2 norm, full scale 1), its SNR 20 log10(||x|| / budget), the upper bound,
    tightness = budget / upper bound, median slack and fraction of bins within 3 dB of the threshold, for several
    iteration counts;
  * how audible a random direction of the budget's norm is (max excess in dB), and wideband PESQ / STOI of x against
    x + delta for the shaped and the random perturbation of that norm;
  * the round-trip error of the magnitude-spectrogram resynthesis (float32 magspec, as the pipeline computes it).

    .venv/bin/python benchmarks/psychoacoustics.py --utterances 8 --threads 1
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from audiocert import psychoacoustics as pa
from audiocert.corpus import synthesize_utterance, voice_parameters
from audiocert.frontend import DeepSpeakerFrontend

CROP = 25_840


def crops(count: int, seed: int) -> torch.Tensor:
    out = []
    for i, voice in enumerate(voice_parameters(seed, count)):
        audio, _ = synthesize_utterance(voice, seed, i)
        out.append(audio[4000:4000 + CROP])
    return torch.from_numpy(np.stack(out))


def timed(fn, device: torch.device, repeats: int = 3) -> tuple[float, float, object]:
    """(best wall seconds, process CPU seconds of that run, result) over ``repeats`` runs after a warm-up."""
    result = fn()
    best = (math.inf, math.inf)
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best[0], best[1], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", default="16,32,64,128")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = crops(args.utterances, args.seed).to(device)
    print(f"# psychoacoustics benchmark: {args.utterances} synthetic crops of {CROP} samples, device {device}, "
          f"{torch.get_num_threads()} threads\n")

    print("| step | batch | wall s / utt | CPU s / utt |\n| --- | --- | --- | --- |")
    for batch in (1, args.batch):
        xb = x[:batch]
        wall, cpu, th = timed(lambda xb=xb: pa.masking_threshold(xb), device)
        print(f"| masking_threshold | {batch} | {wall / batch:.4f} | {cpu / batch:.4f} |")
        wall, cpu, _ = timed(lambda xb=xb, th=th: pa.imperceptible_budget(xb, threshold=th), device, repeats=1)
        print(f"| imperceptible_budget (64 iterations, threshold given) | {batch} | {wall / batch:.3f} | "
              f"{cpu / batch:.3f} |")

    th = pa.masking_threshold(x)
    norms = x.double().norm(dim=-1)
    print(f"\nclean norms: {', '.join(f'{v:.2f}' for v in norms.tolist())}; maskers per frame: "
          f"{th.num_maskers.double().mean():.1f} mean, {int(th.num_maskers.max())} max\n")
    print("| iterations | budget (median, range) | SNR dB (median) | upper bound (median) | tightness (median, range) "
          "| median slack dB | within 3 dB | s / utt |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    budgets = {}
    for iterations in [int(i) for i in args.iterations.split(",")]:
        start = time.perf_counter()
        b = pa.imperceptible_budget(x, iterations=iterations, threshold=th)
        seconds = (time.perf_counter() - start) / len(x)
        budgets[iterations] = b
        snr = 20 * torch.log10(norms / b.budget)
        print(f"| {iterations} | {b.budget.median():.2f} ({b.budget.min():.2f}-{b.budget.max():.2f}) | "
              f"{snr.median():.1f} | {b.upper_bound.median():.2f} | {b.tightness.median():.3f} "
              f"({b.tightness.min():.3f}-{b.tightness.max():.3f}) | {b.median_slack_db.median():.1f} | "
              f"{b.within_3db.median():.3f} | {seconds:.2f} |")

    b = budgets.get(64) or next(iter(budgets.values()))
    shaped = b.perturbation
    random = pa.random_perturbation(tuple(x.shape), b.budget, seed=args.seed).to(device)
    a_shaped, a_random = pa.audibility(shaped, th), pa.audibility(random, th)
    q_shaped = pa.quality_scores(x, x + shaped)
    q_random = pa.quality_scores(x, x + random)
    print("\n| direction (norm = budget) | max excess dB (median) | bins above (median) | PESQ-WB (median) | "
          "STOI (median) |\n| --- | --- | --- | --- | --- |")
    for name, a, q in (("masking-shaped", a_shaped, q_shaped), ("random", a_random, q_random)):
        print(f"| {name} | {a.excess_db.median():.1f} | {a.fraction_above.median():.3f} | "
              f"{np.nanmedian(q.pesq):.2f} | {np.nanmedian(q.stoi):.3f} |")

    frontend = DeepSpeakerFrontend().to(device)
    magspec = frontend.to_stage(x, "magspec")
    back = pa.magspec_to_waveform(magspec, x, frontend)
    error = (back.double() - x.double()).abs().max()
    print(f"\nmagspec resynthesis round trip (float32 magspec): max |x_hat - x| = {error:.2e} "
          f"(RMS of x: {x.double().square().mean().sqrt():.3f})")


if __name__ == "__main__":
    main()
