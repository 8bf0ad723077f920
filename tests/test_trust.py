"""Trustworthy runs (fast part): independent noise blocks, strict shard validation, damaged plans, safe names,
writes that fail loudly. The end-to-end failure cases, through the real CLI, are in test_failures.py."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from audiocert.kinds.certify import certified_quantities, make_shards, reduce_config, select_examples
from audiocert.provenance import (
    SEAL_KEY,
    CorruptFileError,
    WriteError,
    atomic_write_json,
    check_safe_name,
    inside,
    seal,
    stable_hash,
)
from audiocert.sampler import MAX_BLOCKS, MAX_EXAMPLES, PHASES, block_seed, block_seeds, feistel32
from audiocert.shards import (
    PLAN_FILE,
    SHARD_FORMAT,
    IncompleteSweepError,
    encode_counts,
    inventory,
    known_shards,
    read_plan,
    shard_path,
    validate_shard_file,
    write_plan,
)
from audiocert.status import config_status


# --------------------------------------------------------------------------------------------------------------
# Noise streams: no two blocks of a plan share one
# --------------------------------------------------------------------------------------------------------------
def test_torch_cpu_generator_keeps_only_32_bits_of_a_seed():
    """Why block seeds are 32-bit words: a 64-bit seed s and s + 2**32 give the same CPU stream."""
    s = 12345
    a = torch.randn(8, generator=torch.Generator().manual_seed(s))
    b = torch.randn(8, generator=torch.Generator().manual_seed(s + 2**32))
    assert torch.equal(a, b)


def test_no_two_blocks_of_a_max_plan_share_a_stream():
    """Every (example, phase, block) of the `max` preset on the seed's 10-speaker test set (1,000 crops per
    speaker, 30 points each, n = 100,000 in blocks of 50) gets its own seed, hence its own stream."""
    n, block_size = 100_000, 50
    examples = select_examples(10, 1000, 30)
    blocks = -(-n // block_size)
    ex = np.repeat(examples, len(PHASES) * blocks)
    phase = np.tile(np.repeat(np.arange(len(PHASES)), blocks), len(examples))
    block = np.tile(np.arange(blocks), len(examples) * len(PHASES))
    for seed in (0, 1, 2**40 + 7):
        seeds = block_seeds(seed, ex, phase, block)
        assert seeds.dtype == np.uint32 and np.unique(seeds).size == seeds.size == 300 * len(PHASES) * 2000
    # The pair the 63-bit hash seeds collided on (seed 0): example 566 block 149 vs example 637 block 135.
    assert block_seed(0, 566, "estimation", 149) != block_seed(0, 637, "estimation", 135)
    a = torch.randn(50, 10, generator=torch.Generator().manual_seed(block_seed(0, 566, "estimation", 149)))
    b = torch.randn(50, 10, generator=torch.Generator().manual_seed(block_seed(0, 637, "estimation", 135)))
    assert not torch.equal(a, b)


def test_block_seeds_are_a_bijection_and_refuse_what_they_cannot_key():
    rng = np.random.default_rng(0)
    words = rng.choice(2**32, size=500_000, replace=False)
    assert np.unique(feistel32(5, words)).size == words.size  # distinct in, distinct out
    assert not np.array_equal(feistel32(5, words), feistel32(6, words))
    low = np.arange(1 << 20)  # a whole 20-bit range maps to 2**20 distinct words
    assert np.unique(feistel32(0, low)).size == low.size
    with pytest.raises(ValueError, match="block_size"):
        block_seed(0, 0, "selection", MAX_BLOCKS)
    with pytest.raises(ValueError, match="example index"):
        block_seed(0, MAX_EXAMPLES, "selection", 0)
    with pytest.raises(ValueError, match=r"seed=-1"):
        block_seed(-1, 0, "selection", 0)


# --------------------------------------------------------------------------------------------------------------
# Shard validation: types and content, not only sums
# --------------------------------------------------------------------------------------------------------------
def small_config() -> dict:
    """The resolved config of small_plan: 4 test points x 3 classes, n0 = 10, n = 20, shards of 2 x 10."""
    return {"dataset": {"num_classes": 3, "name": "tiny", "test_crops_per_speaker": 10}, "frontend": None,
            "representation": {"stage": "mfbe"}, "smoothing": {"sigma": 0.25},
            "certify": {"n0": 10, "n": 20, "alpha": 0.01, "algorithm": "cohen", "points_per_speaker": 1,
                        "block_size": 10, "bf16": False, "shard": {"examples": 2, "samples": 10},
                        "sequential": {"first": 20, "growth": 2.0, "stop_alpha": 0.001, "last_share": 0.75,
                                       "radii": None}},
            "seed": 0, "device": "cpu", "launcher": {"name": "local"}}


def consistent(plan: dict, device_type: str = "cpu") -> dict:
    """``plan`` with its quantities and config hash recomputed from its config (as make_plan does) and sealed."""
    quantities = certified_quantities(plan["config"], device_type=device_type)
    quantities["checkpoint_digest"] = "x"
    plan.update(quantities=quantities, config_hash=stable_hash(quantities))
    plan.pop(SEAL_KEY, None)
    return seal(plan)


def small_plan() -> dict:
    """A sealed plan of 4 examples x 3 classes, n0 = 10, n = 20, in shards of 2 examples x 10 samples."""
    examples = [3, 9, 14, 20]
    inputs = [{"index": e, "label": k % 3, "digest": f"{e:016x}", "path": f"/data/{e}.flac", "offset": 0}
              for k, e in enumerate(examples)]
    shards = [s.to_json() for s in make_shards(4, 10, 20, 2, 10)]
    return consistent({"kind": "certify", "code_version": "test", "label": "tiny-mfbe-sigma0.25",
                       "config": small_config(), "checkpoint": "/x.pt", "examples": examples, "inputs": inputs,
                       "inputs_digest": stable_hash([i["digest"] for i in inputs]), "shards": shards})


def shard_record(plan: dict, index: int) -> dict:
    """A counts record of shard ``index`` with dense count rows (readable; ``sealed_record`` makes the file)."""
    shard = plan["shards"][index]
    inputs = [plan["inputs"][p] for p in shard["examples"]]
    width = {p: hi - lo for p, (lo, hi) in shard["ranges"].items()}
    return {"format": SHARD_FORMAT, "kind": "certify", "config_hash": plan["config_hash"],
            "code_version": plan["code_version"],
            **shard, "dataset_indices": [i["index"] for i in inputs],
            "labels": [i["label"] for i in inputs], "input_digests": [i["digest"] for i in inputs],
            "stage_norms": [1.5] * len(inputs), "waveform_norms": [2.5] * len(inputs),
            "counts": {phase: [[w - 1, 1, 0] if phase == "estimation" else [w, 0, 0] for _ in inputs]
                       for phase, w in width.items()},
            "seed": 0, "samples": len(inputs) * sum(width.values()), "elapsed_s": 0.5,
            "device": "cpu", "device_type": "cpu", "host": "node", "finished_at": 1.7e9}


def sealed_record(record: dict) -> dict:
    """A record with dense count rows as a shard writes it: counts sparse, content sealed."""
    return seal({**record, "counts": {phase: encode_counts(rows) for phase, rows in record["counts"].items()}})


def dense(record: dict, classes: int = 3) -> dict:
    """The count rows of a sealed record, dense again."""
    out = {}
    for phase, table in record["counts"].items():
        rows = np.zeros((len(record["examples"]), classes), dtype=int)
        rows[table["rows"], table["classes"]] = table["counts"]
        out[phase] = rows.tolist()
    return out


def write_shard(path: Path, record: dict) -> None:
    atomic_write_json(path, sealed_record(record), compact=True)


def write_config(tmp_path: Path, plan: dict) -> Path:
    config_dir = tmp_path / "cfg"
    atomic_write_json(config_dir / PLAN_FILE, plan)
    for index in range(len(plan["shards"])):
        write_shard(shard_path(config_dir, plan["config_hash"], index), shard_record(plan, index))
    return config_dir


DAMAGE = [
    ("labels", lambda r: r.update(labels=[2, 2]), "labels"),
    ("label out of range", lambda r: r.update(labels=[7, 1]), "labels"),
    ("dataset indices", lambda r: r.update(dataset_indices=[3, 10]), "dataset indices"),
    ("input digests", lambda r: r.update(input_digests=["f" * 16, r["input_digests"][1]]), "audio changed"),
    ("float counts", lambda r: r["counts"]["selection"][0].__setitem__(0, 10.0), "non-negative integers"),
    ("bool counts", lambda r: r["counts"].update(selection=[[True] * 3, [10, 0, 0]]), "non-negative integers"),
    ("negative counts", lambda r: r["counts"]["estimation"][0].__setitem__(1, -1), "non-negative integers"),
    ("counts that do not add up", lambda r: r["counts"]["estimation"][0].__setitem__(1, 5), "do not add up"),
    ("nan norms", lambda r: r.update(stage_norms=[float("nan"), 1.0]), "stage_norms"),
    ("infinite waveform norms", lambda r: r.update(waveform_norms=[float("inf"), 1.0]), "waveform_norms"),
    ("device type", lambda r: r.update(device_type="cuda"), "device type 'cuda'"),
    ("seed", lambda r: r.update(seed=1), "seed 1"),
    ("index", lambda r: r.update(index=True), "shard index"),
    ("no finish time", lambda r: r.pop("finished_at"), "finished_at"),
    ("samples", lambda r: r.update(samples=3), "samples=3"),
]


def write_damaged_shard(tmp_path: Path, index: int, damage, needle: str) -> tuple[Path, Path]:
    """Write shard `index` of small_plan(), check it is accepted, damage it, check it is refused for `needle`."""
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    path = shard_path(config_dir, plan["config_hash"], index)
    record = shard_record(plan, index)
    shards = known_shards(config_dir, plan)
    assert validate_shard_file(path, plan, shards) == (sealed_record(record), "")
    damage(record)
    write_shard(path, record)  # sealed again: what is refused is the content, not the seal
    found, why = validate_shard_file(path, plan, shards)
    assert found is None and needle in why, why
    return config_dir, path


@pytest.mark.parametrize("name,damage,needle", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_shard_validation_refuses_wrong_content_naming_the_file(tmp_path, name, damage, needle):
    config_dir, path = write_damaged_shard(tmp_path, 0, damage, needle)
    with pytest.raises(IncompleteSweepError) as error:
        reduce_config(config_dir)
    assert str(path) in str(error.value) and needle in str(error.value)
    assert not (config_dir / "certificates.tsv").exists()


def test_valid_shards_reduce_with_the_plan_labels_and_certified_norms(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    assert inventory(config_dir).complete
    summary = reduce_config(config_dir)
    assert summary["num_points"] == 4 and summary["median_waveform_norm"] in (None, 2.5)
    provenance = json.loads((config_dir / "provenance.json").read_text())
    assert provenance["device_type"] == "cpu" and provenance["inputs_digest"] == plan["inputs_digest"]


# --------------------------------------------------------------------------------------------------------------
# Damaged plans, changed audio, safe names
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ['{"config_hash": "0123', "[]", '{"config_hash": "../../etc"}', ""])
def test_a_damaged_plan_is_named_with_how_to_recover(tmp_path, content):
    config_dir = write_config(tmp_path, small_plan())
    (config_dir / PLAN_FILE).write_text(content)
    for read in (read_plan, reduce_config):
        with pytest.raises(CorruptFileError) as error:
            read(config_dir)
        assert str(config_dir / PLAN_FILE) in str(error.value) and "rerun the `audiocert certify`" in str(error.value)


def test_write_plan_rewrites_a_damaged_plan_and_refuses_changed_audio(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    (config_dir / PLAN_FILE).write_text('{"trunc')
    assert write_plan(copy.deepcopy(plan), config_dir) == plan and read_plan(config_dir) == plan
    assert inventory(config_dir).complete  # the shards validate against the rewritten plan
    changed = copy.deepcopy(plan)
    changed["inputs"][2]["digest"] = "e" * 16
    changed["inputs_digest"] = stable_hash([i["digest"] for i in changed["inputs"]])
    changed = seal(changed)
    with pytest.raises(ValueError, match=r"test audio of .* changed since it was planned: /data/14\.flac"):
        write_plan(changed, config_dir)
    assert read_plan(config_dir) == plan


def test_a_new_code_version_sets_the_old_results_aside(tmp_path):
    """Planned again by other code, a config keeps nothing of the old version in place: a stale certificates.tsv
    would read as reduced, and old shard files would not validate (those beyond the new rounds for good)."""
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    reduce_config(config_dir)
    atomic_write_json(config_dir / "jobs.json", {"executor": "local"})
    stray = len(plan["shards"]) + 3  # a shard index the new plan never reaches
    write_shard(shard_path(config_dir, plan["config_hash"], stray), shard_record(plan, 1) | {"index": stray})
    old_certificates = (config_dir / "certificates.tsv").read_text()
    newer = seal(copy.deepcopy(plan) | {"code_version": "new/er"})
    assert write_plan(newer, config_dir) == newer and read_plan(config_dir) == newer
    assert sorted(p.name for p in config_dir.iterdir()) == ["jobs.json", "plan.json", "previous"]
    [previous] = (config_dir / "previous").iterdir()
    assert previous.name.endswith("-test") and read_plan(previous) == plan
    assert (previous / "certificates.tsv").read_text() == old_certificates
    assert len(list((previous / "shards").glob("*.json"))) == len(plan["shards"]) + 1
    found = inventory(config_dir, newer)
    assert not found.records and not found.invalid and found.missing == list(range(len(newer["shards"])))
    assert config_status(config_dir)["reduced"] is False
    # Planned again by the same code: nothing moves. By a third version: the second version's results move too,
    # under a name made safe for a directory.
    assert write_plan(copy.deepcopy(newer), config_dir) == newer and len(list((config_dir / "previous").iterdir())) == 1
    write_config(tmp_path, newer)
    write_plan(seal(copy.deepcopy(plan) | {"code_version": "third"}), config_dir)
    assert sorted(p.name.rsplit("-", 1)[1] for p in (config_dir / "previous").iterdir()) == ["new_er", "test"]


def test_names_that_would_leave_their_directory_are_refused(tmp_path):
    for bad in ("../../x", "a/b", "..", ".hidden", "", "x\ny"):
        with pytest.raises(ValueError, match="sweep.name"):
            check_safe_name(bad, "sweep.name")
    assert check_safe_name("seed10-all_sigma0.25,n=1e4", "sweep.name")
    with pytest.raises(ValueError, match="outside"):
        inside(tmp_path / ".." / "elsewhere.png", tmp_path)
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    crafted = seal(dict(plan, label="../../../escape"))
    (config_dir / PLAN_FILE).write_text(json.dumps(crafted))
    with pytest.raises(CorruptFileError, match="label"):
        read_plan(config_dir)


# --------------------------------------------------------------------------------------------------------------
# Writes on a full or read-only file system fail loudly, naming the file, and keep what was there
# --------------------------------------------------------------------------------------------------------------
@contextmanager
def mounted_tmpfs(path: Path, options: str):
    """A real small or read-only file system (tmpfs) at ``path``; needs root, which CI and `make test` have."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_full_disk_and_read_only_directory_raise_write_errors_naming_the_file(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "size=16k") as small:
        atomic_write_json(small / "kept.json", {"a": 1})
        with pytest.raises(OSError), open(small / "filler", "wb") as handle:  # fill the file system
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        with pytest.raises(WriteError, match=r"cannot write .*kept\.json: No space left on device .*full"):
            atomic_write_json(small / "kept.json", {"a": 2, "pad": "x" * 8192})
        assert json.loads((small / "kept.json").read_text()) == {"a": 1}  # the old result is intact
        assert not list(small.glob(".*.tmp"))
    with mounted_tmpfs(tmp_path / "ro", "ro,size=16k") as ro:
        with pytest.raises(WriteError, match=r"cannot write .*ro/x\.json: Read-only file system"):
            atomic_write_json(ro / "x.json", {})


