"""How a configuration key is declared: once, on the field of its section's frozen dataclass.

A leaf field says how it is parsed, its default and how a dump shows it (:func:`setting`); a field typed with
another section's dataclass is a nested section (:func:`section`), one typed ``tuple[Item, ...]`` a list of
mappings (:func:`list_of`). The key tables that :mod:`vmond.config.check` walks (:func:`table_of`) and the
dataclasses built from the parsed values (:func:`build`) both come from those fields, so a key cannot exist in
one and not the other; a field declared in none of these ways is refused when its table is derived.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from vmond.config.values import Parser

REQUIRED: Any = object()  # default for keys without one
_SPEC = "vmond.config.spec"  # the field metadata entry holding a field's spec
_SECTION, _LIST_OF, _NOT_A_KEY = "section", "list of", "not a key"

T = TypeVar("T")


@dataclass(frozen=True)
class Key:
    """One leaf key: how to parse it, its default and how to show it in a dump."""

    parse: Parser
    default: Any
    show: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Section:
    """A key holding a mapping whose keys are the fields of ``cls``."""

    cls: type
    table: Table


@dataclass(frozen=True)
class ListOf:
    """A key holding a list of mappings that each follow ``table`` and become a ``cls``."""

    cls: type
    table: Table


Table = dict[str, Key | Section | ListOf]


# --- declaring fields ---------------------------------------------------------
# Each returns a dataclasses.field without a default (a Config is always built whole); typed Any so that
# `port: int = setting(...)` reads as what it is.


def setting(parse: Parser, default: Any = REQUIRED, show: Callable[[Any], Any] | None = None) -> Any:
    """A key of the file, parsed by *parse*, *default* when absent (none given: the key is required),
    written by *show* in dumps (as is when None)."""
    return dataclasses.field(metadata={_SPEC: Key(parse, default, show)})


def section() -> Any:
    """A nested mapping; its keys are the fields of the dataclass the field is typed with."""
    return dataclasses.field(metadata={_SPEC: _SECTION})


def list_of() -> Any:
    """A list of mappings; the field is typed ``tuple[Item, ...]`` and each item's keys are Item's fields."""
    return dataclasses.field(metadata={_SPEC: _LIST_OF})


def not_a_key() -> Any:
    """A field the loader fills in itself (e.g. where the file was read from); the file cannot set it."""
    return dataclasses.field(metadata={_SPEC: _NOT_A_KEY})


# --- what is derived from them ------------------------------------------------


def table_of(cls: type) -> Table:
    """The key table of a section dataclass, in field order; TypeError for a field declared in no known way."""
    hints = typing.get_type_hints(cls)
    table: Table = {}
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(_SPEC)
        where = f"{cls.__name__}.{field.name}"
        if isinstance(spec, Key):
            table[field.name] = spec
        elif spec == _SECTION:
            table[field.name] = Section(_section_class(hints[field.name], where), table_of(hints[field.name]))
        elif spec == _LIST_OF:
            item = _item_class(hints[field.name], where)
            table[field.name] = ListOf(item, table_of(item))
        elif spec != _NOT_A_KEY:
            raise TypeError(f"{where} is declared as no configuration key: give it setting(...), section(), "
                            "list_of() or not_a_key()")
    return table


def _section_class(hint: Any, where: str) -> type:
    if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
        raise TypeError(f"{where} is a section(), so its type must be a section dataclass, not {hint!r}")
    return hint


def _item_class(hint: Any, where: str) -> type:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is not tuple or len(args) != 2 or args[1] is not Ellipsis:
        raise TypeError(f"{where} is a list_of(), so its type must be tuple[Item, ...], not {hint!r}")
    return _section_class(args[0], where)


def build(cls: type[T], table: Table, values: dict[str, Any], **not_keys: Any) -> T:
    """The dataclass *cls* from *values* parsed against its *table*; *not_keys* fill its not_a_key() fields."""
    kwargs = dict(not_keys)
    for name, spec in table.items():
        value = values[name]
        if isinstance(spec, Section):
            value = build(spec.cls, spec.table, value)
        elif isinstance(spec, ListOf):
            value = tuple(build(spec.cls, spec.table, item) for item in value)
        kwargs[name] = value
    return cls(**kwargs)
