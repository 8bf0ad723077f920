"""The interface every kind of work implements, and the registry the machinery looks kinds up in.

A kind (certify, attack, perceptibility, and whatever comes next) is one object with its whole life: plan ->
directory -> run a shard -> check a record -> accumulate -> next shards -> reduce -> W&B spec -> report section.
Planning, launching, validation, resume, status, W&B and the report call this interface and never ask which
kind they hold. The kinds themselves live in ``audiocert.kinds`` (a layer above this one), which registers each
of them here when it is imported: the one place that lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from audiocert.provenance import read_json
from audiocert.shards.layout import PLAN_FILE, Shard


class WorkKind:
    """One kind of shard work on a plan of test points.

    A kind's plan.json has the envelope of a certification plan (config hash of its quantities, code version,
    label, config, examples and their input digests, shards) plus what the kind adds; its shard records have the
    same envelope (config, code, device type, seed, coverage, inputs, timing, host) plus the kind's payload,
    checked by :meth:`check_payload`.
    """

    name = ""
    parent: WorkKind | None = None  # the kind whose results this one reads (planned first, in the directory above)
    range_keys: tuple[str, ...] = ()  # the keys of a shard's ranges (certify: the phases; attack: "eps")
    payload_keys: tuple[str, ...] = ()  # the record fields the kind adds
    result_files: tuple[str, ...] = ("summary.json",)  # on disk once reduced (summary.json written last)
    done_word = "completed"  # what the CLI says of a config whose work is reduced
    progress_unit = "samples"  # what a shard's "samples" counts, as W&B progress names it (points x ranges)

    @property
    def verb(self) -> str:
        """What the CLI prints before a reduced config's label."""
        return self.name

    @property
    def purpose(self) -> str:
        """What a command planning this kind is doing (named by the config lock to another command)."""
        return self.name

    # --- planning -------------------------------------------------------------------------------------------
    def make_plan(self, cfg: Any, parent_plan: Mapping[str, Any] | None, parent_dir: Path | None) -> dict[str, Any]:
        """The plan of a composed config (``parent_plan`` / ``parent_dir``: the parent kind's, when it has one)."""
        raise NotImplementedError

    def directory(self, base: Path, plan: Mapping[str, Any]) -> Path:
        """Where a plan's work lives: under the sweep directory, or under the parent kind's config directory."""
        raise NotImplementedError

    def check_plan(self, plan: Mapping[str, Any]) -> None:
        """ValueError unless the plan's kind-specific parts are consistent."""

    # --- shards ---------------------------------------------------------------------------------------------
    def run(self, work: Any, shard: Shard, on_example: Callable[[int, int], None] | None) -> dict[str, Any]:
        """The payload of one shard's record (``work``: the config's :class:`audiocert.shards.ConfigWork`)."""
        raise NotImplementedError

    def check_payload(self, record: Mapping[str, Any], plan: Mapping[str, Any], shard: Shard,
                      inputs: Sequence[Mapping[str, Any]]) -> tuple[str, Any]:
        """('', what the accumulator needs) for a valid payload, else (why not, None)."""
        raise NotImplementedError

    def accumulator(self, plan: Mapping[str, Any]) -> Any:
        """An object with ``add(record, checked)`` (``checked``: what check_payload returned) and ``result()``."""
        raise NotImplementedError

    def next_shards(self, plan: Mapping[str, Any], merged: Mapping[str, Any], shards: Sequence[Shard]) -> list[Shard]:
        """The shards of the next round from the merged results (none: the config is ready to reduce)."""
        return []

    # --- results --------------------------------------------------------------------------------------------
    def reduce(self, config_dir: Path, found: Any = None) -> dict[str, Any]:
        """Finalise one config from its shards; returns its summary (written last, as summary.json)."""
        raise NotImplementedError

    def outcome(self, summary: Mapping[str, Any]) -> str:
        """What a reduced config came to, in one line (after its label)."""
        raise NotImplementedError

    def report_section(self, context: Any) -> list[str]:
        """Its section of ``audiocert report`` (Markdown lines; figures written into ``context.output``), from the
        report's context (:class:`audiocert.reporting.ReportContext`); none by default."""
        return []

    def wandb_spec(self, config_dir: Path, plan: Mapping[str, Any]) -> dict[str, Any]:
        """What its W&B run logs once reduced: {"tables": {name: {columns, data}}, "lines": [{table, x, y, title,
        key?}], "summary": {key: value}, "media": [{key, path, type: audio | image, caption}], "artifacts":
        [{name, type, files, references, metadata}], "comparison": {column: value} (its row in the sweep's
        comparison table)}."""
        return {}

    def wandb_audio(self, config_dir: Path, plan: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Audio its W&B run plays that is rendered, not read from a result file: [{"key", "audio" (array),
        "rate", "caption"}]; rendered by the monitor when it logs the results. None by default."""
        return []

    def live_spec(self, config_dir: Path, plan: Mapping[str, Any]) -> dict[str, Any]:
        """What its W&B run shows while it runs, from the shard files so far: {"scalars": {key: value}, "tables":
        {name: {columns, data}}}; none by default (the monitor logs the progress of every kind)."""
        return {}


def has_results(config_dir: str | Path, plan: Mapping[str, Any] | None = None) -> bool:
    """Whether a config's reduced results are on disk (its kind's result files)."""
    config_dir = Path(config_dir)
    if plan is None:
        try:
            plan = read_json(config_dir / PLAN_FILE)
        except (OSError, ValueError):
            plan = {}
    try:
        kind = kind_of(plan if isinstance(plan, Mapping) else {})
    except ValueError:
        return False
    return all((config_dir / name).is_file() for name in kind.result_files)


KINDS: dict[str, WorkKind] = {}


def register_kind(kind: WorkKind) -> WorkKind:
    """Make a kind known to the machinery (``audiocert.kinds`` registers every kind it lists)."""
    KINDS[kind.name] = kind
    return kind


def kind_named(name: str) -> WorkKind:
    if name not in KINDS:
        known = ", ".join(KINDS) or "none: import audiocert.kinds first"
        raise ValueError(f"unknown kind of work {name!r}: choose one of {known}")
    return KINDS[name]


def kind_of(plan: Mapping[str, Any]) -> WorkKind:
    """The work kind of a plan (every plan and summary names its kind)."""
    return kind_named(plan["kind"])
