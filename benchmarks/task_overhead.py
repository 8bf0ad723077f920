"""What a shard task spends besides counting (issue 17): start-up, per-shard bookkeeping, and the compute it pays for.

A SLURM array task runs many shards in one process (``ShardWorker``; tasks packed to ``launcher.task_minutes``).
This benchmark fabricates the paper preset at the 921-speaker scale and measures, for the paper ResCNN
(conf/model/rescnn.yaml widths, 921-way head) and the small ResCNN:

- start-up, in a fresh process: the interpreter, the imports a task pays (``audiocert.launching.worker``, where
  ``ShardWorker`` lives and what submitit unpickles), ``ConfigWork`` (plan.json and rounds), the
  ``ShardContext`` (checkpoint SHA-256 + ``torch.load``, dataset scan from a valid manifest cache, split,
  ``CropDataset``, smoother), the first input (audio, digest check, clean representation) and the first batch of
  samples: everything before counting runs at its steady rate; then a breakdown of the context, piece by piece,
  in another fresh process;
- per-shard bookkeeping: the done-check of a shard with no file yet, building the record (``make_record``),
  checking it (``check_shard_record``), the sealed atomic write with fsync (``atomic_write_sealed``), clearing a
  stale failure record, and the done-check (``validated_summary``) a requeued task makes of a written shard;
  plus the shard's inputs (``ShardContext.example`` for each of its 10 examples);
- compute: samples/s of ``Smooth.counts`` on the real model, steady state after one warm-up batch.

Fabricated inputs: a LibriSpeech-layout tree of 921 speakers x 2 chapters x 20 FLAC files (hard links to a few
2-second files: the scan, split and crops are real, only the audio repeats), a weights-only best.pt per model
(random weights, what ``audiocert train`` saves), and each model's real plan from ``make_plan``: 30 points per
speaker = 27,630 points, n0 = 500, n = 10,000, shards of 10 examples x 2,500 samples (11,052 shards).

The overhead of a task of ``task_minutes`` T (wall W = T x 60 s) with start-up S, per-shard overhead b (bookkeeping
+ inputs) and shard compute c: k = max(1, floor((W - S) / (b + c))) shards, fraction = (S + k b) / (S + k (b + c)).
The smallest T whose fraction is <= 10% is reported too. Start-up, its parts and the compute rate are the best of
``--runs`` fresh processes (on a shared machine the fastest run is the one least slowed by others); the per-shard
steps are medians over ``--repeats`` shards.

    .venv/bin/python benchmarks/task_overhead.py [--output benchmarks/results/bench-task-overhead.md]
    .venv/bin/python benchmarks/task_overhead.py --device cuda --bf16 --batch-size 1000 --paper-samples 25000

On CPU the paper ResCNN is slow: its samples/s is measured on ``--paper-samples`` samples (a few hundred) and the
shard compute is extrapolated from it (the output says so).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBSET = "train-clean-360"
SHARD_EXAMPLES, SHARD_SAMPLES = 10, 2500  # conf/certify/paper.yaml
TARGET = 0.10  # issue 17: start-up + bookkeeping <= 10% of a task's wall time
TASK_MINUTES = (2, 5, 10, 20, 60)  # 20: conf/launcher/slurm.yaml's default


# ------------------------------------------------------------------------------------------------ fabrication
def fabricate_corpus(root: Path, speakers: int, chapters: int, per_chapter: int, seconds: float = 2.0) -> Path:
    """``root``/LibriSpeech/train-clean-360 with speakers x chapters x per_chapter FLAC files (hard links to four
    short files, symlinks where hard links fail), a SPEAKERS.TXT; returns the LibriSpeech directory."""
    import numpy as np
    import soundfile as sf

    corpus = root / "LibriSpeech"
    if (corpus / ".fabricated").is_file():
        return corpus
    shutil.rmtree(corpus, ignore_errors=True)
    sources = []
    for k in range(4):
        rng = np.random.default_rng(k)
        n = int(seconds * 16000) + 1000 * k
        t = np.arange(n) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (150 + 40 * k) * t) + 0.05 * rng.standard_normal(n)
        path = root / f"source-{k}.flac"
        sf.write(path, wav.astype(np.float32), 16000, format="FLAC", subtype="PCM_16")
        sources.append(path)
    rows = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    for s in range(speakers):
        spk = 100 + s
        rows.append(f"{spk:<5}| {'FM'[s % 2]} | {SUBSET}  | 25.00 | Speaker {spk}")
        for c in range(chapters):
            chapter = 1000 + c
            directory = corpus / SUBSET / str(spk) / str(chapter)
            directory.mkdir(parents=True)
            for u in range(per_chapter):
                target = directory / f"{spk}-{chapter}-{u:04d}.flac"
                source = sources[(s + c + u) % len(sources)]
                try:
                    os.link(source, target)
                except OSError:
                    target.symlink_to(source)
    (corpus / "SPEAKERS.TXT").write_text("\n".join(rows) + "\n")
    (corpus / ".fabricated").write_text("")
    return corpus


def dataset_overrides(corpus: Path, speakers: int) -> list[str]:
    """conf/dataset/librispeech921.yaml pointed at the fabricated corpus."""
    return ["dataset=librispeech921", f"dataset.root={corpus}", f"dataset.num_classes={speakers}",
            f"dataset.name=fabricated{speakers}"]


def fabricate_config(work: Path, corpus: Path, speakers: int, model: str, device: str, bf16: bool,
                     batch_size: int, points: int) -> Path:
    """A weights-only checkpoint of ``model`` (random weights) and its real paper-preset plan; the config dir."""
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from audiocert.checkpoint import build_model, save_checkpoint
    from audiocert.data import build_datasets
    from audiocert.kinds.certify import make_plan
    from audiocert.launching.planning import config_dir_for
    from audiocert.shards import write_plan

    overrides = [*dataset_overrides(corpus, speakers), f"model={model}", "certify=paper",
                 f"certify.points_per_speaker={points}", f"certify.batch_size={batch_size}",
                 f"certify.bf16={str(bf16).lower()}", f"device={device}", f"sweep.dir={work / 'sweep'}",
                 "logger=disabled", f"checkpoint={work / model / 'best.pt'}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("certify", overrides=overrides)
    checkpoint = Path(cfg.checkpoint)
    if not checkpoint.is_file():
        resolved = OmegaConf.to_container(cfg, resolve=True)
        speaker_ids = build_datasets(resolved["dataset"]).speakers
        torch.manual_seed(0)
        net = build_model(resolved["model"], speakers)
        # What audiocert.training saves as best.pt: weights and metadata, no optimizer state.
        save_checkpoint(checkpoint, {"model": net.state_dict(), "num_classes": speakers, "speakers": speaker_ids,
                                     "config": {k: resolved[k] for k in ("model", "frontend", "dataset")},
                                     "metrics": {}, "epoch": 0})
    started = time.perf_counter()
    plan = make_plan(cfg)
    config_dir = config_dir_for(Path(cfg.sweep.dir), plan)
    write_plan(plan, config_dir)
    print(f"  {model}: plan of {len(plan['examples']):,} points, {len(plan['shards']):,} shards in "
          f"{time.perf_counter() - started:.0f} s; checkpoint {checkpoint.stat().st_size / 2**20:.0f} MiB", flush=True)
    return config_dir


# ------------------------------------------------------------------------------------------ fresh-process parts
# Run with `python -c`: the task a SLURM array task would run, up to the steady sampling rate.
STARTUP = r"""
import json, os, sys, time
spawned = float(os.environ["SPAWNED_AT"])
t0 = time.perf_counter(); interpreter = time.time() - spawned
import torch
tt = time.perf_counter()
import audiocert.launching.worker  # what submitit unpickles: ShardWorker lives there
t1 = time.perf_counter()
from audiocert.shards import ConfigWork
torch.set_num_threads(int(os.environ["THREADS"]))
sync = torch.cuda.synchronize if os.environ["DEVICE"] == "cuda" else (lambda: None)
work = ConfigWork(os.environ["CONFIG_DIR"])
t2 = time.perf_counter()
ctx = work.context
sync(); t3 = time.perf_counter()
shard = work.shards[0]
waveform, x_stage, planned = ctx.example(shard.examples[0])
sync(); t4 = time.perf_counter(); cpu = time.process_time()  # CPU seconds of this process so far (all threads)
batch, samples = ctx.batch_size, int(os.environ["SAMPLES"])
ctx.smooth.counts(x_stage, "estimation", 0, batch, batch, example=planned["index"])
sync(); t5 = time.perf_counter()
ctx.smooth.counts(x_stage, "estimation", batch, batch + samples, batch, example=planned["index"])
sync(); t6 = time.perf_counter()
inputs = []
for position in shard.examples[1:]:
    start = time.perf_counter(); ctx.example(position); sync(); inputs.append(time.perf_counter() - start)
