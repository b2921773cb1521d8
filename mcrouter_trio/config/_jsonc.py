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

from mcrouter_trio.routing._checks import (
    Invalid,
    check_bool,
    check_float,
    check_int,
    check_str,
    check_weights,
    describe,
)

__all__ = [
    "ConfigError",
    "Invalid",
    "Path",
    "Problem",
    "check_bool",
    "check_float",
    "check_int",
    "check_str",
    "check_weights",
    "describe",
    "loads_jsonc",
    "render_problems",
]

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


def render_path(root: str, path: Path) -> str:
    """`$.pools.A.servers[0]`: the notation cattrs' `transform_error` uses."""
    return root + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def render_problems(root: str, problems: Iterable[Problem]) -> list[str]:
    return [f"{message} @ {render_path(root, path)}" for path, message in problems]


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
