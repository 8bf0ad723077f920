"""Shards per second of one worker with its per-config context (checkpoint, dataset scan, smoother) kept across
shards, against rebuilding it for every shard (what ShardWorker did before: one `run_shards` call per shard).

Small shards make the context's cost visible: a tiny generated corpus, the small ResCNN (random weights), and
shards of 1 example x 10 samples. Rounds alternate the two modes (best of N), so machine drift hits both alike.

    .venv/bin/python benchmarks/shard_context.py --rounds 3
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from audiocert.checkpoint import build_model, save_checkpoint
from audiocert.corpus import generate_corpus
from audiocert.kinds.certify import make_plan
from audiocert.launching.planning import config_dir_for
from audiocert.provenance import code_version
from audiocert.shards import SHARD_DIR, clear_shard_contexts, run_shards, write_plan

REPO = Path(__file__).resolve().parents[1]


def setup(work: Path, points: int, n: int) -> tuple[Path, int]:
    corpus = generate_corpus(work / "corpus", num_speakers=4, utterances_per_speaker=6, seed=3, min_seconds=2.0,
                             max_seconds=3.0, progress=False)
    speakers = sorted(int(p.name) for p in (corpus / "train-clean-360").iterdir() if p.is_dir())
    model_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf/model/rescnn_small.yaml"))
    frontend_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf/frontend/deepspeaker.yaml"))
    torch.manual_seed(0)
    checkpoint = save_checkpoint(work / "model.pt", {
        "model": build_model(model_cfg, len(speakers)).state_dict(), "num_classes": len(speakers),
        "speakers": speakers, "config": {"model": model_cfg, "frontend": frontend_cfg}, "metrics": {}})
    overrides = [f"dataset.root={corpus}", "dataset.name=bench4", "dataset.num_classes=4", "dataset.generate=null",
                 "dataset.test_crops_per_speaker=4", f"certify.points_per_speaker={points}", "certify.n0=10",
                 f"certify.n={n}", "certify.shard.examples=1", "certify.shard.samples=10", "certify.batch_size=50",
                 f"checkpoint={checkpoint}", f"sweep.dir={work / 'sweep'}", "logger=disabled", "device=cpu"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("certify", overrides=overrides)
    plan = make_plan(cfg)
    config_dir = config_dir_for(Path(cfg.sweep.dir), plan)
    write_plan(plan, config_dir)
    return config_dir, len(plan["shards"])


def one_round(config_dir: Path, shards: int, cached: bool) -> float:
    shutil.rmtree(config_dir / SHARD_DIR, ignore_errors=True)
    clear_shard_contexts()
    start = time.perf_counter()
    for index in range(shards):  # one call per shard, as ShardWorker makes them
        if not cached:
            clear_shard_contexts()
        run_shards([(str(config_dir), index)], threads=1, progress=False)
    return shards / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--points", type=int, default=2, help="certified points per speaker (4 speakers)")
    parser.add_argument("--n", type=int, default=20, help="estimation samples per point")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_dir, shards = setup(Path(tmp), args.points, args.n)
        best = {"rebuilt per shard": 0.0, "kept per config": 0.0}
        for _ in range(args.rounds):
            best["rebuilt per shard"] = max(best["rebuilt per shard"], one_round(config_dir, shards, cached=False))
            best["kept per config"] = max(best["kept per config"], one_round(config_dir, shards, cached=True))
    print(f"code {code_version()}, torch {torch.__version__}, 1 thread, {shards} shards of 1 example x 10 samples, "
          f"best of {args.rounds} interleaved rounds")
    for mode, rate in best.items():
        print(f"  context {mode:<17}: {rate:7.2f} shards/s")
    print(f"  speed-up: {best['kept per config'] / best['rebuilt per shard']:.1f}x")


if __name__ == "__main__":
    main()
