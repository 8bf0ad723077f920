"""Shards: the plan of a config's work, its rounds, sealed shard records, the worker, and the inventory.

A config of any kind certifies or measures P test points. Work comes in rounds; a round is cut into shards
(blocks of points x ranges of samples, budgets or radii). Round 0 is in plan.json; round k >= 1 is planned from
the merged results of the rounds before it and written to ``rounds/<k>.json``. Every shard writes one record,
``shards/<config_hash>-<index>.json``, atomically and sealed; a shard is done when that file exists and
validates, never because a scheduler says so. What a shard computes, what its record holds, how records merge
and whether more rounds follow is its kind's (:class:`WorkKind`); this layer knows no kind by name.
"""

from audiocert.shards.inventory import SHARD_NAME, ShardInventory, inventory, next_work
from audiocert.shards.kind import KINDS, WorkKind, has_results, kind_named, kind_of, register_kind
from audiocert.shards.layout import (
    KEPT_ON_REPLAN,
    PLAN_FILE,
    PREVIOUS_DIR,
    ROUND_DIR,
    SHARD_DIR,
    SHARD_FORMAT,
    IncompleteSweepError,
    Shard,
    check_shard_list,
    cut_shards,
    is_int,
    round_path,
    select_points,
    shard_path,
)
from audiocert.shards.plans import (
    CONFIG_HASH,
    PLAN_RECOVERY,
    ROUND_RECOVERY,
    Layout,
    config_dirs,
    known_shards,
    read_plan,
    set_aside_results,
    write_plan,
)
from audiocert.shards.records import (
    SUMMARY_CACHE,
    SUMMARY_KEYS,
    check_shard_record,
    decode_counts,
    encode_counts,
    finite_numbers,
    same_json,
    shard_done,
    shard_summary,
    sparse_counts,
    validate_shard_file,
    validated_summary,
)
from audiocert.shards.worker import (
    MAX_CONTEXTS,
    ConfigWork,
    ShardContext,
    clear_shard_contexts,
    load_certified_setup,
    record_envelope,
    run_shard,
    run_shards,
    set_threads,
    shard_context,
    slurm_task_id,
    waveform_digest,
)

__all__ = [
    "CONFIG_HASH", "KEPT_ON_REPLAN", "KINDS", "MAX_CONTEXTS", "PLAN_FILE", "PLAN_RECOVERY", "PREVIOUS_DIR",
    "ROUND_DIR", "ROUND_RECOVERY", "SHARD_DIR", "SHARD_FORMAT", "SHARD_NAME", "SUMMARY_CACHE", "SUMMARY_KEYS",
    "ConfigWork", "IncompleteSweepError", "Layout", "Shard", "ShardContext", "ShardInventory", "WorkKind",
    "check_shard_list", "check_shard_record", "clear_shard_contexts", "config_dirs", "cut_shards", "decode_counts",
    "encode_counts", "finite_numbers", "has_results", "inventory", "is_int", "kind_named", "kind_of",
    "known_shards", "load_certified_setup", "next_work", "read_plan", "record_envelope", "register_kind",
    "round_path", "run_shard", "run_shards", "same_json", "select_points", "set_aside_results", "set_threads",
    "shard_context", "shard_done", "shard_path", "shard_summary", "slurm_task_id", "sparse_counts",
    "validate_shard_file", "validated_summary", "waveform_digest", "write_plan",
]
