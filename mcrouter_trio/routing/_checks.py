"""Strict checks for config values, shared by the config reader and route handles.

mcrouter's types are strict (folly's `parseInt`, `parseBool`): an integer option
given as `"100"` is an error, and so is `1` for `true`. A failed check raises
`Invalid`; whoever catches it knows the JSON path and reports `message @ path`.
Route handles use these checks on their own fields, so a handle module declares
its validation and the config builder needs no code for it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence


class Invalid(ValueError):
    """One problem with a JSON value; whoever catches it knows the path."""


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
    weights = check_weight_numbers(value)
    check_weight_range(weights, len(weights))
    return weights


def check_weight_numbers(value: object) -> tuple[float, ...]:
    """A route's WeightedCh3 weights, not yet checked against its children.

    mcrouter reads only one weight per child and ignores the rest, whatever they
    are: the route checks the first n with `check_weight_range`.
    """
    if not isinstance(value, list):
        raise Invalid(f"expected an array of numbers, got {describe(value)}")
    return tuple(check_float(item) for item in value)


def check_weight_range(weights: Sequence[float], n: int) -> None:
    """The first `n` weights (one per child) are in [0, 1]; the rest do not count."""
    for weight in weights[:n]:
        if not 0.0 <= weight <= 1.0:
            raise Invalid(f"weight {weight:g} is out of range [0, 1]")
