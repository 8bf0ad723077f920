"""Forward+backward passes per second of the attack on the smoothed classifier, against the plain forward+backward
throughput of the same model at the same batch size (issue 15, item 6; target: attack >= 0.8 of plain).

  attack: ``audiocert.attacks.smoothed_pgd`` on one point, E eps x m noise draws per step (one forward+backward
          over the E x m noisy copies, chunked by --batch-size), T steps, R restarts; passes = what the result
          counts (restarts x T x m per eps). The restarts' forward-only evaluations are timed but not counted.
  plain:  the staged classifier (rest of the frontend + model) on a fixed batch at the stage with the input
          requiring grad, log-softmax of one class, torch.autograd.grad to the input: no noise, no attack logic.

The model is the demo's small ResCNN (widths 16, 32, 64, 128, embedding 128, 10 classes, random weights) on a
25,840-sample crop (160 frames). Each (stage, space) runs in its own process, which alternates attack and plain
rounds --repeats times: the table gives the best rate of each mode and the median ratio of paired rounds, so a
machine that slows down mid-way slows both alike. (On CPU the peak RSS is the process's, both modes together.)
On a machine shared with other jobs, ``--clock cpu --threads 1`` times process CPU time instead of wall time.

    .venv/bin/python benchmarks/attack.py --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from audiocert import DeepSpeakerFrontend, StagedClassifier
from audiocert.attacks import attack_inputs, smoothed_pgd
from audiocert.checkpoint import build_model
from audiocert.devices import resolve_device
from audiocert.frontend import STAGES
from audiocert.provenance import code_version


def make_setup(stage: str, device: torch.device) -> tuple[StagedClassifier, torch.Tensor]:
    model_cfg = OmegaConf.load("conf/model/rescnn_small.yaml")
    torch.manual_seed(0)
    model = build_model(model_cfg, 10).to(device).eval()
    staged = StagedClassifier(DeepSpeakerFrontend().to(device), stage, model).eval()
    t = torch.arange(25_840, device=device) / 16_000
    waveform = 0.3 * torch.sin(2 * torch.pi * 150 * t) * torch.sin(2 * torch.pi * 2 * t) + 0.01 * torch.randn(
        25_840, device=device, generator=torch.Generator(device=device).manual_seed(0))
    return staged, waveform


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(stage: str, space: str, eps: int, samples: int, steps: int, restarts: int, batch_size: int,
            device_name: str, threads: int | None, sigma: float, bf16: bool, repeats: int, clock: str,
            queue: mp.Queue) -> None:
    """Alternate attack and plain rounds in one process (same model, same warm caches); best of ``repeats``."""
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device_name)
    staged, waveform = make_setup(stage, device)
    x, to_stage = attack_inputs(staged, waveform, space)
    y = 3
    budgets = tuple(float(e) for e in np.geomspace(0.01, 1.0, eps))
    x_stage = staged.clean(waveform[None])[0].detach()
    rows = min(batch_size, eps * samples)
    inputs = x_stage[None] + sigma * torch.randn((rows, *x_stage.shape), device=device)

    def attack(steps: int, example: int) -> int:
        result = smoothed_pgd(staged, x, y, budgets, sigma=sigma, steps=steps, samples=samples, restarts=restarts,
                              seed=0, example=example, to_stage=to_stage, batch_size=batch_size, autocast_bf16=bf16)
        return int(result.passes.sum())

    def plain(passes: int) -> int:
        done = 0
        while done < passes:
            leaf = inputs.detach().requires_grad_(True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = staged(leaf)
            torch.autograd.grad(torch.log_softmax(logits.float(), dim=-1)[:, y].sum(), leaf)
            done += rows
        return done

    attack(1, 1), plain(rows)  # warm-up
    timer = time.process_time if clock == "cpu" and device.type == "cpu" else time.perf_counter
    peaks: dict[str, float] = {}
    rates: dict[str, list[float]] = {"attack": [], "plain": []}
    for _ in range(repeats):
        for mode in ("attack", "plain"):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            start = timer()
            passes = attack(steps, 0) if mode == "attack" else plain(steps * restarts * eps * samples)
            sync(device)
            rates[mode].append(passes / (timer() - start))
            if device.type == "cuda":
                peaks[mode] = torch.cuda.max_memory_allocated() / 2**20
    if device.type != "cuda":  # one process: its peak RSS covers both modes
        peaks = dict.fromkeys(rates, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put({"rates": rates, "peak_mib": peaks, "threads": torch.get_num_threads()})


def run_in_process(**kwargs) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=measure, kwargs={**kwargs, "queue": queue})
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=list(STAGES))
    parser.add_argument("--spaces", nargs="+", default=["stage", "waveform"], choices=["stage", "waveform"])
    parser.add_argument("--eps", type=int, default=4, help="budgets attacked together (E)")
    parser.add_argument("--samples", type=int, default=16, help="noise draws per step (m)")
    parser.add_argument("--steps", type=int, default=5, help="PGD steps (T)")
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64, help="noisy copies per forward+backward pass")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each measurement")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the model (CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many interleaved rounds")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU time (CPU only; with --threads 1 it measures the work, not the "
                             "contention of a shared machine)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    threads = args.threads or torch.get_num_threads()
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{threads} threads"
    print(f"device {device} ({where}), rescnn_small (random weights), E={args.eps} eps x m={args.samples} draws, "
          f"T={args.steps}, restarts={args.restarts}, batch {args.batch_size}, best of {args.repeats}, "
          f"{args.clock} clock, code {code_version()}\n")
    print("| stage | space | attack passes/s | plain fwd+bwd passes/s | attack / plain (best of each) | "
          "median of paired rounds | peak MiB (attack/plain) |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for stage in args.stages:
        for space in args.spaces:
            if space == "waveform" and stage == "waveform":
                continue  # the same attack as space "stage"
            result = run_in_process(
                stage=stage, space=space, eps=args.eps, samples=args.samples, steps=args.steps,
                restarts=args.restarts, batch_size=args.batch_size, device_name=args.device, threads=args.threads,
                sigma=args.sigma, bf16=args.bf16, repeats=args.repeats, clock=args.clock)
            rates = result["rates"]
            paired = [a / p for a, p in zip(rates["attack"], rates["plain"], strict=True)]
            row = {"stage": stage, "space": space, "attack_passes_per_s": max(rates["attack"]),
                   "plain_passes_per_s": max(rates["plain"]),
                   "ratio": max(rates["attack"]) / max(rates["plain"]), "paired_ratio_median": float(np.median(paired)),
                   "rates": rates, "peak_mib": result["peak_mib"], "threads": result["threads"]}
            rows.append(row)
            print(f"| {stage} | {space} | {row['attack_passes_per_s']:.1f} | {row['plain_passes_per_s']:.1f} | "
                  f"{row['ratio']:.3f} | {row['paired_ratio_median']:.3f} | "
                  f"{result['peak_mib']['attack']:.0f}/{result['peak_mib']['plain']:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": str(device), "args": vars(args), "rows": rows, "code_version": code_version()},
                      handle, indent=2)


if __name__ == "__main__":
    main()
