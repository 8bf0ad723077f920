"""Plans, rounds and shards (fast, no torch model, no checkpoint): how work is cut, how the plan and round files
are checked, how shard files are classified and merged, and how rounds follow one another until every point is
settled. The fake plan and shard records come from test_trust; the shard worker itself is in test_pipeline.py."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_trust import (
    consistent,
    dense,
    sealed_record,
    shard_record,
    small_plan,
    write_config,
    write_damaged_shard,
    write_shard,
)

from audiocert.algorithms import Cohen, Sequential, make_algorithm
from audiocert.kinds.certify import COUNTED_PHASES, make_shards, merge_counts, round_shards, settled
from audiocert.launching.slurm_submission import ended_without_result
from audiocert.provenance import CorruptFileError, atomic_write_json, seal
from audiocert.shards import (
    PLAN_FILE,
    IncompleteSweepError,
    Shard,
    check_shard_list,
    cut_shards,
    inventory,
    known_shards,
    next_work,
    read_plan,
    round_path,
    run_shard,
    shard_path,
    validate_shard_file,
)

Ranges = Mapping[str, tuple[int, int]]
Label = Callable[[int, str, int], int]  # (plan position, phase, sample index) -> class of that sample


# --------------------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------------------
def record_for(plan: dict, shard: Shard, label: Label) -> dict:
    """A valid counts file of ``shard`` (of any round), the class of every sample given by ``label``."""
    # shard_record looks the shard up by its index: hand it just this one, then replace its placeholder counts.
    record = shard_record({**plan, "shards": {shard.index: shard.to_json()}}, shard.index)
    classes = int(plan["config"]["dataset"]["num_classes"])
    record["counts"] = {phase: [np.bincount([label(p, phase, i) for i in range(lo, hi)], minlength=classes).tolist()
                                for p in shard.examples]
                        for phase, (lo, hi) in shard.ranges.items()}
    return record


def write_records(config_dir: Path, plan: dict, indices: Sequence[int], label: Label) -> None:
    shards = known_shards(config_dir, plan)
    for index in indices:
        write_shard(shard_path(config_dir, plan["config_hash"], index), record_for(plan, shards[index], label))


SEQUENTIAL = {"first": 20, "growth": 2.0, "stop_alpha": 0.001, "radii": [0.25, 0.5, 1.0]}


def sequential_plan() -> dict:
    """small_plan with the sequential algorithm: n0 = 40, n = 160, looks at 20, 40, 80, 160 samples (selection at
    20, 40), blocks of 10, and its round 0 (every point: selection and estimation [0, 20)) cut as make_plan does."""
    plan = small_plan()
    plan["config"]["certify"].update(n0=40, n=160, algorithm="sequential", block_size=10,
                                     sequential={**SEQUENTIAL, "last_share": None},
                                     shard={"examples": 2, "samples": 10})
    plan = consistent(plan)
    zeros = np.zeros((len(plan["examples"]), 3), np.int64)
    plan["shards"] = [s.to_json() for s in round_shards(make_algorithm(plan["quantities"]), zeros, zeros, 2, 10,
                                                        first_index=0, round=0)]
    return seal(plan)


def sequential_label(position: int, phase: str, i: int) -> int:
    """Samples of four kinds of point: 0 and 3 always class 0 (certified, stop early on estimation); 1 selects
    class 0 but its estimation samples are all class 1 (settled after round 0: it abstains); 2 cycles through the
    3 classes (selection goes on to n0, then estimation keeps looking)."""
    if position == 1:
        return 0 if phase == "selection" else 1
    if position == 2:
        return i % 3
    return 0


# --------------------------------------------------------------------------------------------------------------
# cut_shards / make_shards: every (point, phase) range tiled exactly once
# --------------------------------------------------------------------------------------------------------------
def check_tiling(shards: list[Shard], groups: Sequence[tuple[Sequence[int], Ranges]], examples_per_shard: int,
                 samples_per_shard: int, first_index: int, round: int) -> None:
    """The invariants of a cut: consecutive indices, bounded shards, and every non-empty (point, phase) range of
    the groups covered by the shards with no gap and no overlap (nothing else covered)."""
    assert [s.index for s in shards] == list(range(first_index, first_index + len(shards)))
    assert all(s.round == round for s in shards)
    wanted: dict[tuple[int, str], tuple[int, int]] = {}
    for points, ranges in groups:
        wanted.update({(p, phase): r for p in points for phase, r in ranges.items() if r[1] > r[0]})
    covered: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for shard in shards:
        assert 1 <= len(shard.examples) <= examples_per_shard and len(set(shard.examples)) == len(shard.examples)
        assert shard.ranges, "a shard with no samples"
        assert all(0 < hi - lo <= samples_per_shard for lo, hi in shard.ranges.values())  # empty ranges dropped
        assert shard.samples == len(shard.examples) * sum(hi - lo for lo, hi in shard.ranges.values())
        for p in shard.examples:
            for phase, r in shard.ranges.items():
                covered.setdefault((p, phase), []).append(r)
    assert set(covered) == set(wanted)
    for key, ranges in covered.items():
        ranges.sort()
        assert ranges[0][0] == wanted[key][0] and ranges[-1][1] == wanted[key][1], (key, ranges)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False)), (key, ranges)  # no gap/overlap
    assert sum(s.samples for s in shards) == sum(hi - lo for lo, hi in wanted.values())


def test_make_shards_of_a_small_plan_are_exactly_these():
    shards = make_shards(4, 10, 20, 2, 10)
    assert [(s.index, s.examples, s.ranges, s.round) for s in shards] == [
        (0, (0, 1), {"selection": (0, 10), "estimation": (0, 10)}, 0),
        (1, (0, 1), {"estimation": (10, 20)}, 0),  # selection's second chunk [10, 10) is empty: dropped
        (2, (2, 3), {"selection": (0, 10), "estimation": (0, 10)}, 0),
        (3, (2, 3), {"estimation": (10, 20)}, 0),
    ]


@pytest.mark.parametrize("num_examples,n0,n,examples_per_shard,samples_per_shard", [
    (4, 10, 20, 2, 10), (5, 7, 23, 2, 10), (3, 30, 5, 3, 10), (1, 1, 1, 1, 1), (7, 100, 1000, 3, 64),
    (6, 10, 10, 10, 100), (2, 13, 13, 1, 4),
])
def test_make_shards_tile_every_point_and_phase(num_examples, n0, n, examples_per_shard, samples_per_shard):
    shards = make_shards(num_examples, n0, n, examples_per_shard, samples_per_shard)
    groups = [(range(num_examples), {"selection": (0, n0), "estimation": (0, n)})]
    check_tiling(shards, groups, examples_per_shard, samples_per_shard, 0, 0)
    # Blocks of points times chunks of the longer phase, nothing more.
    assert len(shards) == math.ceil(num_examples / examples_per_shard) * math.ceil(max(n0, n) / samples_per_shard)


def test_cut_shards_tile_random_groups():
    """A seeded sweep of random rounds: disjoint groups of points, each with its own (possibly empty) ranges."""
    rng = np.random.default_rng(2024)
    for _ in range(300):
        num_points = int(rng.integers(1, 12))
        order = rng.permutation(num_points)
        cuts = np.sort(rng.choice(np.arange(1, num_points + 1), size=min(num_points, int(rng.integers(1, 4))),
                                  replace=False))
        groups = []
        for points in np.split(order, cuts[:-1]):
            ranges = {}
            for phase in ("selection", "estimation"):
                if rng.random() < 0.8:
                    lo = int(rng.integers(0, 50))
                    ranges[phase] = (lo, lo + int(rng.integers(0, 40)))  # sometimes empty
            if not any(hi > lo for lo, hi in ranges.values()):
                ranges["estimation"] = (0, int(rng.integers(1, 30)))
            groups.append(([int(p) for p in points], ranges))
        examples_per_shard, samples_per_shard = int(rng.integers(1, 6)), int(rng.integers(1, 25))
        first_index, round = int(rng.integers(0, 20)), int(rng.integers(0, 4))
        shards = cut_shards(groups, examples_per_shard, samples_per_shard, first_index, round)
        check_tiling(shards, groups, examples_per_shard, samples_per_shard, first_index, round)
        # A round file must accept what a cut produces (with the plan's example count).
        check_shard_list([s.to_json() for s in shards], first_index, num_points, round, COUNTED_PHASES)


def test_a_group_whose_ranges_are_all_empty_gets_no_shard():
    assert cut_shards([([0, 1], {"selection": (5, 5), "estimation": (9, 9)})], 2, 10) == []
    shards = cut_shards([([0], {"selection": (5, 5)}), ([1], {"estimation": (0, 3)})], 2, 10, first_index=7)
    assert [(s.index, s.examples, s.ranges) for s in shards] == [(7, (1,), {"estimation": (0, 3)})]


def test_shard_json_round_trip_and_samples():
    shard = Shard(12, (1, 2, 3), {"selection": (0, 10), "estimation": (5, 25)}, round=2)
    assert shard.samples == 3 * (10 + 20)
    data = json.loads(json.dumps(shard.to_json()))  # as written to and read from plan.json / rounds/
    assert data == {"index": 12, "round": 2, "examples": [1, 2, 3],
                    "ranges": {"selection": [0, 10], "estimation": [5, 25]}}
    assert Shard.from_json(data) == shard
    assert Shard(0, (4,), {"estimation": (100, 101)}).samples == 1


# --------------------------------------------------------------------------------------------------------------
# round_shards: what the algorithm asks for, from the counts so far
# --------------------------------------------------------------------------------------------------------------
def test_cohen_round_zero_is_one_group_and_complete_counts_need_nothing():
    cohen = Cohen(n0=10, n=20, alpha=0.01, sigma=0.25)
    zeros = np.zeros((4, 3), np.int64)
    shards = round_shards(cohen, zeros, zeros, 2, 10, first_index=0, round=0)
    assert shards == make_shards(4, 10, 20, 2, 10)
    assert shards == cut_shards([(range(4), {"selection": (0, 10), "estimation": (0, 20)})], 2, 10)
    selection = np.tile([10, 0, 0], (4, 1))
    estimation = np.tile([15, 3, 2], (4, 1))
    assert round_shards(cohen, selection, estimation, 2, 10, first_index=4, round=1) == []


def test_cohen_partial_counts_ask_for_the_rest_and_fewer_targets_are_refused():
    cohen = Cohen(n0=10, n=20, alpha=0.01, sigma=0.25)
    selection = np.array([[10, 0, 0], [10, 0, 0], [0, 0, 0]])
    estimation = np.array([[20, 0, 0], [5, 5, 0], [0, 0, 0]])
    shards = round_shards(cohen, selection, estimation, 2, 10, first_index=4, round=1)
    assert [(s.index, s.examples, s.ranges, s.round) for s in shards] == [
        (4, (1,), {"estimation": (10, 20)}, 1),  # from its current total, not from 0
        (5, (2,), {"selection": (0, 10), "estimation": (0, 10)}, 1),
        (6, (2,), {"estimation": (10, 20)}, 1),
    ]
    with pytest.raises(ValueError, match="fewer samples than already counted"):
        round_shards(cohen, selection, np.array([[30, 0, 0], [0] * 3, [0] * 3]), 2, 10, first_index=0, round=1)


def test_sequential_round_asks_only_unsettled_points_from_their_totals():
    algorithm = make_algorithm(sequential_plan()["quantities"])
    assert isinstance(algorithm, Sequential) and algorithm.looks == (20, 40, 80, 160)
    # After round 0 (20 + 20 samples each): points 0 and 3 certify and look again at 40 estimation samples;
    # point 1 abstains (settled); point 2's selection is undecided, so it draws selection up to n0 = 40 first.
    selection = np.array([[20, 0, 0], [20, 0, 0], [7, 7, 6], [20, 0, 0]])
    estimation = np.array([[20, 0, 0], [0, 20, 0], [7, 7, 6], [20, 0, 0]])
    assert algorithm.targets(selection[1], estimation[1]) == (20, 20)
    shards = round_shards(algorithm, selection, estimation, 2, 10, first_index=4, round=1)
    assert [(s.index, s.examples, s.ranges, s.round) for s in shards] == [
        (4, (0, 3), {"estimation": (20, 30)}, 1),  # 0 and 3 ask for the same ranges: they share shards
        (5, (0, 3), {"estimation": (30, 40)}, 1),
        (6, (2,), {"selection": (20, 30)}, 1),
        (7, (2,), {"selection": (30, 40)}, 1),
    ]
    assert all(1 not in s.examples for s in shards)


# --------------------------------------------------------------------------------------------------------------
# read_plan: malformed shard lists are refused, naming plan.json and how to recover
# --------------------------------------------------------------------------------------------------------------
def swap_indices(shards: list) -> None:
    shards[0]["index"], shards[1]["index"] = shards[1]["index"], shards[0]["index"]


BAD_SHARD_LISTS = [
    ("indices out of order", swap_indices),
    ("indices not from 0", lambda s: [spec.update(index=spec["index"] + 1) for spec in s]),
    ("repeated index", lambda s: s[1].update(index=0)),
    ("bool index", lambda s: s[1].update(index=True)),
    ("bool index 0", lambda s: s[0].update(index=False)),
    ("example out of range", lambda s: s[2].update(examples=[2, 4])),
    ("negative example", lambda s: s[0].update(examples=[-1, 1])),
    ("bool example", lambda s: s[0].update(examples=[False, True])),
    ("no examples", lambda s: s[0].update(examples=[])),
    ("unknown phase", lambda s: s[1].update(ranges={"certification": [10, 20]})),
    ("empty range", lambda s: s[1].update(ranges={"estimation": [10, 10]})),
    ("reversed range", lambda s: s[1].update(ranges={"estimation": [20, 10]})),
    ("negative range", lambda s: s[0]["ranges"].update(selection=[-5, 10])),
    ("float range", lambda s: s[0]["ranges"].update(selection=[0, 10.0])),
    ("three-number range", lambda s: s[0]["ranges"].update(selection=[0, 5, 10])),
    ("ranges not a dict", lambda s: s[0].update(ranges=[[0, 10]])),
    ("no ranges key", lambda s: s[0].pop("ranges")),
    ("shard not a dict", lambda s: s.__setitem__(0, [0, [0, 1]])),
]


@pytest.mark.parametrize("damage", [d[1] for d in BAD_SHARD_LISTS], ids=[d[0] for d in BAD_SHARD_LISTS])
def test_read_plan_refuses_malformed_shard_lists(tmp_path, damage):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    assert read_plan(config_dir) == plan
    damage(plan["shards"])
    (config_dir / PLAN_FILE).write_text(json.dumps(seal(plan)))
    with pytest.raises(CorruptFileError) as error:
        read_plan(config_dir)
    message = str(error.value)
    assert str(config_dir / PLAN_FILE) in message and "not a valid plan" in message
    assert "rerun the `audiocert certify`" in message


@pytest.mark.parametrize("damage", [lambda s: s[0].pop("round"), lambda s: s[0].update(round=1)],
                         ids=["no round", "round 1 in plan.json"])
def test_read_plan_refuses_shards_of_another_round(tmp_path, damage):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    damage(plan["shards"])
    (config_dir / PLAN_FILE).write_text(json.dumps(seal(plan)))
    with pytest.raises(CorruptFileError, match="plan.json"):
        read_plan(config_dir)


def test_a_plan_without_shards_is_refused(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    plan["shards"] = []
    (config_dir / PLAN_FILE).write_text(json.dumps(seal(plan)))
    with pytest.raises(CorruptFileError, match="plan.json"):
        next_work(config_dir, read_plan(config_dir))


# --------------------------------------------------------------------------------------------------------------
# known_shards: rounds/001.json, 002.json, ... in order, each checked against the config
# --------------------------------------------------------------------------------------------------------------
def write_round(config_dir: Path, plan: dict, round: int, shards: list[Shard], **changes: Any) -> Path:
    data = {"config_hash": plan["config_hash"], "code_version": plan["code_version"], "round": round,
            "planned_at": 1.7e9, "shards": [s.to_json() for s in shards], **changes}
    return atomic_write_json(round_path(config_dir, round), seal(data))


def test_known_shards_reads_the_rounds_in_order_and_stops_at_the_first_missing(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    assert known_shards(config_dir, plan) == make_shards(4, 10, 20, 2, 10)
    first = cut_shards([([1, 2], {"estimation": (20, 40)})], 2, 10, first_index=4, round=1)
    second = cut_shards([([2], {"estimation": (40, 45)}), ([0], {"selection": (10, 12)})], 2, 10,
                        first_index=6, round=2)
    write_round(config_dir, plan, 1, first)
    write_round(config_dir, plan, 2, second)
    later = cut_shards([([3], {"estimation": (20, 30)})], 2, 10, first_index=8, round=4)
    write_round(config_dir, plan, 4, later)  # after a gap (no 003.json): never read
    shards = known_shards(config_dir, plan)
    assert shards == make_shards(4, 10, 20, 2, 10) + first + second
    assert [s.index for s in shards] == list(range(8)) and [s.round for s in shards] == [0] * 4 + [1] * 2 + [2] * 2


BAD_ROUNDS = [
    ("another config", lambda plan, shards: {"config_hash": "fedcba987654"}),
    ("wrong round number", lambda plan, shards: {"round": 2}),
    ("indices not after round 0", lambda plan, shards: {"shards": [dict(s, index=s["index"] + 1) for s in shards]}),
    ("indices from 0 again", lambda plan, shards: {"shards": [dict(s, index=k) for k, s in enumerate(shards)]}),
    ("example out of range", lambda plan, shards: {"shards": [dict(shards[0], examples=[9])]}),
    ("no shards key", lambda plan, shards: {"shards": None}),
    ("not a dict", lambda plan, shards: None),
]


@pytest.mark.parametrize("changes", [d[1] for d in BAD_ROUNDS], ids=[d[0] for d in BAD_ROUNDS])
def test_a_bad_round_file_is_named_with_how_to_recover(tmp_path, changes):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    shards = cut_shards([([1, 2], {"estimation": (20, 40)})], 2, 10, first_index=4, round=1)
    path = write_round(config_dir, plan, 1, shards)
    assert known_shards(config_dir, plan)[4:] == shards
    data = json.loads(path.read_text())
    update = changes(plan, data["shards"])
    path.write_text(json.dumps(None if update is None else seal({**data, **update})))
    for read in (lambda: known_shards(config_dir, plan), lambda: inventory(config_dir, plan),
                 lambda: next_work(config_dir, plan)):
        with pytest.raises(CorruptFileError) as error:
            read()
        message = str(error.value)
        assert str(path) in message and "remove it" in message and "plans that round again" in message


def test_a_round_file_that_is_not_json_is_named_with_how_to_recover(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    path = round_path(config_dir, 1)
    path.parent.mkdir()
    path.write_text('{"config_hash": "01')
    with pytest.raises(CorruptFileError) as error:
        known_shards(config_dir, plan)
    assert str(path) in str(error.value) and "remove it" in str(error.value)


def test_a_round_file_whose_shards_claim_another_round_is_refused(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    shards = cut_shards([([1, 2], {"estimation": (20, 40)})], 2, 10, first_index=4, round=3)
    path = write_round(config_dir, plan, 1, shards)  # file round 1, shard rounds 3
    with pytest.raises(CorruptFileError, match=str(path)):
        known_shards(config_dir, plan)


# --------------------------------------------------------------------------------------------------------------
# validate_shard_file: a record must cover exactly its planned shard
# --------------------------------------------------------------------------------------------------------------
MISMATCHES = [
    (0, "ranges", lambda r: r["ranges"].update(estimation=[0, 5]), "covers ranges="),
    (0, "phase missing from ranges", lambda r: r["ranges"].pop("selection"), "covers ranges="),
    (1, "range of another chunk", lambda r: r.update(ranges={"estimation": [0, 10]}), "covers ranges="),
    (0, "round", lambda r: r.update(round=1), "covers round="),
    (0, "examples", lambda r: r.update(examples=[1, 0]), "covers examples="),
    (2, "examples of another block", lambda r: r.update(examples=[0, 1]), "covers examples="),
    (0, "counts missing a phase", lambda r: r["counts"].pop("selection"), "counts are not one table per phase"),
    (1, "counts with an extra phase", lambda r: r["counts"].update(selection=[[10, 0, 0]] * 2),
     "counts are not one table per phase"),
    (0, "counts of an unknown phase", lambda r: r["counts"].update(certification=[[1, 0, 0]] * 2),
     "counts are not one table per phase"),
    (0, "index beyond the rounds", lambda r: r.update(index=4), "not in the rounds planned so far"),
]


@pytest.mark.parametrize("index,damage,needle", [m[0:1] + m[2:] for m in MISMATCHES], ids=[m[1] for m in MISMATCHES])
def test_validate_refuses_a_record_that_is_not_its_planned_shard(tmp_path, index, damage, needle):
    write_damaged_shard(tmp_path, index, damage, needle)


def test_validate_accepts_a_record_of_a_later_round(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    later = cut_shards([([3, 1], {"estimation": (20, 25)})], 2, 10, first_index=4, round=1)
    write_round(config_dir, plan, 1, later)
    write_records(config_dir, plan, [4], lambda p, phase, i: i % 2)
    path = shard_path(config_dir, plan["config_hash"], 4)
    record, why = validate_shard_file(path, plan, known_shards(config_dir, plan))
    assert why == "" and dense(record) == {"estimation": [[3, 2, 0], [3, 2, 0]]}
    assert record["examples"] == [3, 1] and record["dataset_indices"] == [20, 9]
    # Without its round file the same record belongs to no planned shard.
    found, why = validate_shard_file(path, plan, known_shards(config_dir, plan)[:4])
    assert found is None and "not in the rounds planned so far" in why


def test_validate_refuses_float_examples(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    path = shard_path(config_dir, plan["config_hash"], 0)
    record = shard_record(plan, 0)
    record["examples"] = [0.0, 1.0]
    path.write_text(json.dumps(sealed_record(record)))
    found, why = validate_shard_file(path, plan, known_shards(config_dir, plan))
    assert found is None and "examples" in why


# --------------------------------------------------------------------------------------------------------------
# merge_counts: sums per point and phase, and only over ranges that tile [0, total)
# --------------------------------------------------------------------------------------------------------------
def merge_record(examples: list[int], ranges: dict[str, list[int]], counts: dict[str, list[list[int]]]) -> dict:
    """The fields merge_counts reads (it runs on records inventory already validated)."""
    return {"examples": examples, "ranges": ranges, "counts": counts, "elapsed_s": 1.0,
            "stage_norms": [1.0] * len(examples), "waveform_norms": [2.0] * len(examples)}


def test_merge_counts_sums_per_point_and_phase(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    label = lambda p, phase, i: (p + i + (phase == "estimation")) % 3 if p != 2 else 2  # noqa: E731
    write_records(config_dir, plan, range(4), label)
    found = inventory(config_dir, plan, merge=True)
    assert found.complete
    merged = found.merged
    for p in range(4):
        for phase, total in (("selection", 10), ("estimation", 20)):
            expected = np.bincount([label(p, phase, i) for i in range(total)], minlength=3)
            assert merged[phase][p].tolist() == expected.tolist(), (p, phase)
    assert merged["labels"].tolist() == [0, 1, 2, 0]
    assert merged["seconds"].tolist() == [0.5] * 4  # two shards of 0.5 s, each shared by two points
    assert merged["norms"].tolist() == [1.5] * 4 and merged["waveform_norms"].tolist() == [2.5] * 4
    assert settled(plan, merged)


@pytest.mark.parametrize("ranges,kind", [
    ([[0, 10], [5, 20]], "overlapping"),
    ([[0, 10], [0, 10]], "overlapping"),  # the same shard counted twice (e.g. a requeued copy)
    ([[0, 10], [15, 20]], "non-contiguous"),
    ([[5, 20]], "non-contiguous"),  # not from the start of the stream
])
def test_merge_counts_refuses_overlaps_and_gaps_naming_point_and_phase(ranges, kind):
    plan = small_plan()
    records = {0: merge_record([0, 1], {"selection": [0, 10]}, {"selection": [[10, 0, 0]] * 2})}
    for k, (lo, hi) in enumerate(ranges, start=1):  # point 1's estimation ranges; its selection is fine
        records[k] = merge_record([1], {"estimation": [lo, hi]}, {"estimation": [[hi - lo, 0, 0]]})
    with pytest.raises(IncompleteSweepError, match=rf"{kind} estimation ranges of point 1: "):
        merge_counts(plan, records)


def test_merge_counts_accepts_any_cut_of_the_same_ranges():
    """Counts do not depend on how the work is cut: shards of 3 and of 7 samples merge to the same tiling."""
    plan = small_plan()
    for width in (3, 7, 20):
        records = {}
        for k, lo in enumerate(range(0, 20, width)):
            hi = min(lo + width, 20)
            records[k] = merge_record([0], {"estimation": [lo, hi]}, {"estimation": [[hi - lo, 0, 0]]})
        merged = merge_counts(plan, records)
        assert merged["estimation"][0].tolist() == [20, 0, 0] and merged["estimation"][1:].sum() == 0


# --------------------------------------------------------------------------------------------------------------
# inventory: missing, duplicated, invalid, stray
# --------------------------------------------------------------------------------------------------------------
def test_inventory_classifies_missing_duplicated_invalid_and_stray_files(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    found = inventory(config_dir, plan)
    assert found.complete and sorted(found.records) == [0, 1, 2, 3]
    assert found.records[2]["examples"] == shard_record(plan, 2)["examples"] and found.records[2]["samples"] == 40
    own = {i: shard_path(config_dir, plan["config_hash"], i) for i in range(4)}
    shard_dir = own[0].parent

    own[0].rename(own[1])  # shard 0's counts under shard 1's name (shard 1's own file is gone)
    copy2 = shard_dir / f"{plan['config_hash']}-2.json"  # shard 2 twice: a second, unpadded name
    copy2.write_text(own[2].read_text())
    own[3].write_text('{"format": 3, "trunc')  # damaged
    foreign = shard_dir / "fedcba987654-00003.json"
    foreign.write_text(json.dumps(sealed_record(dict(shard_record(plan, 3), config_hash="fedcba987654"))))

    found = inventory(config_dir, plan)
    assert not found.complete
    assert found.records == {}
    assert found.missing == [0, 1, 3]
    assert found.duplicated == {2: sorted([own[2], copy2])}
    assert set(found.invalid) == {own[1], own[3], foreign}
    assert found.invalid[own[1]] == "counts of shard 0 under a name that is not its own"
    assert found.invalid[own[3]].startswith("unreadable") and "foreign config" in found.invalid[foreign]
    problems = found.problems(config_dir)
    assert "3 missing shard(s): 0, 1, 3" in problems and "shard 2 present 2 times" in problems
    assert str(own[1]) in problems and str(foreign) in problems

    # Duplicates are never guessed away: next_work asks only for the missing ones, and reducing stays refused.
    assert next_work(config_dir, plan) == [0, 1, 3]
    copy2.unlink()
    own[1].rename(own[0])
    write_config(tmp_path, plan)  # rewrites every own file
    found = inventory(config_dir, plan)
    assert found.missing == [] and found.duplicated == {} and set(found.invalid) == {foreign}


def test_inventory_of_a_config_without_shards_lists_them_all_missing(tmp_path):
    plan = small_plan()
    config_dir = tmp_path / "cfg"
    atomic_write_json(config_dir / PLAN_FILE, plan)
    found = inventory(config_dir)  # reads plan.json itself
    assert found.missing == [0, 1, 2, 3] and not found.records and not found.invalid


# --------------------------------------------------------------------------------------------------------------
# next_work: missing shards first, then the next round, until every point is settled
# --------------------------------------------------------------------------------------------------------------
def test_next_work_of_a_cohen_plan_is_its_missing_shards_then_nothing(tmp_path):
    plan = small_plan()
    config_dir = write_config(tmp_path, plan)
    shard_path(config_dir, plan["config_hash"], 1).unlink()
    shard_path(config_dir, plan["config_hash"], 3).write_text("{}")  # invalid counts are redone too
    assert next_work(config_dir, plan) == [1, 3]
    write_config(tmp_path, plan)
    assert next_work(config_dir, plan) == []
    assert not (config_dir / "rounds").exists()  # Cohen has one round: nothing planned after it
    assert settled(plan, inventory(config_dir, plan, merge=True).merged)


def test_next_work_of_a_sequential_plan_runs_rounds_until_settled(tmp_path):
    plan = sequential_plan()
    config_dir = tmp_path / "cfg"
    atomic_write_json(config_dir / PLAN_FILE, plan)
    assert read_plan(config_dir) == plan
    round0 = [Shard.from_json(s) for s in plan["shards"]]
    assert [(s.examples, s.ranges) for s in round0] == [
        ((0, 1), {"selection": (0, 10), "estimation": (0, 10)}),
        ((0, 1), {"selection": (10, 20), "estimation": (10, 20)}),
        ((2, 3), {"selection": (0, 10), "estimation": (0, 10)}),
        ((2, 3), {"selection": (10, 20), "estimation": (10, 20)}),
    ]
    assert next_work(config_dir, plan) == [0, 1, 2, 3]
    write_records(config_dir, plan, [0, 1, 2], sequential_label)
    assert next_work(config_dir, plan) == [3] and not (config_dir / "rounds").exists()  # round 0 is not done yet
    write_records(config_dir, plan, [3], sequential_label)
    assert not settled(plan, inventory(config_dir, plan, merge=True).merged)

    # Round 1: only the unsettled points, from their totals, numbered after round 0.
    work = next_work(config_dir, plan)
    assert work == [4, 5, 6, 7]
    first = json.loads(round_path(config_dir, 1).read_text())
    assert first["config_hash"] == plan["config_hash"] and first["round"] == 1
    assert [(s["index"], s["examples"], s["ranges"], s["round"]) for s in first["shards"]] == [
        (4, [0, 3], {"estimation": [20, 30]}, 1), (5, [0, 3], {"estimation": [30, 40]}, 1),
        (6, [2], {"selection": [20, 30]}, 1), (7, [2], {"selection": [30, 40]}, 1),
    ]
    # A rerun (e.g. after a kill) finds the round planned and asks for the same shards: nothing planned twice.
    assert next_work(config_dir, plan) == work
    assert json.loads(round_path(config_dir, 1).read_text()) == first
    write_records(config_dir, plan, work[:2], sequential_label)
    assert next_work(config_dir, plan) == work[2:] and json.loads(round_path(config_dir, 1).read_text()) == first
    write_records(config_dir, plan, work[2:], sequential_label)

    # Run every round's shards until nothing is asked for; the looks bound the number of rounds.
    rounds, planned = 1, 8
    while work := next_work(config_dir, plan):
        rounds += 1
        assert rounds <= 6, "more rounds than the looks allow"
        data = json.loads(round_path(config_dir, rounds).read_text())
        assert data["round"] == rounds and work == [s["index"] for s in data["shards"]]
        assert work == list(range(planned, planned + len(work)))  # indices run on across rounds
        planned += len(work)
        write_records(config_dir, plan, work, sequential_label)
    assert not round_path(config_dir, rounds + 1).exists()  # settling writes no empty round
    found = inventory(config_dir, plan, merge=True)
    assert found.complete and sorted(found.records) == list(range(len(found.shards)))
    merged = found.merged
    assert settled(plan, merged)
    algorithm = make_algorithm(plan["quantities"])
    totals = [(int(merged["selection"][p].sum()), int(merged["estimation"][p].sum())) for p in range(4)]
    assert totals[1] == (20, 20)  # settled after round 0
    assert totals[0] == totals[3] and totals[0][0] == 20 and totals[0][1] in algorithm.looks
    assert totals[2][0] == 40 and totals[2][1] in algorithm.looks  # selection went on to n0
    assert [s.index for s in found.shards] == list(range(len(found.shards)))
    assert [s.round for s in found.shards] == sorted(s.round for s in found.shards)


def test_a_round_planned_by_other_code_is_planned_again(tmp_path):
    """Round files carry the plan's code version: after a code change (the plan is rewritten and every shard is
    recomputed) a stale round 1 is not read, and next_work plans it again from the new counts."""
    plan = sequential_plan()
    config_dir = tmp_path / "cfg"
    atomic_write_json(config_dir / PLAN_FILE, plan)
    write_records(config_dir, plan, [s["index"] for s in plan["shards"]], sequential_label)
    work = next_work(config_dir, plan)
    assert work and len(known_shards(config_dir, plan)) == len(plan["shards"]) + len(work)
    stale = json.loads(round_path(config_dir, 1).read_text()) | {"code_version": "older"}
    atomic_write_json(round_path(config_dir, 1), seal(stale))
    assert len(known_shards(config_dir, plan)) == len(plan["shards"])
    assert next_work(config_dir, plan) == work
    assert json.loads(round_path(config_dir, 1).read_text())["code_version"] == plan["code_version"]


# --------------------------------------------------------------------------------------------------------------
# A shard that would count nothing fails instead of looping
# --------------------------------------------------------------------------------------------------------------
def test_run_shard_refuses_a_plan_of_another_code_version(tmp_path):
    """Its record would not validate, so the shard would stay missing and be submitted again and again (the
    SLURM chain resubmits what is missing): the job fails before computing, naming both versions."""
    plan = small_plan()  # planned by code version "test", which this code is not
    config_dir = write_config(tmp_path, plan)
    path = shard_path(config_dir, plan["config_hash"], 0)
    path.unlink()
    with pytest.raises(RuntimeError, match=r"planned by audiocert test, this is .*plan it again"):
        run_shard(config_dir, plan, 0)
    assert not path.exists()


def test_the_slurm_chain_does_not_resubmit_shards_whose_jobs_ended():
    """The dependent job runs once its shards' tasks exited 0; a shard still missing then has no valid result
    and is not submitted again. Shards of live tasks (a rerun added them) and of other executors are not."""
    jobs = {"executor": "slurm", "shards": {"0": "10_0", "1": "10_1", "2": "11_0"}}
    assert ended_without_result(jobs, [1, 2, 5], live={"11_0"}) == [1]
    assert ended_without_result(jobs, [5, 6], live=set()) == []
    assert ended_without_result(jobs | {"executor": "local"}, [0, 1], live=set()) == []
    assert ended_without_result({}, [0], live=set()) == []
