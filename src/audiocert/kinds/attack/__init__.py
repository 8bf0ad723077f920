"""Attacks: the empirical side of a certificate (SmoothAdv PGD on g, PGD on f), as a kind of shard work."""

from audiocert.kinds.attack.kind import ATTACK, AttackAccumulator, AttackKind
from audiocert.kinds.attack.plan import KIND, attack_quantities, attack_settings, default_budgets
from audiocert.kinds.attack.reduce import budgets_in_certificate_space, reduce_attack

attack_dirs = ATTACK.directories
read_attack_summary = ATTACK.read_summary

__all__ = ["ATTACK", "KIND", "AttackAccumulator", "AttackKind", "attack_dirs", "attack_quantities",
           "attack_settings", "budgets_in_certificate_space", "default_budgets", "read_attack_summary",
           "reduce_attack"]
