"""Checks of numeric settings: every number a command takes is finite and in its range, named when it is not.

``sigma=inf`` once certified every point at radius inf: a number that only has to be "> 0" still has to be a
finite real number, and an integer setting has to be an integer (not 2.5, not True). One function serves every
check (the config schemas of audiocert.schemas, and the arguments of the library's functions), so they all refuse
the same way, in one format that names the setting as it was given and what it must be::

    smoothing.sigma=inf: must be finite and > 0
    certify.n=2.5: must be an integer >= 1

This is a bottom layer (no torch, no other audiocert module).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any


def shown(value: Any) -> str:
    """``value`` as a setting is written on the command line: strings quoted, None as null, booleans as
    true/false, numbers as numbers (numpy scalars included), lists and mappings element by element."""
    if value is None:
        return "null"
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return repr(int(value))
    if isinstance(value, numbers.Real):
        return float.__repr__(float(value))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {shown(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(shown(item) for item in value) + "]"
    return repr(value) if isinstance(value, str) else repr(str(value))


def check_number(value: Any, field: str, *, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None, below: float | None = None, integer: bool = False,
                 optional: bool = False) -> float | int | None:
    """``value`` as a number after checking it, else ValueError ``field=value: must be ...`` (its range).

    ``minimum`` / ``maximum`` are inclusive bounds, ``above`` / ``below`` exclusive ones; ``integer`` asks for a
    whole number (an int, or a float or string with an integral value such as 4.0 from a YAML file);
    ``optional`` lets None (YAML null) through. Strings that parse as numbers are accepted (Hydra overrides
    arrive typed, but environment interpolations arrive as text); booleans never are.
    """
    if value is None and optional:
        return None
    rule = describe_range(minimum, maximum, above, below, integer) + (" (or null)" if optional else "")
    if value is None or isinstance(value, bool):
        raise ValueError(f"{field}={shown(value)}: {rule}")
    try:  # an integer stays one (2**63 - 1 is not a float's 2**63)
        number = int(value) if isinstance(value, numbers.Integral) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={shown(value)}: {rule}") from None
    if (isinstance(number, float) and not math.isfinite(number)) or (integer and number != int(number)) or (
            (minimum is not None and number < minimum) or (maximum is not None and number > maximum)
            or (above is not None and not number > above) or (below is not None and not number < below)):
        raise ValueError(f"{field}={shown(value)}: {rule}")
    return int(number) if integer else float(number)


def describe_range(minimum: float | None, maximum: float | None, above: float | None, below: float | None,
                   integer: bool) -> str:
    """'must be an integer >= 1', 'must be finite and in (0, 0.5)', ... for error messages."""
    kind = "an integer" if integer else "finite and"
    low = f"[{_bound(minimum)}" if minimum is not None else f"({_bound(above)}" if above is not None else None
    high = f"{_bound(maximum)}]" if maximum is not None else f"{_bound(below)})" if below is not None else None
    if low and high:
        return f"must be {kind} in {low}, {high}"
    if low:
        return f"must be {kind} {'>=' if minimum is not None else '>'} {low[1:]}"
    if high:
        return f"must be {kind} {'<=' if maximum is not None else '<'} {high[:-1]}"
    return "must be an integer" if integer else "must be a finite number"


def _bound(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def require(condition: object, message: str = "") -> None:
    """ValueError unless ``condition``: a check that `python -O` keeps (an ``assert`` vanishes there, and a plan
    whose quantities were edited and resealed would then be trusted)."""
    if not condition:
        raise ValueError(message or "a required condition does not hold")
