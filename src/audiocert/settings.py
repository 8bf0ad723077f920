"""Checks of numeric settings: every number a command takes is finite and in its range, named when it is not.

``sigma=inf`` once certified every point at radius inf: a number that only has to be "> 0" still has to be a
finite real number, and an integer setting has to be an integer (not 2.5, not True). One function serves every
validator (certify, train, launcher, attack, perceptibility, stats, examples), so they all refuse the same way.

This is a bottom layer (no torch, no other audiocert module).
"""

from __future__ import annotations

import math
from typing import Any


def check_number(value: Any, field: str, *, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None, below: float | None = None, integer: bool = False,
                 optional: bool = False) -> float | int | None:
    """``value`` as a number after checking it, else ValueError naming ``field`` and the allowed range.

    ``minimum`` / ``maximum`` are inclusive bounds, ``above`` / ``below`` exclusive ones; ``integer`` asks for a
    whole number (an int, or a float or string with an integral value such as 4.0 from a YAML file);
    ``optional`` lets None (YAML null) through. Strings that parse as numbers are accepted (Hydra overrides
    arrive typed, but environment interpolations arrive as text); booleans never are.
    """
    if value is None:
        if optional:
            return None
        raise ValueError(f"{field} is missing (null): {describe_range(minimum, maximum, above, below, integer)}")
    if isinstance(value, bool):
        raise ValueError(f"{field}={value!r} is a boolean, not a number: "
                         f"{describe_range(minimum, maximum, above, below, integer)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r} is not a number: "
                         f"{describe_range(minimum, maximum, above, below, integer)}") from None
    if not math.isfinite(number):
        raise ValueError(f"{field}={value!r} is not finite: {describe_range(minimum, maximum, above, below, integer)}")
    if integer and number != int(number):
        raise ValueError(f"{field}={value!r} is not a whole number: "
                         f"{describe_range(minimum, maximum, above, below, integer)}")
    if ((minimum is not None and number < minimum) or (maximum is not None and number > maximum)
            or (above is not None and not number > above) or (below is not None and not number < below)):
        raise ValueError(f"{field}={value!r} is out of range: "
                         f"{describe_range(minimum, maximum, above, below, integer)}")
    return int(number) if integer else number


def describe_range(minimum: float | None, maximum: float | None, above: float | None, below: float | None,
                   integer: bool) -> str:
    """'must be an integer >= 1', 'must be a finite number in (0, 0.5)', ... for error messages."""
    kind = "an integer" if integer else "a finite number"
    low = f"[{minimum:g}" if minimum is not None else f"({above:g}" if above is not None else None
    high = f"{maximum:g}]" if maximum is not None else f"{below:g})" if below is not None else None
    if low and high:
        return f"must be {kind} in {low}, {high}"
    if low:
        return f"must be {kind} {'>=' if minimum is not None else '>'} {low[1:]}"
    if high:
        return f"must be {kind} {'<=' if maximum is not None else '<'} {high[:-1]}"
    return f"must be {kind}"


def require(condition: object, message: str = "") -> None:
    """ValueError unless ``condition``: a check that `python -O` keeps (an ``assert`` vanishes there, and a plan
    whose quantities were edited and resealed would then be trusted)."""
    if not condition:
        raise ValueError(message or "a required condition does not hold")