heavy = sorted(m for m in ("scipy.stats", "scipy.signal", "hydra", "wandb", "matplotlib", "torchaudio", "pandas")
               if m in sys.modules)
shard_samples = sum(s.samples for s in work.shards) / len(work.shards) / len(shard.examples)  # per example
print(json.dumps({"interpreter": interpreter, "imports": t1 - t0, "torch": tt - t0, "heavy": heavy,
                  "shard_samples": shard_samples * len(shard.examples), "cpu_to_first_input": cpu,
                  "config_work": t2 - t1, "context": t3 - t2,
                  "first_input": t4 - t3, "first_batch": t5 - t4, "batch": batch, "samples": samples,
                  "steady_s": t6 - t5, "inputs_s": sum(inputs) / len(inputs)}))
"""

# The context's parts, each timed, in another fresh process (imports not timed); stat calls of the scan counted.
BREAKDOWN = r"""
import json, os, time
import audiocert.launching.worker
from omegaconf import OmegaConf
from audiocert.checkpoint import load_checkpoint
from audiocert.data import CropDataset, scan_librispeech, split_utterances
from audiocert.data.checks import check_dataset_config
from audiocert.provenance import file_digest, read_json, seal_problem
from audiocert.sampler import Smooth, StagedClassifier
from audiocert.shards import known_shards, read_plan

