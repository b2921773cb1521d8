"""The built-in macros of mcrouter's preprocessor that need nothing but their arguments.

Each follows its namesake in `mcrouter/lib/config/ConfigPreprocessor.cpp`
(`BuiltIns`), messages included; integers behave as C++ int64 (division
truncates toward zero, results wrap). `import` and `defined` need the
preprocessor itself and live with it (`_jsonm.py`); the object-form `foreach`,
`transform` and `process` are in `_jsonm_loops.py`. `isLocalIp` needs the host's
addresses, which the caller looks up and passes in (`is_local_ip`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final

from mcrouter_trio.config._jsonm_values import (
    Args,
    Body,
    Fail,
    Json,
    SortKey,
    is_int,
    json_equal,
    json_less,
    type_name,
)
from mcrouter_trio.hashing._folly import folly_hash_str, twang_mix64
from mcrouter_trio.hashing._rendezvous import rendezvous_pick

_MASK64: Final = (1 << 64) - 1


def _ints(name: str, args: Args) -> tuple[int, int]:
    a, b = args["A"], args["B"]
    if not is_int(a):
        raise Fail(f"{name}: A is not an integer")
    if not is_int(b):
        raise Fail(f"{name}: B is not an integer")
    return a, b


def _wrap64(value: int) -> int:
    """int64 arithmetic wraps, as in C++."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _as_int(value: Json) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise Fail(f"Can not cast double to int:\nloss of precision converting {value}")
        return int(value)
    if isinstance(value, str):
        text = value
        if text[:1] in "+-":
            text = text[1:]
        if text.isdigit() and text.isascii():
            return int(value)
        raise Fail(f'Can not cast string to int:\nInvalid leading character: "{value}"')
    raise Fail(f"Can not cast {type_name(value)} to int:\nTypeError")


def _as_double(value: Json) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise Fail(f"Can not cast {type_name(value)} to double")


def _as_str(value: Json) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"  # folly::to<std::string>(bool)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value != int(value) or not math.isfinite(value) else str(value)
    raise Fail(f"Can not cast {type_name(value)} to string")


_TRUE: Final = {"true", "1", "yes", "on", "y"}
_FALSE: Final = {"false", "0", "no", "off", "n"}


def _as_bool(value: Json) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise Fail(f"Can not cast {type_name(value)} to boolean")


def _hash(args: Args) -> Json:
    value = args["value"]
    if is_int(value):
        return _wrap64(twang_mix64(value))
    if isinstance(value, str):
        return _wrap64(folly_hash_str(value))
    raise Fail(f"Hash: can not cast {type_name(value)} to int or string")


