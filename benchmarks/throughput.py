"""Noisy samples per second when certifying at each stage, against two baselines (issue: certification engine).

  (a) forward-only: the base classifier's frontend-tail + model on pre-computed noisy inputs at the stage
      (no noise generation, no counting), same batch size;
  (b) reference: a loop written the way locuslab/smoothing's core.py samples (x.repeat, randn_like,
      per-batch .cpu().numpy(), Python counting), same model and stage.

Each measurement runs in its own process so peak RSS (CPU) or peak allocated memory (CUDA) is its own.

    .venv/bin/python benchmarks/throughput.py --model rescnn_small --samples 2000 --batch-size 250
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

from audiocert import DeepSpeakerFrontend, Smooth, StagedClassifier
from audiocert.checkpoint import build_model
from audiocert.devices import resolve_device
from audiocert.frontend import STAGES
from audiocert.provenance import code_version


def make_classifier(model_name: str, stage: str, device: torch.device) -> tuple[StagedClassifier, torch.Tensor]:
    model_cfg = OmegaConf.load(f"conf/model/{model_name}.yaml")
    torch.manual_seed(0)
    model = build_model(model_cfg, 10).to(device).eval()
    frontend = DeepSpeakerFrontend().to(device)
    staged = StagedClassifier(frontend, stage, model).eval()
    t = torch.arange(25840, device=device) / 16000
    waveform = 0.3 * torch.sin(2 * torch.pi * 150 * t) * torch.sin(2 * torch.pi * 2 * t) + 0.01 * torch.randn(
        25840, device=device)
    return staged, staged.clean(waveform[None])[0]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(mode: str, model_name: str, stage: str, samples: int, batch_size: int, device_name: str,
            sigma: float, bf16: bool, queue: mp.Queue) -> None:
    device = resolve_device(device_name)
    staged, x = make_classifier(model_name, stage, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if mode == "certify":
        smooth = Smooth(staged, 10, sigma, seed=0, autocast_bf16=bf16)
        smooth.counts(x, "estimation", 0, batch_size, batch_size)  # warm-up
        sync(device)
        start = time.perf_counter()
        smooth.counts(x, "estimation", batch_size, batch_size + samples, batch_size)
    elif mode == "forward":
        with torch.inference_mode():
            inputs = staged.frontend.from_stage(x[None] + sigma * torch.randn((batch_size, *x.shape), device=device),
                                                stage)
            staged.model(inputs)
            sync(device)
            start = time.perf_counter()
            for _ in range(samples // batch_size):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    staged.model(inputs).argmax(1)
    elif mode == "reference":
        counts = np.zeros(10, dtype=int)
        with torch.no_grad():
            start = None
            for i in range(samples // batch_size + 1):
                if i == 1:
                    sync(device)
                    start = time.perf_counter()
                batch = x.repeat((batch_size, *([1] * x.dim())))
                noise = torch.randn_like(batch, device=device) * sigma
                predictions = staged(batch + noise).argmax(1)
                for idx in predictions.cpu().numpy():
                    counts[idx] += 1
    else:
        raise ValueError(mode)
    sync(device)
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put({"samples_per_s": (samples // batch_size) * batch_size / elapsed, "peak_mib": peak})


def run(mode: str, **kwargs) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=measure, args=(mode,), kwargs={**kwargs, "queue": queue})
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="rescnn_small", choices=["rescnn_small", "rescnn"])
    parser.add_argument("--stages", nargs="+", default=list(STAGES))
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the model (CUDA)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many interleaved rounds")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({where}), "
          f"model {args.model}, batch {args.batch_size}, {args.samples} samples, code {code_version()}")
    print(f"{'stage':<9} {'certify/s':>10} {'forward/s':>10} {'reference/s':>12} {'cert/fwd':>9} {'cert/ref':>9} "
          f"{'peak MiB (cert/fwd/ref)':>25}")
    for stage in args.stages:
        common = dict(model_name=args.model, stage=stage, samples=args.samples, batch_size=args.batch_size,
                      device_name=args.device, sigma=args.sigma, bf16=args.bf16)
        # Rounds interleave the three modes so a machine that slows down mid-way slows them all alike.
        runs: dict[str, list[dict]] = {"certify": [], "forward": [], "reference": []}
        for _ in range(args.repeats):
            for mode, results in runs.items():
                results.append(run(mode, **common))
        result = {mode: max(results, key=lambda r: r["samples_per_s"]) for mode, results in runs.items()}
        row = {"stage": stage, **{f"{m}_samples_per_s": r["samples_per_s"] for m, r in result.items()},
               **{f"{m}_peak_mib": r["peak_mib"] for m, r in result.items()},
               "certify_over_forward": result["certify"]["samples_per_s"] / result["forward"]["samples_per_s"],
               "certify_over_reference": result["certify"]["samples_per_s"] / result["reference"]["samples_per_s"]}
        rows.append(row)
        print(f"{stage:<9} {row['certify_samples_per_s']:>10.1f} {row['forward_samples_per_s']:>10.1f} "
              f"{row['reference_samples_per_s']:>12.1f} {row['certify_over_forward']:>9.3f} "
              f"{row['certify_over_reference']:>9.3f} "
              f"{result['certify']['peak_mib']:>9.0f}/{result['forward']['peak_mib']:.0f}/"
              f"{result['reference']['peak_mib']:.0f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": str(device), "args": vars(args), "rows": rows, "code_version": code_version()},
                      handle, indent=2)


if __name__ == "__main__":
    main()