D, out = os.environ["CONFIG_DIR"], {}


def timed(name, f):
    start = time.perf_counter()
    value = f()
    out[name] = time.perf_counter() - start
    return value


raw = timed("plan: json.load", lambda: read_json(os.path.join(D, "plan.json")))
timed("plan: seal check", lambda: seal_problem(raw))
plan = timed("plan: read_plan (all)", lambda: read_plan(D))
timed("plan: rounds (known_shards)", lambda: known_shards(D, plan))
timed("checkpoint: SHA-256", lambda: file_digest(plan["checkpoint"]))
out["checkpoint_mib"] = os.path.getsize(plan["checkpoint"]) / 2**20
loaded = timed("checkpoint: torch.load + model", lambda: load_checkpoint(plan["checkpoint"], os.environ["DEVICE"]))
s = check_dataset_config(plan["config"]["dataset"])
calls = {"stat": 0, "scandir": 0}
real_stat, real_scandir = os.stat, os.scandir


class Entry:
    def __init__(self, entry):
        self.entry = entry

    def __getattr__(self, name):
        return getattr(self.entry, name)

    def stat(self, *a, **k):
        calls["stat"] += 1
        return self.entry.stat(*a, **k)


class Entries:
    def __init__(self, it):
        self.it = it

    def __enter__(self):
        self.it.__enter__()
        return (Entry(e) for e in self.it)

    def __exit__(self, *a):
        return self.it.__exit__(*a)


def counting_stat(*a, **k):
    calls["stat"] += 1
    return real_stat(*a, **k)


def counting_scandir(*a, **k):
    calls["scandir"] += 1
    return Entries(real_scandir(*a, **k))


os.stat, os.scandir = counting_stat, counting_scandir
manifest = timed("dataset: scan (cache hit)", lambda: scan_librispeech(
    s.root, s.subset, s.speakers, min_samples=s.crop_samples, sample_rate=s.sample_rate, resample=s.resample))
