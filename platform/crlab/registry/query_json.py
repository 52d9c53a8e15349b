"""Typed reads of JSON config values in SQL, one class per database, with the same results on both.

Each read is guarded by the JSON type of the value: a number is read only where the value is a JSON
number, text only where it is a JSON string, and so on; any other value (missing, null, another type)
reads as SQL NULL. SQLAlchemy's ``as_float()`` would cast the text of any value on PostgreSQL and fail
the whole query on the first run whose value is not a number; these never fail.

SQLite uses ``json_type`` / ``json_extract`` / ``json_each`` with a ``$."a"."b"[0]`` path; PostgreSQL
(the column is ``json``) ``json_typeof`` / ``json_extract_path(_text)`` / ``json_array_elements`` with one
argument per path part. Path parts are bound parameters, never spliced into the SQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, String, Text, case, cast, func, literal, select, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from crlab.registry.query_keys import BOOL, NUM, STR


class SqliteJson:
    dialect = "sqlite"

    def _path(self, path: tuple[str, ...]) -> ColumnElement[Any]:
        text = "$" + "".join(f"[{p}]" if p.isdigit() else f'."{p}"' for p in path)
        return literal(text, String)

    def json_type(self, col: Any, path: tuple[str, ...]) -> ColumnElement[Any]:
        """``integer``/``real``/``text``/``true``/``false``/``null``/``array``/``object``, NULL if missing."""
        return func.json_type(col, self._path(path))

    def value(self, col: Any, path: tuple[str, ...], want: str) -> ColumnElement[Any]:
        kind = self.json_type(col, path)
        raw = func.json_extract(col, self._path(path))
        if want == NUM:
            return type_coerce(case((kind.in_(("integer", "real")), raw)), Float)
        if want == STR:
            return type_coerce(case((kind == "text", raw)), String)
        assert want == BOOL, want
        return case((kind == "true", 1), (kind == "false", 0))

    def missing(self, col: Any, path: tuple[str, ...]) -> ColumnElement[bool]:
        return func.coalesce(self.json_type(col, path), "null") == "null"

    def elements(self, col: Any, path: tuple[str, ...], want: str) -> tuple[Any, ColumnElement[Any]]:
        """(a FROM over the list's elements, each element read as ``want``) for an EXISTS."""
        each = func.json_each(col, self._path(path)).table_valued("value", "type")
        guard = self.json_type(col, path) == "array"
        if want == NUM:
            value = case((each.c.type.in_(("integer", "real")), each.c.value))
        else:
            value = case((each.c.type == "text", each.c.value))
        return select(literal(1)).select_from(each).where(guard), value

    def like(self, value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        """SQL LIKE, case-sensitive as on PostgreSQL (SQLite's LIKE ignores case): as a GLOB."""
        return value.op("GLOB")(like_to_glob(pattern))

    def ordered(self, value: ColumnElement[Any]) -> ColumnElement[Any]:
        return value  # text compares by code point (BINARY)


class PostgresJson:
    dialect = "postgresql"

    def _node(self, col: Any, path: tuple[str, ...]) -> ColumnElement[Any]:
        return func.json_extract_path(col, *(literal(p, String) for p in path))

    def json_type(self, col: Any, path: tuple[str, ...]) -> ColumnElement[Any]:
        return func.json_typeof(self._node(col, path))

    def value(self, col: Any, path: tuple[str, ...], want: str) -> ColumnElement[Any]:
        kind = self.json_type(col, path)
        raw = func.json_extract_path_text(col, *(literal(p, String) for p in path))
        if want == NUM:
            return case((kind == "number", cast(raw, Float)))
        if want == STR:
            return type_coerce(case((kind == "string", raw)), String)
        assert want == BOOL, want
        return case((kind == "boolean", case((raw == "true", 1), else_=0)))

    def missing(self, col: Any, path: tuple[str, ...]) -> ColumnElement[bool]:
        return func.coalesce(self.json_type(col, path), "null") == "null"

    def elements(self, col: Any, path: tuple[str, ...], want: str) -> tuple[Any, ColumnElement[Any]]:
        node = self._node(col, path)
        array = case((func.json_typeof(node) == "array", node))
        each = func.json_array_elements(array).table_valued("value")
        kind = func.json_typeof(each.c.value)
        text = each.c.value.op("#>>")(cast(literal("{}", Text), ARRAY(Text)))  # the element as text
        if want == NUM:
            value = case((kind == "number", cast(text, Float)))
        else:
            value = type_coerce(case((kind == "string", text)), String)
        return select(literal(1)).select_from(each), value

    def like(self, value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        return value.like(pattern)  # PostgreSQL's LIKE: case-sensitive, backslash escapes

    def ordered(self, value: ColumnElement[Any]) -> ColumnElement[Any]:
        return value.collate("C")  # code point order, as SQLite, whatever the database's collation


def like_to_glob(pattern: str) -> str:
    """A LIKE pattern (``%`` any text, ``_`` one character, ``\\`` escapes the next) as a SQLite GLOB."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
            out.append(f"[{c}]" if c in "*?[" else c)
        elif c in "%_":
            out.append("*" if c == "%" else "?")
        else:
            out.append(f"[{c}]" if c in "*?[" else c)
        i += 1
    return "".join(out)


def for_dialect(name: str) -> SqliteJson | PostgresJson:
    if name == "sqlite":
        return SqliteJson()
    if name == "postgresql":
        return PostgresJson()
    raise NotImplementedError(f"queries support SQLite and PostgreSQL registries, not {name}")
