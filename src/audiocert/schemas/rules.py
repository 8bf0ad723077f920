"""What a setting must be (its rule), the one refusal format, and the walk that checks a config section against its
schema: a dataclass whose fields carry their rules (``dataclasses.field(metadata={"rule": ...})``), with the
rules between fields in its ``rules`` classmethod.

A refusal names the setting as it is given on the command line, then what it must be; one line::

    smoothing.sigma=inf: must be finite and > 0
    certify.batch_size=10 is below certify.block_size=50: batches hold whole noise blocks, ...
    perceptibility.radii is empty: give radii > 0, or null for the report's radii

A setting a schema does not name is left alone (a site's launcher may carry more); a field whose default is
MISSING must be set; a field with a default may be absent (the code that reads it applies that default: a schema
default is never written into the config, so configs, plans and their hashes are what they were).
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from audiocert.provenance import check_safe_name
from audiocert.settings import check_number, describe_range, shown

MISSING: Any = "???"  # omegaconf.MISSING: the config must set this field


class SettingError(ValueError):
    """A refused setting; ``key`` is the dotted name of the setting (``certify.n``), the message one line."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def refuse(key: str, value: Any, rule: str) -> SettingError:
    """``key=value: rule``."""
    return SettingError(key, f"{key}={shown(value)}: {rule}")


def refuse_relation(key: str, value: Any, relation: str) -> SettingError:
    """``key=value relation`` (a rule between settings, e.g. 'is below certify.block_size=50: ...')."""
    return SettingError(key, f"{key}={shown(value)} {relation}")


def refuse_key(key: str, problem: str) -> SettingError:
    """``key problem`` (a setting that is missing, or an empty list)."""
    return SettingError(key, f"{key} {problem}")


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def is_flag(value: Any) -> bool:
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"))


# ----------------------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Number:
    """A finite number in a range (see audiocert.settings.check_number). ``strict``: an int (or a float, unless
    ``integer``) as written in YAML, no numeric strings; ``flags``: true/false pass too (counted as 1/0)."""

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    integer: bool = False
    strict: bool = False
    flags: bool = False

    def describe(self) -> str:
        return describe_range(self.minimum, self.maximum, self.above, self.below, self.integer)

    def check(self, key: str, value: Any) -> None:
        if self.flags and is_flag(value):
            return
        if self.strict and (is_flag(value) or not isinstance(value, numbers.Integral if self.integer
                                                             else numbers.Real)):
            raise refuse(key, value, self.describe())
        try:
            check_number(value, key, minimum=self.minimum, maximum=self.maximum, above=self.above, below=self.below,
                         integer=self.integer)
        except ValueError as error:
            raise SettingError(key, str(error)) from None


@dataclass(frozen=True)
class Flag:
    def describe(self) -> str:
        return "must be true or false"

    def check(self, key: str, value: Any) -> None:
        if not is_flag(value):
            raise refuse(key, value, self.describe())


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (a tuple, or a function giving them when checked: stages may be registered later)."""

    options: Sequence[str] | Callable[[], Sequence[str]]

    def names(self) -> Sequence[str]:
        return self.options() if callable(self.options) else self.options

    def describe(self) -> str:
        return f"must be one of {', '.join(self.names())}"

    def check(self, key: str, value: Any) -> None:
        if not isinstance(value, str) or value not in self.names():
            raise refuse(key, value, self.describe())


@dataclass(frozen=True)
class Name:
    """A name that becomes one path component (a sweep, dataset, model or preset name)."""

    def describe(self) -> str:
        return ("must be a safe name for a directory: letters, digits and . _ = , + - (no '/', no '..', not "
                "starting with a dot)")

    def check(self, key: str, value: Any) -> None:
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            check_safe_name(value, key)
        except ValueError:
            raise refuse(key, value, self.describe()) from None


@dataclass(frozen=True)
class Text:
    """A non-empty string (a path, a device name, free text); ``plain``: one directory name, no '/'."""

    what: str = "a non-empty string"
    plain: bool = False

    def describe(self) -> str:
        return f"must be {self.what}"

    def check(self, key: str, value: Any) -> None:
        text = os.fspath(value) if isinstance(value, os.PathLike) else value
        if not isinstance(text, str) or not text.strip() or (self.plain and ("/" in text or text in (".", ".."))):
            raise refuse(key, value, self.describe())


@dataclass(frozen=True)
class Numbers:
    """A list of numbers, each checked by ``item`` under ``key[i]``; ``scalar``: one number stands for a list of
    one; ``unique`` / ``ascending``: no repeats / strictly ascending; ``empty``: what to do instead of [];
    ``per_item``: a bad item is named ``key[i]`` (else the whole list is shown); ``allow_empty``: [] passes."""

    item: Number
    unique: bool = False
    ascending: bool = False
    scalar: bool = False
    length: int | None = None
    empty: str = "give at least one value"
    per_item: bool = True
    allow_empty: bool = False

    def describe(self) -> str:
        size = f"{self.length} " if self.length else ""
        return f"must be a list of {size}numbers, each {self.item.describe().removeprefix('must be ')}"

    def check(self, key: str, value: Any) -> None:
        if self.scalar and isinstance(value, (numbers.Real, str)) and not is_flag(value):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise refuse(key, value, self.describe())
        if not value and not self.allow_empty:
            raise refuse_key(key, f"is empty: {self.empty}")
        if self.length is not None and len(value) != self.length:
            raise refuse(key, value, self.describe())
        for index, item in enumerate(value):
            try:
                self.item.check(f"{key}[{index}]", item)
            except SettingError:
                if self.per_item:
                    raise
                raise refuse(key, value, self.describe()) from None
        checked = [float(v) for v in value]
        if self.ascending and sorted(set(checked)) != checked:
            raise refuse(key, value, "must be ascending without repeats")
        if self.unique and len(set(checked)) != len(checked):
            raise refuse(key, value, "repeats a value: list each once")


@dataclass(frozen=True)
class Texts:
    """A list of strings (shell lines, say)."""

    def describe(self) -> str:
        return "must be a list of strings"

    def check(self, key: str, value: Any) -> None:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise refuse(key, value, self.describe())


@dataclass(frozen=True)
class Table:
    """A mapping of names to values, each checked by ``value`` under ``key.name``; ``names``: the allowed names."""

    value: Any
    names: Callable[[], Sequence[str]] | None = None
    scalar: bool = False  # a bare value stands for every name

    def describe(self) -> str:
        return f"must be a mapping of names to values that {self.value.describe().removeprefix('must ')}"

    def check(self, key: str, value: Any) -> None:
        if self.scalar and not isinstance(value, Mapping):
            self.value.check(key, value)
            return
        if not isinstance(value, Mapping):
            raise refuse(key, value, self.describe())
        allowed = self.names() if self.names is not None else None
        for name, item in value.items():
            if allowed is not None and name not in allowed:
                raise refuse_key(join(key, str(name)), f"is not one of {', '.join(allowed)}")
            self.value.check(join(key, str(name)), item)


@dataclass(frozen=True)
class Anything:
    def describe(self) -> str:
        return "may be anything"

    def check(self, key: str, value: Any) -> None:
        """Anything goes (the sbatch options a site adds, say)."""


# ----------------------------------------------------------------------------------------------------------
# Fields
# ----------------------------------------------------------------------------------------------------------
def setting(rule: Any, default: Any = MISSING) -> Any:
    """A schema field checked by ``rule``; MISSING: the config must set it."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"rule": rule})
    return dataclasses.field(default=default, metadata={"rule": rule})


