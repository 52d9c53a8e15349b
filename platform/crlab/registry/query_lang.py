"""The ``--where`` language of ``platform runs list``: a tokenizer and a recursive-descent parser.

Grammar (keywords in any case)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := KEY OP value
                | KEY ["not"] "in" "(" value ("," value)* ")"
                | KEY ["not"] "like" STRING
    OP         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    value      := NUMBER | STRING | "true" | "false" | "null"

A KEY is a name such as ``status``, ``config.data.crl_ratio`` or ``metrics.eval/pass@1.best``: a letter or
``_``, then letters, digits and ``_ . / @ -``. A NUMBER is ``3``, ``-0.5``, ``1e-6``; a STRING is quoted with
``'`` or ``"`` (a backslash escapes the next character). Nothing here knows what the keys mean
(:mod:`crlab.registry.query_keys`) or how they become SQL (:mod:`crlab.registry.query`); nothing is ever
evaluated as Python.

Errors are :class:`QueryError`: one line that gives the column and shows the expression with a ``^``
where the problem is, and says what was expected there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from crlab.errors import ConfigError

KEYWORDS = ("and", "or", "not", "in", "like", "true", "false", "null")
OPERATORS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
NAME_CHARS = "_./@-"
VALUE_HINT = "a value (a number, a 'string', true, false or null)"


class QueryError(ConfigError):
    """A ``--where``, ``--sort`` or ``--columns`` the registry cannot answer (exit code 2)."""

    def __init__(self, message: str, text: str = "", pos: int | None = None, option: str = "--where") -> None:
        self.text, self.pos, self.option = text, pos, option
        if pos is not None:
            pos = min(pos, len(text))
            message = f"{message} (column {pos + 1}: {text[:pos]}^{text[pos:]})"
        super().__init__(message, where=option)


class TokenKind(StrEnum):
    NAME = "name"
    NUMBER = "number"
    STRING = "string"
    KEYWORD = "keyword"
    OP = "op"
    OPEN = "("
    CLOSE = ")"
    COMMA = ","
    END = "end"


class LiteralKind(StrEnum):
    NUMBER = "number"
    STRING = "string"
    BOOL = "bool"
    NULL = "null"


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    value: Any
    pos: int
    text: str

    def describe(self) -> str:
        return "the end of the expression" if self.kind == TokenKind.END else repr(self.text)


@dataclass(frozen=True)
class Literal:
    value: float | int | str | bool | None
    pos: int
    text: str

    @property
    def kind(self) -> LiteralKind:
        if self.value is None:
            return LiteralKind.NULL
        if isinstance(self.value, bool):
            return LiteralKind.BOOL
        return LiteralKind.STRING if isinstance(self.value, str) else LiteralKind.NUMBER


@dataclass(frozen=True)
class Compare:
    key: str
    key_pos: int
    op: str  # = != < <= > >= in like
    values: tuple[Literal, ...]  # one, or the list of ``in``
    op_pos: int


@dataclass(frozen=True)
class Not:
    part: Node


@dataclass(frozen=True)
class And:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Node, ...]


Node = Compare | Not | And | Or


def tokenize(text: str) -> list[Token]:
    tokens, i = [], 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "(),":
            tokens.append(Token(TokenKind(c), c, i, c))
            i += 1
        elif c in "=!<>":
            op = text[i : i + 2] if text[i : i + 2] in OPERATORS else c
            if op not in OPERATORS:
                raise QueryError("expected an operator (= != < <= > >=)", text, i)
            tokens.append(Token(TokenKind.OP, OPERATORS[op], i, op))
            i += len(op)
        elif c in "'\"":
            i = _string(text, i, tokens)
        elif c.isdigit() or (c in "-+." and text[i + 1 : i + 2].replace(".", "").isdigit()):
            i = _number(text, i, tokens)
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < len(text) and (text[j].isalnum() or text[j] in NAME_CHARS):
                j += 1
            word = text[i:j]
            keyword = word.lower() in KEYWORDS
            kind = TokenKind.KEYWORD if keyword else TokenKind.NAME
            tokens.append(Token(kind, word.lower() if keyword else word, i, word))
            i = j
        else:
            raise QueryError(f"unexpected character {c!r}; expected a key, a value or an operator", text, i)
    tokens.append(Token(TokenKind.END, None, len(text), ""))
    return tokens


def _string(text: str, start: int, tokens: list[Token]) -> int:
    quote, chars, i = text[start], [], start + 1
    while i < len(text) and text[i] != quote:
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        chars.append(text[i])
        i += 1
    if i >= len(text):
        raise QueryError(f"unterminated string: expected a closing {quote}", text, start)
    tokens.append(Token(TokenKind.STRING, "".join(chars), start, text[start : i + 1]))
    return i + 1


def _number(text: str, start: int, tokens: list[Token]) -> int:
    j = start + 1
    while j < len(text) and (text[j].isalnum() or text[j] in ".+-"):
        if text[j] in "+-" and text[j - 1] not in "eE":
            break
        j += 1
    word = text[start:j]
    try:
        value: float | int = int(word) if word.lstrip("+-").isdigit() else float(word)
    except ValueError:
        raise QueryError(f"{word!r} is not a number", text, start) from None
    tokens.append(Token(TokenKind.NUMBER, value, start, word))
    return j


class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, kind: TokenKind, value: Any = None) -> bool:
        return self.tok.kind == kind and (value is None or self.tok.value == value)

    def fail(self, expected: str) -> QueryError:
        return QueryError(f"expected {expected}, found {self.tok.describe()}", self.text, self.tok.pos)

    def parse(self) -> Node:
        if self.at(TokenKind.END):
            raise self.fail("a condition such as status = 'completed'")
        node = self.expr()
        if not self.at(TokenKind.END):
            raise self.fail("'and', 'or' or the end of the expression")
        return node

    def expr(self) -> Node:
        parts = [self.and_expr()]
        while self.at(TokenKind.KEYWORD, "or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_expr(self) -> Node:
        parts = [self.not_expr()]
        while self.at(TokenKind.KEYWORD, "and"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def not_expr(self) -> Node:
        if self.at(TokenKind.KEYWORD, "not"):
            self.take()
            return Not(self.not_expr())
        if self.at(TokenKind.OPEN):
            self.take()
            node = self.expr()
            if not self.at(TokenKind.CLOSE):
                raise self.fail("')' or 'and', 'or'")
            self.take()
            return node
        return self.comparison()

    def comparison(self) -> Node:
        if not self.at(TokenKind.NAME):
            raise self.fail("a key (status, sweep, config.…, metrics.…), 'not' or '('")
        key = self.take()
        negated = self.at(TokenKind.KEYWORD, "not")
        if negated:
            self.take()
            if not (self.at(TokenKind.KEYWORD, "in") or self.at(TokenKind.KEYWORD, "like")):
                raise self.fail("'in' or 'like' after 'not'")
        op = self.tok
        if op.kind == TokenKind.OP:
            self.take()
            node: Node = Compare(key.value, key.pos, op.value, (self.value(),), op.pos)
        elif op.kind == TokenKind.KEYWORD and op.value == "in":
            self.take()
            node = Compare(key.value, key.pos, "in", self.value_list(), op.pos)
        elif op.kind == TokenKind.KEYWORD and op.value == "like":
            self.take()
            node = Compare(key.value, key.pos, "like", (self.value(),), op.pos)
        else:
            raise self.fail("an operator (= != < <= > >= in like) after the key")
        return Not(node) if negated else node

    def value(self) -> Literal:
        tok = self.tok
        if tok.kind in (TokenKind.NUMBER, TokenKind.STRING):
            self.take()
            return Literal(tok.value, tok.pos, tok.text)
        if tok.kind == TokenKind.KEYWORD and tok.value in ("true", "false", "null"):
            self.take()
            return Literal({"true": True, "false": False, "null": None}[tok.value], tok.pos, tok.text)
        raise self.fail(VALUE_HINT)

    def value_list(self) -> tuple[Literal, ...]:
        if not self.at(TokenKind.OPEN):
            raise self.fail("'(' to open the list of 'in'")
        self.take()
        values = [self.value()]
        while self.at(TokenKind.COMMA):
            self.take()
            values.append(self.value())
        if not self.at(TokenKind.CLOSE):
            raise self.fail("',' or ')' in the list of 'in'")
        self.take()
        return tuple(values)


def parse(text: str) -> Node:
    """The syntax tree of a ``--where`` expression; :class:`QueryError` when it is malformed."""
    return Parser(text).parse()
