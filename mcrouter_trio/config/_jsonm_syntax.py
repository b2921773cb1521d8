"""The text of JSONM string calls: `@name(a, b)` arguments and `\\` escapes.

As mcrouter's `ConfigPreprocessor`: arguments split at top-level unescaped commas
(a nested call keeps its own), surrounding spaces trimmed (an escaped one kept).
"""

from __future__ import annotations

from mcrouter_trio.config._jsonm_values import Fail


def find_unescaped(text: str, char: str, start: int = 0) -> int:
    index = start
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == char:
            return index
        index += 1
    return -1


def _matching_bracket(text: str, index: int) -> int:
    depth = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if depth == 0:
            return index
        index += 1
    return -1


def _trim(text: str) -> str:
    """Strip whitespace, but keep an escaped trailing space (`a\\ `)."""
    text = text.lstrip()
    stripped = text.rstrip()
    if len(stripped) < len(text):
        slashes = len(stripped) - len(stripped.rstrip("\\"))
        if slashes % 2 == 1:
            return text[: len(stripped) + 1]
    return stripped


def call_arguments(text: str) -> list[str]:
    """The arguments of `@name(text)`, split at top-level unescaped commas."""
    result: list[str] = []
    while True:
        if not text:
            result.append("")
            return result
        comma = find_unescaped(text, ",")
        if comma < 0:
            result.append(_trim(text))
            return result
        opened = find_unescaped(text[:comma], "(")
        if opened >= 0:
            closing = _matching_bracket(text, opened)
            if closing < 0:
                raise Fail(f"Brackets do not match: {text}")
            if closing == len(text) - 1:
                result.append(_trim(text))
                return result
            comma = text.find(",", closing + 1)
            if comma < 0:
                raise Fail("No comma after closing bracket")
        result.append(_trim(text[:comma]))
        text = text[comma + 1 :]


def unescape_until(text: str, start: int, char: str) -> tuple[str, int]:
    """Unescaped text from `start` up to the next unescaped `char` (-1: none)."""
    out: list[str] = []
    index = start
    while index < len(text):
        current = text[index]
        if current == "\\":
            if index + 1 >= len(text):
                return "".join(out), -1
            out.append(text[index + 1])
            index += 2
            continue
        if current == char:
            return "".join(out), index
        out.append(current)
        index += 1
    return "".join(out), -1
