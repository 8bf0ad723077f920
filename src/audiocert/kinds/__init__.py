"""The kinds of work: the one place that lists them.

Each kind is one object with its whole life (plan, directory, run a shard, check a record, accumulate, next
shards, reduce, W&B spec, report section; see :class:`audiocert.shards.WorkKind`). Importing this package
registers every kind below with the shard layer, so the machinery above (launching, status, W&B, the report)
finds a plan's kind by the name in it and never decides by a kind's name itself.

A new kind: one module (or package) here whose object derives from :class:`audiocert.shards.WorkKind` (or
:class:`audiocert.kinds.derived.DerivedKind` when it works on the points of a certification), one entry in
``ALL`` below, one config group (conf/<name>/ and conf/<name>.yaml) and its CLI command.
"""

from audiocert.kinds.attack import ATTACK
from audiocert.kinds.certify import CERTIFY
from audiocert.kinds.derived import DerivedKind
from audiocert.kinds.perceptibility import PERCEPTIBILITY
from audiocert.shards import KINDS, WorkKind, kind_named, kind_of, register_kind

ALL: tuple[WorkKind, ...] = (CERTIFY, ATTACK, PERCEPTIBILITY)
for _kind in ALL:
    register_kind(_kind)

__all__ = ["ALL", "ATTACK", "CERTIFY", "KINDS", "PERCEPTIBILITY", "DerivedKind", "WorkKind", "kind_named",
           "kind_of", "register_kind"]
