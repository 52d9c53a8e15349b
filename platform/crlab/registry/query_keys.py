"""What the keys of a query mean and which values they compare with.

A key is one of:

- a run field: ``id``, ``name``, ``status``, ``sweep`` (the sweep's name), ``git_commit``, ``git_dirty``,
  ``host``, ``attempt``, ``created``, ``started``, ``ended``, ``heartbeat``, ``step`` (the newest step the
  run logged), ``tags`` (``config.tracking.tags``), ``reproduces`` (the run a run reproduces);
- ``config.<dotted key>``: any key of the experiment schema (``config.data.crl_ratio``,
  ``config.phases.0.crl_reward_scale``; anything below ``config.deepspeed.overrides``). Its type is the
  schema's: numbers compare as numbers, text as text;
- ``metrics.<metric key>.<summary>``: a summary of a logged metric, read from the run summary. Summaries:
  ``last``, ``min``, ``max``, ``best`` (the highest, or the lowest for a loss, see
  :func:`~crlab.registry.entities.lower_is_better`), ``n`` (how many steps logged it), and the step of
  each: ``last_step``, ``min_step``, ``max_step``, ``best_step``.

:func:`check` decides whether a comparison makes sense (``status > 3`` does not) and converts its values.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, is_dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from crlab.registry.entities import RunStatus
from crlab.registry.query_lang import Compare, Literal, LiteralKind, QueryError


class ValueType(StrEnum):
    """The type a comparison is made in: a key's type, or the values' (``any``: untyped config keys)."""

    NUMBER = "number"
    TEXT = "text"
    BOOLEAN = "boolean"
    TIME = "time"
    ANY = "any"
    NULL = "null"  # = null, != null: whether the key has a value


class FieldKind(StrEnum):
    """Where a key's value lives: a run column, the run's config, a metric summary, the newest step."""

    COLUMN = "column"
    CONFIG = "config"
    METRIC = "metric"
    STEP = "step"


NUM, STR, BOOL, TIME, ANY = ValueType.NUMBER, ValueType.TEXT, ValueType.BOOLEAN, ValueType.TIME, ValueType.ANY
ORDER_OPS = ("<", "<=", ">", ">=")
STATS = ("last", "min", "max", "best", "n", "last_step", "min_step", "max_step", "best_step")
# run fields: name -> (RunRow attribute, or "sweep" / "step", type)
RUN_FIELDS: dict[str, tuple[str, str]] = {
    "id": ("id", STR), "name": ("name", STR), "status": ("status", STR), "sweep": ("sweep", STR),
    "git_commit": ("git_commit", STR), "git_dirty": ("git_dirty", BOOL), "host": ("host", STR),
    "attempt": ("attempt", NUM), "created": ("created_at", TIME), "started": ("started_at", TIME),
    "ended": ("ended_at", TIME), "heartbeat": ("heartbeat_at", TIME), "step": ("step", NUM),
    "reproduces": ("reproduces", STR),
}  # fmt: skip
LITERAL_TYPES = {LiteralKind.NUMBER: NUM, LiteralKind.STRING: STR, LiteralKind.BOOL: BOOL}
DESCRIBE = {NUM: "a number", STR: "text", BOOL: "true or false", TIME: "a time"}


@dataclass(frozen=True)
class Field:
    """A resolved key. ``type``: number, text, boolean, time or any (a config key the schema does not type:
    the value's own type decides); ``is_list``: a list whose elements are of ``type`` (a comparison asks
    whether it contains the value)."""

    name: str
    kind: FieldKind
    type: ValueType
    pos: int = 0
    column: str = ""
    path: tuple[str, ...] = ()
    metric: str = ""
    stat: str = ""
    is_list: bool = False


def resolve(key: str, pos: int = 0, text: str = "", option: str = "--where") -> Field:
    """The :class:`Field` a key names; :class:`QueryError` with the nearest keys when it names none."""
    if key == "tags":
        return Field(key, FieldKind.CONFIG, STR, pos, path=("tracking", "tags"), is_list=True)
    if key in RUN_FIELDS:
        column, type_ = RUN_FIELDS[key]
        return Field(key, FieldKind.STEP if column == "step" else FieldKind.COLUMN, type_, pos, column=column)
    head, _, rest = key.partition(".")
    if head == "config" and rest:
        type_, is_list = config_type(tuple(rest.split(".")), key, pos, text, option)
        return Field(key, FieldKind.CONFIG, type_, pos, path=tuple(rest.split(".")), is_list=is_list)
    if head == "metrics" and rest:
        metric, _, stat = rest.rpartition(".")
        if stat not in STATS or not metric:
            fix = f"end it with one of {', '.join(STATS)}, e.g. metrics.{metric or rest}.last"
            raise QueryError(f"{key}: {stat!r} is not a metric summary; {fix}", text, pos, option)
        return Field(key, FieldKind.METRIC, NUM, pos, metric=metric, stat=stat)
    raise QueryError(f"unknown key {key!r}; {_suggest(key)}", text, pos, option)


def _suggest(key: str) -> str:
    from crlab import (
        config as cfgmod,
    )  # the schema: only for a key to check (`runs list` without one needs none)

    if "." in key and key.partition(".")[0] in cfgmod.ExperimentConfig.__dataclass_fields__:
        return f"did you mean config.{key}?"
    close = difflib.get_close_matches(key, [*RUN_FIELDS, "tags"], n=3, cutoff=0.6)
    known = (
        f"did you mean {' or '.join(close)}?" if close else f"run fields: {', '.join([*RUN_FIELDS, 'tags'])};"
    )
    return f"{known} config keys are config.KEY, metric summaries metrics.KEY.last (or .min .max .best ...)"


def config_type(path: tuple[str, ...], key: str, pos: int, text: str, option: str) -> tuple[str, bool]:
    """The (type, is a list) of a config key, from the experiment schema's annotations."""
    from crlab import config as cfgmod

    cls: Any = cfgmod.ExperimentConfig
    i = 0
    while i < len(path):
        hints = typing.get_type_hints(cls) if is_dataclass(cls) else {}
        if path[i] not in hints:
            close = [f"config.{k}" for k in cfgmod.nearest_keys(".".join(path))]
            fix = f"did you mean {' or '.join(close)}?" if close else "see `platform run --dry-run`"
            raise QueryError(f"unknown key {key!r}; {fix}", text, pos, option)
        hint, i = _unoptional(hints[path[i]]), i + 1
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is dict or hint is Any:
            return ANY, False
        if origin is list and i < len(path) and path[i].isdigit():
            hint, i = args[0], i + 1  # an index into the list
        elif origin is list and i == len(path) and not is_dataclass(args[0]):
            return _scalar(args[0]), True
        if is_dataclass(hint) or typing.get_origin(hint) is list:
            cls = hint
            continue
        if i == len(path):
            return _scalar(hint), False
        cls = None  # a value has no keys below it
    generic = ".".join("N" if p.isdigit() else p for p in path)
    example = next((k for k in cfgmod.schema_keys() if k.startswith(generic + ".")), "")
    fix = f"name a key in it, e.g. config.{example}".replace(".N.", ".0.")
    raise QueryError(f"{key} is a section, not a value; {fix}", text, pos, option)


