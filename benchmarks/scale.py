"""Bookkeeping at the 921-speaker scale: validation, status, reduce and a sequential round over 11,052 shard files.

The paper preset on librispeech921 with 30 points per speaker is 27,630 points, n0 = 500, n = 10,000, in shards
of 10 points x 2,500 samples: 11,052 shards per config. This benchmark fabricates such a config (a real plan
written by the real code, shard files written by the real record writer with counts drawn from a plausible
classifier: most samples on the true class, the rest spread over a few others), then times, each in a fresh
process with its peak memory:

- status: ``audiocert status`` of the config (every file validated once), and again (files it validated before
  are known by their inode, size and mtime and not read);
- reduce: ``reduce_config`` (every file read once, counts merged, certificates written);
- round: ``next_work`` of the same counts under the sequential algorithm (merge + plan the next round);
- per-shard bookkeeping: building, checking and atomically writing (with fsync) one record, and reading it back.

    .venv/bin/python benchmarks/scale.py --points-per-speaker 30 [--output benchmarks/results/bench-scale.md]

Targets (issue 17): status, reduce and a sequential round each under 10 s per config at 11,052 shards, memory under
1 GB. Fabricated shards are valid shards: they pass the same validation as computed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # test_trust's plan builder: the same plan structure make_plan writes


def fabricate(config_dir: Path, speakers: int, points_per_speaker: int, algorithm: str, seed: int = 0) -> dict:
    """Write plan.json and every round-0 shard of a paper-preset config of ``speakers`` classes."""
    from test_trust import consistent, small_config

    from audiocert.algorithms import make_algorithm
    from audiocert.kinds.certify import make_record, round_shards
    from audiocert.provenance import atomic_write_json, code_version, seal, stable_hash
    from audiocert.shards import shard_path

    config = small_config()
    config["dataset"].update(num_classes=speakers, name=f"synthetic{speakers}", test_crops_per_speaker=100)
    config["certify"].update(n0=500, n=10000, alpha=0.001, points_per_speaker=points_per_speaker, block_size=50,
                             algorithm=algorithm, shard={"examples": 10, "samples": 2500})
    examples = [s * 100 + k for s in range(speakers) for k in range(points_per_speaker)]
    inputs = [{"index": e, "label": e // 100, "digest": f"{e:016x}", "path": f"/data/{e}.flac", "offset": 0}
              for e in examples]
    plan = consistent({"kind": "certify", "code_version": code_version(), "label": f"bench-{algorithm}",
                       "config": config, "checkpoint": "/x.pt", "examples": examples, "inputs": inputs,
                       "inputs_digest": stable_hash([i["digest"] for i in inputs]), "shards": []})
    zeros = np.zeros((len(examples), speakers), np.int64)
    shards = round_shards(make_algorithm(plan["quantities"]), zeros, zeros, 10, 2500, first_index=0, round=0)
    plan["shards"] = [s.to_json() for s in shards]
    plan = seal(plan)
    atomic_write_json(config_dir / "plan.json", plan)
    rng = np.random.default_rng(seed)
    for shard in shards:
        counts = {}
        for phase, (lo, hi) in shard.ranges.items():
            rows = np.zeros((len(shard.examples), speakers), np.int64)
            for r, position in enumerate(shard.examples):
                label = inputs[position]["label"]
                others = rng.choice(speakers, size=4, replace=False)
                wrong = rng.binomial(hi - lo, 0.03)
                rows[r, others] = rng.multinomial(wrong, [0.25] * 4)
                rows[r, label] += hi - lo - wrong
            counts[phase] = rows
        chosen = [inputs[p] for p in shard.examples]
        record = make_record(plan, shard, counts, chosen, [1.0] * len(chosen), [2.0] * len(chosen), 0.5, "cpu")
        path = shard_path(config_dir, plan["config_hash"], shard.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")  # no fsync: setup only
    return plan


MEASURE = {
    "status": "from audiocert.status import sweep_status, format_status; format_status(D, sweep_status(D))",
    # status again: its first run kept what it validated (.shard-summaries.json); unchanged files are only statted
    "status again": "from audiocert.status import sweep_status, format_status; format_status(D, sweep_status(D))",
    "reduce": "import audiocert.kinds; from audiocert.kinds.certify import reduce_config; reduce_config(D)",
    "round": "from audiocert.shards import next_work, read_plan; next_work(D, read_plan(D))",
}


def measure(what: str, config_dir: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one operation in a fresh process (imports excluded from the time)."""
    code = (f"import time, resource\nfrom pathlib import Path\nD = Path({str(config_dir)!r})\n"
            f"import audiocert.launching.sweep, audiocert.kinds, audiocert.status\nstart = time.perf_counter()\n"
            f"{MEASURE[what]}\nprint(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "AUDIOCERT_PROGRESS_INTERVAL": "3600"})
    seconds, rss = out.stdout.split()[-2:]
    return float(seconds), float(rss) / 1024


def bookkeeping(config_dir: Path, plan: dict, repeats: int = 200) -> dict[str, float]:
    """Per-shard seconds of writing a record (build, check, atomic write with fsync) and of validating it."""
    from audiocert.kinds.certify import make_record
    from audiocert.provenance import atomic_write_json
    from audiocert.shards import check_shard_record, known_shards, shard_path, validate_shard_file

    shards = known_shards(config_dir, plan)
    speakers = int(plan["config"]["dataset"]["num_classes"])
    write = read = 0.0
    for k in range(repeats):
        shard = shards[k]
        inputs = [plan["inputs"][p] for p in shard.examples]
        counts = {}
        for phase, (lo, hi) in shard.ranges.items():
            rows = np.zeros((len(inputs), speakers), np.int64)
            rows[np.arange(len(inputs)), [i["label"] for i in inputs]] = hi - lo
            counts[phase] = rows
        path = shard_path(config_dir, plan["config_hash"], shard.index)
        start = time.perf_counter()
        record = make_record(plan, shard, counts, inputs, [1.0] * len(inputs), [2.0] * len(inputs), 0.5, "cpu")
        assert check_shard_record(record, plan, shards)[0] == ""
        atomic_write_json(path, record, compact=True)
        write += time.perf_counter() - start
        start = time.perf_counter()
        assert validate_shard_file(path, plan, shards)[0] is not None
        read += time.perf_counter() - start
    return {"write_s": write / repeats, "validate_s": read / repeats,
            "bytes": float(np.mean([shard_path(config_dir, plan["config_hash"], s.index).stat().st_size
                                    for s in shards[:repeats]]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speakers", type=int, default=921)
    parser.add_argument("--points-per-speaker", type=int, default=30)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory (removed)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="audiocert-scale-"))
    rows = []
    try:
        for algorithm in ("cohen", "sequential"):
            config_dir = work / algorithm
            shutil.rmtree(config_dir, ignore_errors=True)
            started = time.perf_counter()
            plan = fabricate(config_dir, args.speakers, args.points_per_speaker, algorithm)
            files = list((config_dir / "shards").glob("*.json"))
            size = sum(p.stat().st_size for p in files)
            print(f"{algorithm}: {len(files):,} shard files ({size / 2**20:.0f} MiB) fabricated in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            for what in (("status", "status again", "reduce") if algorithm == "cohen" else ("status", "round")):
                seconds, rss = measure(what, config_dir)
                rows.append((what, algorithm, len(files), size, seconds, rss))
                print(f"  {what}: {seconds:.2f} s, peak RSS {rss:.0f} MiB", flush=True)
            if algorithm == "cohen":
                book = bookkeeping(config_dir, plan)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    lines = [f"# Bookkeeping at scale ({args.speakers} speakers x {args.points_per_speaker} points, paper preset)", "",
             f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}; each operation "
             "in a fresh process (imports not timed), peak RSS of that process.", "",
             "| operation | algorithm | shard files | MiB on disk | seconds | peak RSS MiB | target |",
             "|---|---|---|---|---|---|---|"]
    for what, algorithm, files, size, seconds, rss in rows:
        ok = "met" if seconds < 10 and rss < 1024 else "NOT met"
        lines.append(f"| {what} | {algorithm} | {files:,} | {size / 2**20:,.0f} | {seconds:.2f} | {rss:,.0f} | "
                     f"< 10 s, < 1 GiB: {ok} |")
    lines += ["", "Per shard: writing a record (build, check, atomic write with fsync) "
              f"{book['write_s'] * 1e3:.1f} ms, validating it {book['validate_s'] * 1e3:.2f} ms, "
              f"{book['bytes'] / 1024:.1f} KiB on disk."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


if __name__ == "__main__":
    main()
