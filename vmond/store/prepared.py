"""Prepared queries: the SQL text of a hot query built once per database, then run again with new values.

peewee builds a query's SQL from its expression tree on every call; for the small queries of one mail's path that
costs more than the database's own work (a few hundred microseconds a query, most of ``record_mail``). A
:class:`Prepared` builds its query once, with :func:`slot` in place of each value that changes from call to call,
and runs that text with the values converted as peewee would have converted them (the field's ``db_value``). The
text is built again when the models are bound to another database (SQLite writes ``?``, PostgreSQL ``%s``).

A query's shape must not depend on the values: peewee writes ``field == None`` as ``IS NULL``, so a slot never
stands for a value that may be None in a comparison (keep one prepared query per shape instead).

Synchronous: run on a database thread, inside its transaction, like the rest of the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import peewee as pw

Q = TypeVar("Q", bound=pw.BaseQuery)


class _Slot:
    """Where a value goes in the parameters of a prepared query, and how it is converted for the database."""

    __slots__ = ("name", "convert")

    def __init__(self, name: str, convert: Callable[[Any], Any] | None) -> None:
        self.name = name
        self.convert = convert

    def value(self, values: Mapping[str, Any]) -> Any:
        value = values[self.name]
        return value if self.convert is None else self.convert(value)


def slot(name: str, field: pw.Field | None = None) -> pw.Value:
    """A value of a prepared query, given to each run as keyword *name*; converted as *field* converts values."""
    # converter=False: peewee puts the marker among the query's parameters as it is, where a run finds it.
    return pw.Value(_Slot(name, None if field is None else field.db_value), converter=False, unpack=False)


def cursor_rows(query: Any, cursor: Any) -> Any:
    """What *query* yields (model instances, tuples ...) from a cursor that ran its SQL: peewee's own row
    handling (``_get_cursor_wrapper`` is private, but the same from peewee 3.14 to 4)."""
    return query._get_cursor_wrapper(cursor)


class Prepared(Generic[Q]):
    """A query of *model* made by *build* (with slots), built once per database and run with new values."""

    def __init__(self, model: type[pw.Model], build: Callable[[], Q]) -> None:
        self._model = model
        self._build = build
        self._built: tuple[pw.Database, Q, str, list[Any]] | None = None

    def _statement(self) -> tuple[pw.Database, Q, str, list[Any]]:
        database = self._model._meta.database
        built = self._built  # read once: another thread may replace it (with the same text)
        if built is None or built[0] is not database:
            query = self._build()
            sql, params = query.sql()
            built = self._built = (database, query, sql, list(params))
        return built

    def execute(self, **values: Any) -> Any:
        """Run the query with *values* for its slots; returns the cursor."""
        database, _, sql, template = self._statement()
        params = [p.value(values) if isinstance(p, _Slot) else p for p in template]
        return database.execute_sql(sql, params)

    def rows(self, **values: Any) -> list[Any]:
        """Every row, as the query yields them (model instances with their joins, tuples ...)."""
        _, query, _, _ = self._statement()
        return list(cursor_rows(query, self.execute(**values)))

    def first(self, **values: Any) -> Any:
        """The first row, or None (give the query a ``.limit(1)``)."""
        found = self.rows(**values)
        return found[0] if found else None

    def scalar(self, **values: Any) -> Any:
        """The first column of the first row, or None."""
        row = self.execute(**values).fetchone()
        return None if row is None else row[0]


class _Insert:
    """``INSERT`` of a given set of columns (and those with a default), returning the new row's id."""

    def __init__(self, model: type[pw.Model], given: tuple[str, ...]) -> None:
        meta = model._meta
        key = meta.primary_key
        self._defaults = {f.name: f.default for f in meta.sorted_fields
                          if f.name not in given and f is not key and f.default is not None}
        columns = (*given, *self._defaults)

        def build() -> pw.BaseQuery:
            query = model.insert({meta.fields[name]: slot(name, meta.fields[name]) for name in columns})
            return query.returning(key) if meta.database.returning_clause else query

        self._prepared = Prepared(model, build)

    def run(self, values: Mapping[str, Any]) -> int:
        row = dict(values)
        for name, default in self._defaults.items():
            row[name] = default() if callable(default) else default
        cursor = self._prepared.execute(**row)
        returned = cursor.fetchone() if cursor.description else None  # RETURNING (PostgreSQL, newer SQLite)
        return returned[0] if returned else cursor.lastrowid


_inserts: dict[tuple[type[pw.Model], tuple[str, ...]], _Insert] = {}
_inserts_lock = threading.Lock()


def insert(model: type[pw.Model], **values: Any) -> int:
    """``model.create(**values).id`` without building its SQL again: the same columns (those given, and those with
    a default, which is taken afresh, as ``create`` does), the same conversions."""
    given = tuple(sorted(values))
    statement = _inserts.get((model, given))
    if statement is None:
        with _inserts_lock:
            statement = _inserts.setdefault((model, given), _Insert(model, given))
    return statement.run(values)
