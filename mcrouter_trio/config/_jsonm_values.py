"""JSON values as mcrouter's preprocessor sees them (folly::dynamic's rules).

A JSON boolean is not a number here: `isInt(true)` is false, `equals(1, true)` is
false; values of different types order by type, as folly::dynamic's `<` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

Json = Any


class Fail(Exception):
    """A problem inside a macro; the preprocessor adds where and in which macros."""


class Args(Protocol):
    """A built-in's arguments: expanded ones by name, raw ones expanded on demand."""

    def __getitem__(self, name: str) -> Json: ...

    def has(self, name: str) -> bool: ...

    def expand(self, name: str) -> Json: ...


#: A built-in macro: its arguments in, its value out.
Body = Callable[[Args], Json]


def type_name(value: Json) -> str:
    """folly::dynamic's type names, which mcrouter's messages use."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def is_int(value: Json) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def json_equal(a: Json, b: Json) -> bool:
    """folly::dynamic equality: a boolean never equals a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if type_name(a) in ("int64", "double") and type_name(b) in ("int64", "double"):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


# folly::dynamic orders values of different types by type first.
_TYPE_ORDER: Final = {"null": 0, "array": 1, "boolean": 2, "double": 3, "int64": 4, "string": 6}


def json_less(a: Json, b: Json) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        raise Fail("Can not compare objects")
    ta, tb = type_name(a), type_name(b)
    numbers = ("int64", "double")
    if ta in numbers and tb in numbers:
        return bool(a < b)
    if ta != tb:
        return _TYPE_ORDER[ta] < _TYPE_ORDER[tb]
    if ta == "array":
        for x, y in zip(a, b, strict=False):
            if json_less(x, y):
                return True
            if json_less(y, x):
                return False
        return len(a) < len(b)
    if ta == "null":
        return False
    return bool(a < b)


class SortKey:
    """Sort key from `json_less`."""

    __slots__ = ("value",)

    def __init__(self, value: Json) -> None:
        self.value = value

    def __lt__(self, other: SortKey) -> bool:
        return json_less(self.value, other.value)