os.stat, os.scandir = real_stat, real_scandir
out["scan: stat calls"], out["scan: scandir calls"] = calls["stat"], calls["scandir"]
out["scan: from cache"] = manifest.from_cache
train, test = timed("dataset: split", lambda: split_utterances(manifest, s.test_fraction, s.split_seed))
common = dict(crop_samples=s.crop_samples, seed=s.split_seed, sample_rate=s.sample_rate, resample=s.resample)
timed("dataset: train CropDataset (not used by a shard)", lambda: CropDataset(
    train, manifest.speakers, crops_per_speaker=s.train_crops_per_speaker, mode="train", **common))
timed("dataset: test CropDataset", lambda: CropDataset(
    test, manifest.speakers, crops_per_speaker=s.test_crops_per_speaker, mode="test", **common))
cfg = OmegaConf.create(plan["config"])
staged = StagedClassifier(loaded.frontend, cfg.representation.stage, loaded.model).eval()
timed("smoother", lambda: Smooth(staged, int(cfg.dataset.num_classes), float(cfg.smoothing.sigma), seed=0))
out["files"] = len(manifest.utterances)
print(json.dumps(out))
"""


def fresh(code: str, env: dict[str, str]) -> dict:
    """Run ``code`` in a fresh interpreter; its last stdout line as JSON, and its wall time as ``wall``."""
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env, "SPAWNED_AT": repr(started), "AUDIOCERT_PROGRESS_INTERVAL": "3600"})
    if out.returncode != 0:
        raise RuntimeError(f"measurement process failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = time.time() - started
    return result


# ------------------------------------------------------------------------------------------------ bookkeeping
def bookkeeping(config_dir: Path, repeats: int) -> dict[str, float]:
    """Per-shard seconds of each bookkeeping step, on the real plan, with the real shard files (median of
    ``repeats`` shards; the files are removed afterwards)."""
    import numpy as np

    from audiocert.kinds.certify import make_record
    from audiocert.launching.worker import clear_failure
    from audiocert.provenance import atomic_write_sealed
    from audiocert.shards import ConfigWork, check_shard_record, validated_summary

    work = ConfigWork(config_dir)
    plan, shards = work.plan, work.shards
    classes = int(plan["config"]["dataset"]["num_classes"])
    rng = np.random.default_rng(0)
    steps: dict[str, list[float]] = {k: [] for k in ("done-check (no file)", "make_record", "check_shard_record",
                                                     "atomic_write_sealed (fsync)", "clear_failure",
                                                     "done-check (written file)")}
    written = []
    for shard in shards[:repeats]:  # left over by an interrupted run
        work.path(shard.index).unlink(missing_ok=True)
    for shard in shards[:repeats]:
        inputs = [plan["inputs"][p] for p in shard.examples]
        counts = {}
        for phase, (lo, hi) in shard.ranges.items():  # a plausible classifier: most samples on the label
            rows = np.zeros((len(inputs), classes), np.int64)
            for r, planned in enumerate(inputs):
                wrong = rng.binomial(hi - lo, 0.05)
                rows[r, rng.choice(classes, 4, replace=False)] += rng.multinomial(wrong, [0.25] * 4)
                rows[r, planned["label"]] += hi - lo - wrong
            counts[phase] = rows
        t = [time.perf_counter()]
        assert not work.done(shard.index)
        t.append(time.perf_counter())
        record = make_record(plan, shard, counts, inputs, [1.0] * len(inputs), [2.0] * len(inputs), 60.0,
                             plan["quantities"]["device_type"])
        t.append(time.perf_counter())
        assert check_shard_record(record, plan, shards)[0] == ""
        t.append(time.perf_counter())
        path = atomic_write_sealed(work.path(shard.index), record)
        t.append(time.perf_counter())
        clear_failure(config_dir, shard.index)
        t.append(time.perf_counter())
        written.append(path)
        for key, a, b in zip(list(steps)[:5], t[:-1], t[1:], strict=True):
            steps[key].append(b - a)
    for path in written:  # a requeued task checks the shards it finished before (not cached in a new process)
        start = time.perf_counter()
        assert validated_summary(path, plan, shards)[0] is not None
        steps["done-check (written file)"].append(time.perf_counter() - start)
        path.unlink()
    return {k: float(np.median(v)) for k, v in steps.items()}


# ---------------------------------------------------------------------------------------------------- overhead
def task_fraction(startup: float, per_shard: float, compute: float, minutes: float) -> tuple[int, float, float]:
    """(shards, wall seconds, overhead fraction) of a task of ``minutes`` packed with shards of ``compute`` s."""
    shards = max(1, math.floor((minutes * 60 - startup) / (per_shard + compute)))
    wall = startup + shards * (per_shard + compute)
    return shards, wall, (startup + shards * per_shard) / wall


def smallest_minutes(startup: float, per_shard: float, compute: float, target: float = TARGET) -> float | None:
    """The smallest task length (minutes, to 0.1) whose overhead fraction is <= target; None when none is."""
    if target * compute <= (1 - target) * per_shard:
        return None  # the per-shard overhead alone exceeds the target
    shards = max(1, math.ceil((1 - target) * startup / (target * compute - (1 - target) * per_shard)))
    return math.ceil((startup + shards * (per_shard + compute)) / 6) / 10


def startup_seconds(s: dict) -> tuple[float, float, float]:
    """(start-up S, samples/s, first-batch excess) of a STARTUP measurement: everything before counting runs at
    its steady rate, i.e. up to the first input plus what the first batch took beyond a steady batch."""
    rate = s["samples"] / s["steady_s"]
    warm = max(0.0, s["first_batch"] - s["batch"] / rate)
    return s["interpreter"] + s["imports"] + s["config_work"] + s["context"] + s["first_input"] + warm, rate, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast of the model (certify.bf16=true; CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 100 on CPU, 1000 on CUDA")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--speakers", type=int, default=921)
    parser.add_argument("--points-per-speaker", type=int, default=30)
    parser.add_argument("--files", type=int, default=40, help="FLAC files per speaker (2 chapters)")
    parser.add_argument("--paper-samples", type=int, default=None,
                        help="samples timed for the paper ResCNN (default 300 on CPU, 25,000 on CUDA)")
    parser.add_argument("--small-samples", type=int, default=None, help="default 2,500 on CPU, 25,000 on CUDA")
    parser.add_argument("--models", default="rescnn,rescnn_small")
    parser.add_argument("--runs", type=int, default=3, help="fresh start-up processes per model (best one kept)")
    parser.add_argument("--repeats", type=int, default=50, help="shards whose bookkeeping is timed")
    parser.add_argument("--estimate-samples-per-s", type=float, default=20000.0,
                        help="add a row for this GPU throughput (an estimate, not measured; 0: none)")
    parser.add_argument("--workdir", type=Path, default=None, help="kept between runs (default: a temporary dir)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    batch = args.batch_size or (1000 if cuda else 100)
    samples = {"rescnn": args.paper_samples or (25000 if cuda else 300),
               "rescnn_small": args.small_samples or (25000 if cuda else 2500)}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="audiocert-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        started = time.perf_counter()
        corpus = fabricate_corpus(work, args.speakers, 2, args.files // 2)
        print(f"corpus: {args.speakers} speakers x {args.files} files ({time.perf_counter() - started:.0f} s)",
              flush=True)
        for model in args.models.split(","):
            config_dir = fabricate_config(work, corpus, args.speakers, model, args.device, args.bf16, batch,
                                          args.points_per_speaker)
            env = {"CONFIG_DIR": str(config_dir), "DEVICE": args.device, "THREADS": str(args.threads),
                   "SAMPLES": str(samples[model])}
            runs = [fresh(STARTUP, env) for _ in range(args.runs)]
            # Best of the runs: on a shared machine the fastest run is the one least slowed by other processes.
            startup = dict(min(runs, key=lambda r: startup_seconds(r)[0]))
            startup["best_rate"] = max(r["samples"] / r["steady_s"] for r in runs)
            startup["best_inputs_s"] = min(r["inputs_s"] for r in runs)
            breakdowns = [fresh(BREAKDOWN, env) for _ in range(args.runs)]
            parts = {k: min(b[k] for b in breakdowns) if isinstance(v, float) else v
                     for k, v in breakdowns[0].items()}
            book = bookkeeping(config_dir, args.repeats)
            results[model] = {"startup": startup, "runs": [round(startup_seconds(r)[0], 3) for r in runs],
                              "cpu_runs": [r["cpu_to_first_input"] for r in runs],
                              "parts": parts, "bookkeeping": book}
            print(f"  {model}: {json.dumps(results[model])}", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = report(results, args, batch)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


def overhead_cells(startup: float, per_shard: float, compute: float) -> list[str]:
    cells = []
    for minutes in TASK_MINUTES:
        k, wall, fraction = task_fraction(startup, per_shard, compute, minutes)
        cells.append(f"{100 * fraction:.2f}% ({k} shard{'s' if k > 1 else ''}"
                     f"{f', {wall / 60:.0f} min' if wall > minutes * 60 else ''})")
    best = smallest_minutes(startup, per_shard, compute)
    return [*cells, f"{best:g}" if best is not None else "never"]


def report(results: dict, args: argparse.Namespace, batch: int) -> str:
    import torch

    from audiocert.provenance import code_version

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    models = list(results)
    lines = [f"# Task overhead: start-up, per-shard bookkeeping and compute ({args.device}"
             f"{', bf16' if args.bf16 else ''})", "",
             f"{time.strftime('%Y-%m-%d')}, audiocert {code_version()}, torch {torch.__version__}, Python "
             f"{sys.version.split()[0]}, {device}, {os.cpu_count()} CPU(s). `benchmarks/task_overhead.py"
             f"{' --device cuda' if args.device == 'cuda' else ''}{' --bf16' if args.bf16 else ''}`.", "",
             f"Paper preset: n0 500, n 10,000, shards of {SHARD_EXAMPLES} examples x {SHARD_SAMPLES:,} samples, "
             f"batch {batch}; {args.speakers} speakers x {args.points_per_speaker} points = "
             f"{args.speakers * args.points_per_speaker:,} points (the plan.json a task reads); a fabricated "
             f"LibriSpeech-layout corpus of {args.speakers * args.files:,} FLAC files with a valid manifest cache; "
             "a weights-only best.pt with a 921-way head. Files in the page cache: a cluster file system adds its "
             "latency to each file read, stat and fsync.", "",
             "## Start-up of a task", "",
             f"A fresh process, as a SLURM array task starts; the best of {args.runs} runs, as for every figure "
             "below except the per-shard steps (their median over the shards timed): on a shared machine the "
             "fastest run is the one least slowed by other processes (seconds; all runs: " +
             "; ".join(f"{m} {', '.join(f'{v:.2f}' for v in results[m]['runs'])}" for m in models) + ").", "",
             "| model | interpreter | import torch | other imports | plan (ConfigWork) | context | first input "
             "| first batch beyond steady | **start-up S** | CPU s to the first input |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = {}
    for model, r in results.items():
        s = r["startup"]
        total, _, warm = startup_seconds(s)
        rate = s["best_rate"]
        book = sum(v for k, v in r["bookkeeping"].items() if k != "done-check (written file)")
        rows[model] = (total, book, SHARD_EXAMPLES * s["best_inputs_s"], rate, s["shard_samples"] / rate)
        lines.append(f"| {model} | {s['interpreter']:.2f} | {s['torch']:.2f} | {s['imports'] - s['torch']:.2f} | "
                     f"{s['config_work']:.2f} | {s['context']:.2f} | {s['first_input']:.3f} | {warm:.2f} | "
                     f"**{total:.2f}** | {min(r['cpu_runs']):.2f} |")
    heavy = sorted({m for r in results.values() for m in r["startup"]["heavy"]})
    lines += ["", f"Modules a task had loaded before its first sample, of scipy.stats, scipy.signal, hydra, wandb, "
              f"matplotlib, torchaudio, pandas: {', '.join(heavy) or 'none'}.", "",
              "The plan and the context, part by part (other fresh processes, same files; seconds):", "",
              "| part | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    skip = ("wall", "files", "checkpoint_mib")
    for key in [k for k in results[models[0]]["parts"] if k not in skip]:
        values = [r["parts"][key] for r in results.values()]
        lines.append(f"| {key} | " + " | ".join(f"{v:.3f}" if isinstance(v, float) else f"{v:,}"
                                                 if isinstance(v, int) and not isinstance(v, bool) else str(v)
                                                 for v in values) + " |")
    lines.append("| checkpoint size (MiB) | " + " | ".join(f"{r['parts']['checkpoint_mib']:.0f}"
                                                          for r in results.values()) + " |")
    lines += ["", "## Per shard", "", "| step | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for key in results[models[0]]["bookkeeping"]:
        note = " (requeued task; not in b)" if key == "done-check (written file)" else ""
        lines.append(f"| {key}{note} | " + " | ".join(f"{r['bookkeeping'][key] * 1e3:.2f} ms"
                                                      for r in results.values()) + " |")
    lines.append("| **bookkeeping** | " + " | ".join(f"**{rows[m][1] * 1e3:.2f} ms**" for m in models) + " |")
    lines.append("| inputs (10 x ShardContext.example) | " + " | ".join(f"{rows[m][2] * 1e3:.1f} ms"
                                                                       for m in models) + " |")
    lines.append("| compute: samples/s (Smooth.counts) | " + " | ".join(f"{rows[m][3]:,.0f}" for m in models) + " |")
    mean = results[models[0]]["startup"]["shard_samples"]
    lines.append(f"| **compute per shard c** (mean {mean:,.0f} samples) | " + " | ".join(
        f"**{rows[m][4]:,.1f} s**" for m in models) + " |")
    lines += ["", f"A shard has {SHARD_EXAMPLES} examples x {SHARD_SAMPLES:,} estimation samples; the first shard of "
              f"each block of examples also holds their 500 selection samples, so shards average {mean:,.0f}."]
    short = [m for m in models if results[m]["startup"]["samples"] < mean]
    if short:
        lines += ["", "Compute per shard extrapolated from the samples/s measured on " + ", ".join(
            f"{results[m]['startup']['samples']:,} samples ({m})" for m in short) +
            " after one warm-up batch, not timed over a whole shard."]
    lines += ["", "## Overhead fraction of a task", "",
              "(S + k b) / (S + k (b + c)), b = bookkeeping + inputs, k = shards that fit in task_minutes "
              "(at least one: a shard longer than the task makes the task that long, shown in minutes).", "",
              "| model, device | " + " | ".join(f"{m} min" for m in TASK_MINUTES) +
              " | smallest task_minutes for <= 10% |", "|---|" + "---|" * (len(TASK_MINUTES) + 1)]
    for model, (startup, book, inputs, _rate, compute) in rows.items():
        lines.append(f"| {model}, {args.device} | " + " | ".join(overhead_cells(startup, book + inputs, compute))
                     + " |")
    if args.estimate_samples_per_s and args.device == "cpu" and "rescnn" in rows:
        startup, book, inputs, _, _ = rows["rescnn"]
        compute = results["rescnn"]["startup"]["shard_samples"] / args.estimate_samples_per_s
        lines.append(f"| rescnn, GPU **estimate** at {args.estimate_samples_per_s:,.0f} samples/s | " + " | ".join(
            overhead_cells(startup, book + inputs, compute)) + " |")
        lines += ["", f"The estimate row is not a measurement: shard compute {compute:.2f} s from "
                  f"{args.estimate_samples_per_s:,.0f} samples/s (issue 17's figure for an H100), with the start-up, "
                  "bookkeeping and inputs measured here on CPU (a GPU node adds CUDA initialisation to S and "
                  "computes the clean inputs faster). Run `--device cuda` on a GPU node to measure it."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
