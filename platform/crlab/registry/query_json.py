"""Typed reads of JSON config values in SQL, one class per database, with the same results on both.

Each read is guarded by the JSON type of the value: a number is read only where the value is a JSON
number, text only where it is a JSON string, and so on; any other value (missing, null, another type)
reads as SQL NULL. SQLAlchemy's ``as_float()`` would cast the text of any value on PostgreSQL and fail
the whole query on the first run whose value is not a number; these never fail.

SQLite uses ``json_type`` / ``json_extract`` / ``json_each`` with a ``$."a"."b"[0]`` path; PostgreSQL
(where the column is ``jsonb``) ``jsonb_path_query_first`` / ``jsonb_path_query`` with a
``strict $."a"."b"[0]`` SQL/JSON path. Path parts are bound parameters, never spliced into the SQL.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    String,
    Text,
    case,
    cast,
    func,
    literal,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, JSONPATH
from sqlalchemy.sql.elements import ColumnElement

from crlab.registry.query_keys import BOOL, NUM, STR


class SqliteType(StrEnum):
    """What SQLite's ``json_type`` says a JSON value is."""

    INTEGER = "integer"
    REAL = "real"
    TEXT = "text"
    TRUE = "true"
    FALSE = "false"
    NULL = "null"


_EMPTY_PATH = cast(literal("{}", Text), ARRAY(Text))  # jsonb #>> '{}': a JSON string's text


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
            return type_coerce(
                case((kind.in_((SqliteType.INTEGER.value, SqliteType.REAL.value)), raw)), Float
            )
        if want == STR:
            return type_coerce(case((kind == SqliteType.TEXT.value, raw)), String)
        assert want == BOOL, want
        return case((kind == SqliteType.TRUE.value, 1), (kind == SqliteType.FALSE.value, 0))

    def missing(self, col: Any, path: tuple[str, ...]) -> ColumnElement[bool]:
        null = SqliteType.NULL.value
        return func.coalesce(self.json_type(col, path), null) == null

    def as_json(self, col: Any, path: tuple[str, ...]) -> ColumnElement[Any]:
        """The value as JSON text, for display (json_extract reads true as 1: kept apart)."""
        kind = self.json_type(col, path)
        quoted = func.json_quote(func.json_extract(col, self._path(path)))
        return type_coerce(
            case((kind.in_((SqliteType.TRUE.value, SqliteType.FALSE.value)), kind), else_=quoted), String
        )

    def elements(self, col: Any, path: tuple[str, ...], want: str) -> tuple[Any, Any]:
        """(a SELECT over the list's elements of type ``want``, an element's value) for an EXISTS. The
        elements of a list are the rows of json_each whose key is an index (an object's are names, a
        scalar's is null): no second parse of the config to check that it is a list."""
        each = func.json_each(col, self._path(path)).table_valued("key", "value", "type")
        types = (SqliteType.INTEGER.value, SqliteType.REAL.value) if want == NUM else (SqliteType.TEXT.value,)
        found = select(literal(1)).select_from(each)
        return found.where(func.typeof(each.c.key) == "integer", each.c.type.in_(types)), each.c.value

    def like(self, value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        """SQL LIKE, case-sensitive as on PostgreSQL (SQLite's LIKE ignores case): as a GLOB."""
        return value.op("GLOB")(like_to_glob(pattern))

    def ordered(self, value: ColumnElement[Any]) -> ColumnElement[Any]:
        return value  # text compares by code point (BINARY)


class PostgresJson:
    """Each read is one SQL/JSON path query (``strict``, errors silenced), so a config is read once per
    key and row however the value is then checked: a ``? (@.type() == "number")`` filter guards it."""

    dialect = "postgresql"

    def _query(self, col: Any, path: tuple[str, ...], tail: str = "", many: bool = False) -> Any:
        jsonpath = cast(literal(f"strict ${_jsonpath(path)}{tail}", String), JSONPATH)
        no_vars = cast(literal("{}", String), JSONB)
        return (func.jsonb_path_query if many else func.jsonb_path_query_first)(
            col, jsonpath, no_vars, true()
        )

    def _typed(self, col: Any, path: tuple[str, ...], kind: str) -> ColumnElement[Any]:
        return self._query(col, path, f' ? (@.type() == "{kind}")')

    def value(self, col: Any, path: tuple[str, ...], want: str) -> ColumnElement[Any]:
        if want == NUM:
            return cast(self._typed(col, path, "number"), Float)
        if want == STR:
            return type_coerce(self._typed(col, path, "string").op("#>>")(_EMPTY_PATH), String)
        assert want == BOOL, want
        return cast(cast(self._typed(col, path, "boolean"), Boolean), Integer)

    def missing(self, col: Any, path: tuple[str, ...]) -> ColumnElement[bool]:
        return func.coalesce(func.jsonb_typeof(self._query(col, path)), "null") == "null"

    def as_json(self, col: Any, path: tuple[str, ...]) -> ColumnElement[Any]:
        return cast(self._query(col, path), Text)

    def elements(self, col: Any, path: tuple[str, ...], want: str) -> tuple[Any, Any]:
        kind = "number" if want == NUM else "string"
        each = self._query(col, path, f'[*] ? (@.type() == "{kind}")', many=True)
        each = each.table_valued("value").render_derived()  # strict: nothing unless it is a list
        if want == NUM:
            value = cast(each.c.value, Float)
        else:
            value = type_coerce(each.c.value.op("#>>")(_EMPTY_PATH), String)
        return select(literal(1)).select_from(each), value

    def like(self, value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        return value.like(pattern)  # PostgreSQL's LIKE: case-sensitive, backslash escapes

    def ordered(self, value: ColumnElement[Any]) -> ColumnElement[Any]:
        return value.collate("C")  # code point order, as SQLite, whatever the database's collation


def _jsonpath(path: tuple[str, ...]) -> str:
    """``."a"."b"[0]``: the parts of a key as a SQL/JSON path (names quoted, digits as list indices)."""
    quoted = (p.replace("\\", "\\\\").replace('"', '\\"') for p in path)
    return "".join(f"[{p}]" if p.isdigit() else f'."{q}"' for p, q in zip(path, quoted, strict=True))


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