# --------------------------------------------------------------------------------------------------------------
# The device type decides the base classifier (fp32 CPU vs bf16 CUDA): it is part of the config and of every shard
# --------------------------------------------------------------------------------------------------------------
def test_device_type_is_part_of_the_config_hash_and_shards_elsewhere_are_refused():
    from hydra import compose, initialize_config_dir

    from audiocert.kinds.certify import certified_quantities
    from audiocert.shards import ShardContext

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cpu = certified_quantities(compose("certify", ["device=cpu", "certify.bf16=true"]))
        cuda = certified_quantities(compose("certify", ["device=cuda", "certify.bf16=true"]))
        slurm_gpu = certified_quantities(compose("certify", ["launcher=slurm", "launcher.gpus_per_task=1"]))
    assert (cpu["device_type"], cuda["device_type"], slurm_gpu["device_type"]) == ("cpu", "cuda", "cuda")
    assert stable_hash(cpu) != stable_hash(cuda)
    plan = small_plan()
    plan["config"]["device"] = "cpu"
    plan["quantities"]["device_type"] = "cuda"  # planned for GPU nodes; this process has only a CPU
    with pytest.raises(RuntimeError, match="planned for device type 'cuda' but this process computes on 'cpu'"):
        ShardContext(plan)


def test_a_resealed_plan_whose_quantities_disagree_with_its_config_is_refused_under_python_O(tmp_path):
    """With asserts stripped (PYTHONOPTIMIZE=1, as some sites run Python) a plan whose quantities.sigma was doubled,
    rehashed and resealed must still be refused: its checks are not asserts (radii would silently double)."""
    import subprocess
    import sys

    plan = small_plan()
    plan["quantities"]["sigma"] = 2 * plan["quantities"]["sigma"]
    plan["config_hash"] = stable_hash(plan["quantities"])
    plan.pop(SEAL_KEY, None)
    config_dir = write_config(tmp_path, seal(plan))
    code = ("import sys, audiocert.kinds\nfrom audiocert.shards import read_plan\n"
            "from audiocert.provenance import CorruptFileError\ntry:\n    read_plan(sys.argv[1])\n"
            "except CorruptFileError as e:\n    print('refused:', e)\nelse:\n    print('accepted')")
    result = subprocess.run([sys.executable, "-O", "-c", code, str(config_dir)], capture_output=True, text=True,
                            timeout=120)
    assert "refused:" in result.stdout and "sigma" in result.stdout, result.stdout + result.stderr