def _format_double(value: float) -> str:
    """A double as fmt's `{}` writes it: shortest round trip, no `.0` on whole numbers."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _weighted_hash(args: Args) -> Json:
    """`weightedHash(dictionary, key)`: the name `key` goes to under RendezvousHash."""
    dictionary, key = args["dictionary"], args["key"]
    if not isinstance(dictionary, dict):
        raise Fail(f"WeightedHash: dictionary is {type_name(dictionary)}, expected object")
    weights: list[float] = []
    for name, weight in dictionary.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise Fail(f"WeightedHash: {name} weight is {type_name(weight)}, expected number")
        if weight < -0.01:  # mcrouter lets rounding noise below zero through as 0
            raise Fail(f"WeightedHash: {name} weight {_format_double(float(weight))} is negative")
        weights.append(max(float(weight), 0.0))
    if not weights:
        raise Fail("WeightedHash: dictionary is empty")
    if is_int(key):
        key_hash = key & _MASK64
    elif isinstance(key, str):
        key_hash = folly_hash_str(key)
    else:
        raise Fail(f"WeightedHash: key is {type_name(key)}, expected string or int")
    names = list(dictionary)
    try:
        return names[rendezvous_pick(names, weights, key_hash)]
    except ValueError as exc:
        raise Fail(f"WeightedHash: failed to compute hash: {exc}") from None


def is_local_ip(addresses: Collection[IPv4Address | IPv6Address] | None) -> Body:
    """`isLocalIp(ip)` on a host with `addresses` (None: they could not be listed).

    Text that is not an IP address is not local; an IPv4-mapped IPv6 address
    equals the IPv4 address, as folly's `IPAddress` comparison has it.
    """
    local = None if addresses is None else {_unmapped(address) for address in addresses}

    def body(args: Args) -> Json:
        text = args["ip"]
        if not isinstance(text, str):
            raise Fail(f"isLocalIp: ip is {type_name(text)}, string expected")
        try:
            address = ip_address(text)
        except ValueError:
            return False
        if local is None:
            raise Fail("Can not enumerate local ips")
        return _unmapped(address) in local

    return body


def _unmapped(address: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _select(args: Args) -> Json:
    dictionary = args.expand("dictionary")
    key = args.expand("key")
    if isinstance(dictionary, dict):
        if not isinstance(key, str):
            raise Fail("Select: dictionary is an object, key is not a string")
        if key in dictionary:
            return dictionary[key]
        if args.has("default"):
            return args.expand("default")
        raise Fail(f"Select: '{key}' not found, default not specified")
    if isinstance(dictionary, list):
        if not is_int(key):
            raise Fail("Select: dictionary is an array, key is not an integer")
        index = key + len(dictionary) if key < 0 else key
        if 0 <= index < len(dictionary):
            return dictionary[index]
        if args.has("default"):
            return args.expand("default")
        raise Fail(f"Select: index {index} is out of range [0, {len(dictionary)})")
    raise Fail(f"Select: dictionary is {type_name(dictionary)}, expected array/object")


def _merge(args: Args) -> Json:
    params = args["params"]
    if not isinstance(params, list):
        raise Fail("Merge: 'params' is not array")
    if not params:
        raise Fail("Merge: empty params")
    first = params[0]
    if isinstance(first, list):
        result_list = list(first)
        for index, item in enumerate(params[1:], 1):
            if not isinstance(item, list):
                raise Fail(f"Merge: param {index} is not an array")
            result_list.extend(item)
        return result_list
    if isinstance(first, dict):
        result_dict = dict(first)
        for index, item in enumerate(params[1:], 1):
            if not isinstance(item, dict):
                raise Fail(f"Merge: param {index} is not an object")
            result_dict.update(item)
        return result_dict
    if isinstance(first, str):
        parts = [first]
        for index, item in enumerate(params[1:], 1):
            if not isinstance(item, str):
                raise Fail(f"Merge: param {index} is not a string")
            parts.append(item)
        return "".join(parts)
    raise Fail("Merge: first param is not array/object/string")


def _slice(args: Args) -> Json:
    start, stop, dictionary = args["from"], args["to"], args["dictionary"]
    if isinstance(dictionary, dict):
        if not isinstance(start, str):
            raise Fail("Slice: from is not a string")
        if not isinstance(stop, str):
            raise Fail("Slice: to is not a string")
        return {k: v for k, v in dictionary.items() if start <= k <= stop}
    if isinstance(dictionary, list | str):
        if not (is_int(start) and is_int(stop)):
            raise Fail("Slice: from/to is not an int")
        return dictionary[max(0, start) : max(0, min(stop + 1, len(dictionary)))]
    raise Fail("Slice: dictionary is not array/object/string")


def _split(args: Args) -> Json:
    text, delim = args["dictionary"], args["delim"]
    if not isinstance(text, str):
        raise Fail(f"Split: dictionary is {type_name(text)}, string expected")
    if not isinstance(delim, str):
        raise Fail(f"Split: delim is {type_name(delim)}, string expected")
    if not delim:
        return list(text) if text else [""]
    return text.split(delim)


def _set(args: Args) -> Json:
    key, value, dictionary = args["key"], args["value"], args["dictionary"]
    if isinstance(dictionary, dict):
        if not isinstance(key, str):
            raise Fail("Set: key is not a string")
        return {**dictionary, key: value}
    if isinstance(dictionary, list):
        if not is_int(key):
            raise Fail("Set: key is not an int")
        if not 0 <= key < len(dictionary):
            raise Fail(f"Set: key '{key}' is out of range [0..{len(dictionary)})")
        result = list(dictionary)
        result[key] = value
        return result
    raise Fail("Set: dictionary is not array/object")


def _range(args: Args) -> Json:
    start, stop = args["from"], args["to"]
    if not is_int(start):
        raise Fail("Range: from is not an integer")
    if not is_int(stop):
        raise Fail("Range: to is not an integer")
    return list(range(start, stop + 1))


def _contains(args: Args) -> Json:
    dictionary, key = args["dictionary"], args["key"]
    if isinstance(dictionary, dict):
        if not isinstance(key, str):
            raise Fail("Contains: dictionary is an object, key is not a string")
        return key in dictionary
    if isinstance(dictionary, list):
        return any(json_equal(item, key) for item in dictionary)
    if isinstance(dictionary, str):
        if not isinstance(key, str):
            raise Fail("Contains: dictionary is a string, key is not a string")
        return key in dictionary
    raise Fail(f"Contains: dictionary is {type_name(dictionary)}, expected object/array/string")


def _sized(name: str, args: Args) -> dict[str, Any] | list[Any] | str:
    value = args["dictionary"]
    if not isinstance(value, dict | list | str):
        raise Fail(f"{name}: dictionary is not object/array/string")
    return value


def _keys(args: Args) -> Json:
    dictionary = args["dictionary"]
    if not isinstance(dictionary, dict):
        raise Fail("Keys: dictionary is not object")
    return list(dictionary)


def _values(args: Args) -> Json:
    dictionary = args["dictionary"]
    if not isinstance(dictionary, dict):
        raise Fail("Values: dictionary is not object")
    return list(dictionary.values())


def _shuffle(args: Args) -> Json:
    array = args.expand("dictionary")
    if not isinstance(array, list):
        raise Fail("Shuffle: argument must be an array")
    shuffled = list(array)
    if args.has("seed"):
        seed = args.expand("seed")
        if not is_int(seed) or seed < 0:
            raise Fail("Shuffle: seed must be a non-negative integer")
        random.Random(seed).shuffle(shuffled)
    else:
        random.shuffle(shuffled)
    return shuffled


def _if(args: Args) -> Json:
    condition = args.expand("condition")
    if not isinstance(condition, bool):
        raise Fail("If: condition is not bool")
    branch = "is_true" if condition else "is_false"
    try:
        return args.expand(branch)
    except Fail as exc:
        raise Fail(f"If '{branch}':\n{exc}") from None


def _logical(name: str, short_circuit: bool) -> Body:
    def body(args: Args) -> Json:
        a = args.expand("A")
        if not isinstance(a, bool):
            raise Fail(f"{name}: A is {type_name(a)}, expected bool")
        if a is short_circuit:
            return short_circuit
        b = args.expand("B")
        if not isinstance(b, bool):
            raise Fail(f"{name}: B is {type_name(b)}, expected bool")
        return b

    return body


def _not(args: Args) -> Json:
    a = args["A"]
    if not isinstance(a, bool):
        raise Fail("not: A is not bool")
    return not a


def _sort(args: Args) -> Json:
    array = args["dictionary"]
    if not isinstance(array, list):
        raise Fail("sort: dictionary is not an array")
    return sorted(array, key=SortKey)


def _fail(args: Args) -> Json:
    message = args["msg"]
    raise Fail(message if isinstance(message, str) else repr(message))


def _divide(name: str, op: Callable[[int, int], int]) -> Body:
    def body(args: Args) -> Json:
        a, b = _ints(name, args)
        if b == 0:
            raise Fail(f"{name}: B == 0")
        return op(a, b)

    return body


def _c_div(a: int, b: int) -> int:
    """C++ integer division truncates toward zero."""
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def _c_mod(a: int, b: int) -> int:
    return a - b * _c_div(a, b)


def _binary(name: str, op: Callable[[int, int], int]) -> Body:
    return lambda args: _wrap64(op(*_ints(name, args)))


def _check_shift(name: str, op: Callable[[int, int], int]) -> Body:
    def body(args: Args) -> Json:
        a, b = _ints(name, args)
        if not 0 <= b < 64:
            raise Fail(f"{name}: B must be 0..63")
        return _wrap64(op(a & _MASK64, b))

    return body


def _bitwise_not(args: Args) -> Json:
    a = args["A"]
    if not is_int(a):
        raise Fail("bitwiseNot: A is not an integer")
    return ~a


_VALUE: Final = ["value"]
_AB: Final = ["A", "B"]


def _optional(name: str) -> dict[str, Any]:
    return {"name": name, "optional": True}


#: (name, parameters, body, whether arguments are expanded before the call).
#: Those not auto-expanded (`if`, `and`, `or`, `select`, `shuffle`) expand only
#: the arguments they use.
BUILTINS: Final[list[tuple[str, list[Any], Body, bool]]] = [
    ("hash", _VALUE, _hash, True),
    ("weightedHash", ["dictionary", "key"], _weighted_hash, True),
    ("int", _VALUE, lambda a: _as_int(a["value"]), True),
    ("double", _VALUE, lambda a: _as_double(a["value"]), True),
    ("str", _VALUE, lambda a: _as_str(a["value"]), True),
    ("bool", _VALUE, lambda a: _as_bool(a["value"]), True),
    ("keys", ["dictionary"], _keys, True),
    ("values", ["dictionary"], _values, True),
    ("merge", ["params"], _merge, True),
    ("select", ["dictionary", "key", _optional("default")], _select, False),
    ("shuffle", ["dictionary", _optional("seed")], _shuffle, False),
    ("slice", ["dictionary", "from", "to"], _slice, True),
    ("split", ["dictionary", "delim"], _split, True),
    ("range", ["from", "to"], _range, True),
    ("contains", ["dictionary", "key"], _contains, True),
    ("empty", ["dictionary"], lambda a: len(_sized("empty", a)) == 0, True),
    ("size", ["dictionary"], lambda a: len(_sized("size", a)), True),
    ("equals", _AB, lambda a: json_equal(a["A"], a["B"]), True),
    ("less", _AB, lambda a: json_less(a["A"], a["B"]), True),
    ("isArray", _VALUE, lambda a: isinstance(a["value"], list), True),
    ("isBool", _VALUE, lambda a: isinstance(a["value"], bool), True),
    ("isInt", _VALUE, lambda a: is_int(a["value"]), True),
    ("isDouble", _VALUE, lambda a: isinstance(a["value"], float), True),
    ("isObject", _VALUE, lambda a: isinstance(a["value"], dict), True),
    ("isString", _VALUE, lambda a: isinstance(a["value"], str), True),
    ("bitwiseAnd", _AB, _binary("bitwiseAnd", lambda x, y: x & y), True),
    ("bitwiseOr", _AB, _binary("bitwiseOr", lambda x, y: x | y), True),
    ("bitwiseXor", _AB, _binary("bitwiseXor", lambda x, y: x ^ y), True),
    ("bitwiseLeftShift", _AB, _check_shift("bitwiseLeftShift", lambda x, y: x << y), True),
    ("bitwiseRightShift", _AB, _check_shift("bitwiseRightShift", lambda x, y: x >> y), True),
    ("bitwiseNot", ["A"], _bitwise_not, True),
    ("and", _AB, _logical("and", False), False),
    ("or", _AB, _logical("or", True), False),
    ("not", ["A"], _not, True),
    ("add", _AB, _binary("add", lambda x, y: x + y), True),
    ("sub", _AB, _binary("sub", lambda x, y: x - y), True),
    ("mul", _AB, _binary("mul", lambda x, y: x * y), True),
    ("div", _AB, _divide("div", _c_div), True),
    ("mod", _AB, _divide("mod", _c_mod), True),
    ("fail", ["msg"], _fail, True),
    ("sort", ["dictionary"], _sort, True),
    ("set", ["dictionary", "key", "value"], _set, True),
    ("if", ["condition", "is_true", "is_false"], _if, False),
    ("define", ["result"], lambda a: a["result"], True),
]