def number(default: Any = MISSING, **bounds: Any) -> Any:
    return setting(Number(**bounds), default)


def count(default: Any = MISSING, minimum: int = 1, **bounds: Any) -> Any:
    """An integer setting, >= 1 unless told otherwise."""
    return setting(Number(minimum=minimum, integer=True, **bounds), default)


def flag(default: Any = MISSING) -> Any:
    return setting(Flag(), default)


def section(schema: type) -> Any:
    """A nested section checked against ``schema``."""
    return dataclasses.field(default_factory=schema)


# ----------------------------------------------------------------------------------------------------------
# The walk
# ----------------------------------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """A DictConfig or ListConfig as plain containers, interpolations resolved."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def read(section: Any, name: str, key: str) -> Any:
    """``section[name]`` with its interpolations resolved; a value that cannot be resolved is refused by name (a
    ``${safe_name:...}`` resolver's refusal is passed on as it is: it names the setting it checked)."""
    try:
        value = section[name]
        return plain(value) if isinstance(value, ListConfig) else value
    except OmegaConfBaseException as error:
        cause: BaseException | None = error
        while isinstance(cause, OmegaConfBaseException):  # a resolver's own refusal, under OmegaConf's wrappers
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ValueError):
            raise SettingError(key, " ".join(str(cause).split())) from None
        raise refuse_key(key, f"cannot be resolved: {' '.join(str(error).splitlines()[0].split())}") from None


def _optional_and_inner(hint: Any) -> tuple[bool, Any]:
    if hint is Any:
        return True, Any
    arguments = typing.get_args(hint)
    if type(None) in arguments:
        rest = [a for a in arguments if a is not type(None)]
        return True, rest[0] if len(rest) == 1 else Any
    return False, hint


def check_section(schema: type, section: Any, prefix: str = "", only: Collection[str] | None = None
                  ) -> dict[str, Any]:
    """Check ``section`` (a mapping or DictConfig) against ``schema`` and return its checked values, resolved
    (SettingError at the first refused setting). ``only``: check just these fields (a caller holding part of a
    config). A schema with a ``variant`` classmethod picks the schema of the section's variant (the launcher's
    name); its ``rules`` classmethod then checks the rules between the fields."""
    if not isinstance(section, (Mapping, DictConfig)):
        raise refuse(prefix, plain(section), "must be a section of settings (key: value)")
    if hasattr(schema, "variant"):
        schema = schema.variant(section)
    hints = typing.get_type_hints(schema)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(schema):
        if only is not None and spec.name not in only:
            continue
        key = join(prefix, spec.name)
        if spec.name not in section:
            if isinstance(spec.default, str) and spec.default == MISSING:
                raise refuse_key(key, "is missing: the config must set it")
            continue
        value = read(section, spec.name, key)
        optional, inner = _optional_and_inner(hints[spec.name])
        rule = spec.metadata.get("rule")
        if value is None:
            if not optional:
                raise refuse(key, None, rule.describe() if rule is not None else "must be a section of settings")
        elif dataclasses.is_dataclass(inner):
            value = check_section(inner, value, key)
        elif rule is not None:
            value = plain(value)
            rule.check(key, value)
        values[spec.name] = plain(value)
    if hasattr(schema, "rules"):
        schema.rules(values, prefix)
    return values