def _unoptional(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return args[0] if is_union and len(args) == 1 else hint


def _scalar(hint: Any) -> str:
    return {bool: BOOL, int: NUM, float: NUM, str: STR}.get(hint, ANY)


def check(field: Field, node: Compare, text: str) -> tuple[str, list[Any]]:
    """The type the comparison is made in, and its values converted; :class:`QueryError` when the key
    and the values do not go together (``status > 3``, ``config.data.crl_ratio = 'a'``, ``tags < 'x'``)."""
    values, op = node.values, node.op
    nulls = [v for v in values if v.kind == LiteralKind.NULL]
    if nulls:
        if op not in ("=", "!="):
            raise QueryError(f"null can only be compared with = or !=, not {op}", text, nulls[0].pos)
        return ValueType.NULL, [None]
    kinds = {v.kind for v in values}
    if len(kinds) > 1:
        raise QueryError("the values of 'in' mix types; use all numbers or all strings", text, values[0].pos)
    (kind,) = kinds
    want = LITERAL_TYPES[kind] if field.type == ANY else field.type
    if field.is_list and op in ORDER_OPS:
        raise QueryError(
            f"{field.name} is a list: use =, !=, in or like (= means it contains the value)",
            text,
            node.op_pos,
        )
    if op == "like":
        if kind != LiteralKind.STRING or want != STR:
            what = f"{field.name} is {DESCRIBE[want]}" if want != STR else "the pattern must be a 'string'"
            raise QueryError(
                f"like compares text; {what}", text, node.op_pos if want != STR else values[0].pos
            )
        if values[0].value.endswith("\\") and not values[0].value.endswith("\\\\"):  # type: ignore[union-attr]
            raise QueryError("a like pattern cannot end with a lone backslash", text, values[0].pos)
        return STR, [values[0].value]
    if want == BOOL and op in ORDER_OPS:
        raise QueryError(f"{field.name} is true or false: compare it with = or !=", text, node.op_pos)
    return want, [_convert(field, want, v, text) for v in values]


def _convert(field: Field, want: str, lit: Literal, text: str) -> Any:
    ok = {NUM: LiteralKind.NUMBER, STR: LiteralKind.STRING, BOOL: LiteralKind.BOOL, TIME: LiteralKind.STRING}[
        want
    ]
    if lit.kind != ok:
        fix = {NUM: "write numbers without quotes", STR: "quote text: 'like this'", BOOL: "use true or false",
               TIME: "write a date or time in quotes: '2026-05-01' or '2026-05-01T12:00'"}[want]  # fmt: skip
        what = f"{field.name} is {DESCRIBE[want]} but {lit.text} is {DESCRIBE[LITERAL_TYPES[lit.kind]]}"
        raise QueryError(f"type mismatch: {what}; {fix}", text, lit.pos)
    if want == TIME:
        return _parse_time(lit, text)
    if field.column == "status":
        valid = [s.value for s in RunStatus]
        if lit.value not in valid:
            raise QueryError(f"unknown status {lit.text}; valid: {', '.join(valid)}", text, lit.pos)
    return lit.value


def _parse_time(lit: Literal, text: str) -> datetime:
    raw = str(lit.value).strip()
    try:
        value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith("Z") else raw)
    except ValueError:
        raise QueryError(
            f"{lit.text} is not a date or time; write '2026-05-01' or '2026-05-01T12:00:00'", text, lit.pos
        ) from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