def test_an_edited_certificates_table_is_refused_by_every_reader(tmp_path):
    """certificates.tsv is checked against the digest its sealed summary.json records before an attack, a
    perceptibility plan or the report uses it: a radius edited to 9.5 is refused (naming the file and `audiocert
    reduce`), and `audiocert reduce` rebuilds the table from the sealed shards."""
    from audiocert.kinds.certify import planned_certificates, reduce_config, trusted_certificates
    from audiocert.reporting.results import load_sweeps

    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    reduce_config(config_dir)
    honest = trusted_certificates(config_dir)
    assert planned_certificates(config_dir, plan) == {r["idx"]: r for r in honest}
    path = config_dir / "certificates.tsv"
    lines = path.read_text().splitlines()
    edited = [lines[0]] + ["\t".join([*row.split("\t")[:3], "9.5", *row.split("\t")[4:]]) for row in lines[1:]]
    path.write_text("\n".join(edited) + "\n")
    for read in (lambda: trusted_certificates(config_dir), lambda: planned_certificates(config_dir, plan)):
        with pytest.raises(CorruptFileError, match=r"certificates.tsv does not match .*`audiocert reduce"):
            read()
    results, damaged = load_sweeps([tmp_path])
    assert not results and damaged and "certificates.tsv does not match" in damaged[0][1]
    reduce_config(config_dir)  # rebuilt from the sealed shards
    assert trusted_certificates(config_dir) == honest


def test_status_rows_of_configs_with_one_label_say_what_differs(tmp_path):
    """Two configs of one label (Cohen and sequential, or two sample counts) read as two rows that differ."""
    from audiocert.status import distinct_labels

    base = {"label": "tiny4-mfbe-sigma0.25", "config_dir": str(tmp_path / "a"),
            "quantities": {"n": 60, "algorithm": "cohen", "sigma": 0.25}}
    other = {**base, "config_dir": str(tmp_path / "b"), "quantities": {**base["quantities"], "n": 200}}
    third = {"label": "tiny4-mfbe-sigma0.5", "config_dir": str(tmp_path / "c"), "quantities": base["quantities"]}
    rows = distinct_labels([dict(base), dict(other), dict(third)])
    assert [r["label"] for r in rows] == ["tiny4-mfbe-sigma0.25 (n=60)", "tiny4-mfbe-sigma0.25 (n=200)",
                                          "tiny4-mfbe-sigma0.5"]
