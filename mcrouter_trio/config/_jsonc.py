"""mcrouter's JSON dialect: comments, trailing commas, strict value types.

mcrouter strips `//` and `/* */` comments with folly and parses with trailing
commas allowed, so real configs use both. We blank the extras out *in place*
(same length, newlines kept) before `json.loads`, so a syntax error's line and
column still point into the text the user wrote.

This module also holds what every later stage shares: `ConfigError`, the
`message @ $.path` problem format, and checks for mcrouter's strict types (an
integer option given as `"100"` is an error, as in folly's `parseInt`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

#: A position inside the JSON document: object keys and array indexes.
Path = tuple[str | int, ...]
#: One problem found while reading a config: where, and what is wrong.
Problem = tuple[Path, str]


class ConfigError(Exception):
    """A config that cannot be loaded.

    `errors` lists every problem found, each `"<message> @ <$.json.path>"`;
    `str()` gives one problem per line, prefixed by the source (file name).
    """

    def __init__(self, errors: Iterable[str], source: str = "<config>") -> None:
        self.errors: list[str] = list(errors)
        self.source = source
        # Passing both to Exception keeps the error picklable (args round-trip).
        super().__init__(self.errors, source)

    def __str__(self) -> str:
        return "\n".join(f"{self.source}: {error}" for error in self.errors)


class Invalid(ValueError):
    """One problem with a JSON value; whoever catches it knows the path."""


def render_path(root: str, path: Path) -> str:
    """`$.pools.A.servers[0]`: the notation cattrs' `transform_error` uses."""
    return root + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def render_problems(root: str, problems: Iterable[Problem]) -> list[str]:
    return [f"{message} @ {render_path(root, path)}" for path, message in problems]


# ---------------------------------------------------------------------------
# Strict JSON types


def describe(value: object) -> str:
    """A short human rendering of a JSON value for error messages."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_int(value: object, low: int | None = None, high: int | None = None) -> int:
    """An integer, optionally within `[low, high]` (either bound may be omitted)."""
    # bool is an int subclass in Python, but `true` is not an integer in JSON.
    if type(value) is not int:
        raise Invalid(f"expected an integer, got {describe(value)}")
    if low is not None and high is not None:
        wanted = f"in [{low}, {high}]"
    elif low is not None:
        wanted = f">= {low}"
    else:
        wanted = f"<= {high}"
    if (low is not None and value < low) or (high is not None and value > high):
        raise Invalid(f"expected an integer {wanted}, got {value}")
    return value


def check_float(value: object) -> float:
    if type(value) not in (int, float):
        raise Invalid(f"expected a number, got {describe(value)}")
    return float(value)  # type: ignore[arg-type]  # int or float, checked above


def check_bool(value: object) -> bool:
    if type(value) is not bool:
        raise Invalid(f"expected true or false, got {describe(value)}")
    return value


def check_str(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {describe(value)}")
    return value


def check_weights(value: object) -> tuple[float, ...]:
    """WeightedCh3 weights: numbers in [0, 1], one per server or child."""
    if not isinstance(value, list):
        raise Invalid(f"expected an array of numbers, got {describe(value)}")
    weights = []
    for item in value:
        weight = check_float(item)
        if not 0.0 <= weight <= 1.0:
            raise Invalid(f"weight {item} is out of range [0, 1]")
        weights.append(weight)
    return tuple(weights)


# ---------------------------------------------------------------------------
# Comments and trailing commas

# Strings are matched whole (an unterminated one runs to the end and is left
# for json to report), so `//`, `/*` and `,]` inside them are never touched.
_TOKENS = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"?)
    | (?P<comment>//[^\n]*|/\*.*?\*/)
    | (?P<unclosed>/\*)
    | (?P<space>\s+)
    | (?P<comma>,)
    | (?P<close>[\]}])
    | (?P<other>[^"/\s,\]}]+|/)
    """,
    re.VERBOSE | re.DOTALL,
)


def _blank(text: str) -> str:
    """Spaces of the same length, newlines kept (so line/column stay right)."""
    return re.sub(r"[^\r\n]", " ", text)


def strip_jsonc(text: str) -> str:
    """Plain JSON with comments and trailing commas replaced by spaces.

    Raises `Invalid` (with line/column) for an unterminated `/*` comment.
    """
    out: list[str] = []
    # Index in `out` of a comma that is trailing if the next token closes.
    pending_comma: int | None = None
    # The token before that comma: `[,]` and `{,}` stay errors, as in folly.
    last = ""
    for match in _TOKENS.finditer(text):
        kind = match.lastgroup
        token = match.group()
        if kind == "comment":
            out.append(_blank(token))
            continue
        if kind == "unclosed":
            line, column = _position(text, match.start())
            raise Invalid(f"unterminated /* comment at line {line} column {column}")
        if kind == "space":
            out.append(token)
            continue
        if kind == "close" and pending_comma is not None:
            out[pending_comma] = " "
        pending_comma = None
        if kind == "comma" and last not in ("", ",", "[", "{"):
            pending_comma = len(out)
        last = token[-1]
        out.append(token)
    return "".join(out)


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def loads_jsonc(text: str, *, source: str = "<config>") -> Any:
    """Parse mcrouter-style JSON; every syntax problem is a `ConfigError`."""
    if text.startswith("\ufeff"):
        text = " " + text[1:]  # a BOM from a Windows editor; keep columns aligned
    try:
        plain = strip_jsonc(text)
        return json.loads(plain)
    except Invalid as exc:
        raise ConfigError([f"invalid JSON: {exc}"], source) from None
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise ConfigError([message], source) from None
    except RecursionError:
        raise ConfigError(["invalid JSON: nested too deeply"], source) from None
