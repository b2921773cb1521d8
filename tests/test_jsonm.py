"""JSONM, mcrouter's config preprocessor: each built-in and rule, and its errors.

Results follow `mcrouter/lib/config/ConfigPreprocessor.cpp`; one row per rule.
"""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from mcrouter_trio.config._jsonm import JsonmError, Preprocessor
from mcrouter_trio.hashing._spooky import spooky_hash64
from mcrouter_trio.ops._host import local_addresses

MACROS: dict[str, Any] = {
    "pool": {
        "type": "macroDef",
        "params": ["name", {"name": "port", "default": "11211"}],
        "result": {"name": "%name%", "servers": ["127.0.0.1:%port%"]},
    },
    "typed": {"type": "macroDef", "params": ["value"], "result": "%value%"},
    "five": {"type": "constDef", "result": "@int(5)"},
    "region": {"type": "constDef", "result": "%default-region%"},
    "opt": {
        "type": "macroDef",
        "params": ["a", {"name": "b", "optional": True}],
        "result": "@defined(b)",
    },
    "scoped": {"type": "macroDef", "params": [], "result": "@defined(outside)"},
}


def expand(value: Any, macros: Any = None, **globals_: Any) -> Any:
    document = {"macros": MACROS if macros is None else macros, "x": value}
    params = {"default-region": "dc1", **globals_}
    return Preprocessor(params).preprocess(document)["x"]


EXPANSIONS = [
    # Macros: string calls and object calls, defaults, constants, type preservation.
    ("@pool(A, 5000)", {"name": "A", "servers": ["127.0.0.1:5000"]}),
    ("@pool(A)", {"name": "A", "servers": ["127.0.0.1:11211"]}),
    ({"type": "pool", "name": "B"}, {"name": "B", "servers": ["127.0.0.1:11211"]}),
    ("@typed(@int(7))", 7),
    ({"type": "typed", "value": [1, True]}, [1, True]),
    ("%five%", 5),
    ("n%region%", "ndc1"),
    ("@opt(1)", False),
    ("@opt(1,2)", True),
    ({"vars": {"outside": 1}, "y": "@scoped"}, {"y": False}),
    ({"vars": {"v": "@int(3)", "w": "%v%"}, "y": "%w%"}, {"y": 3}),
    ("50\\% off \\@home \\(a\\,b\\)", "50% off @home (a,b)"),
    ("@str(  padded  )", "padded"),
    # Casts.
    ("@int(12)", 12),
    ("@int(-3)", -3),
    ("@double(1.5)", 1.5),
    ("@str(@int(5))", "5"),
    ("@bool(true)", True),
    ("@bool(@int(0))", False),
    # Logic and comparison.
    ("@not(@bool(false))", True),
    ("@and(@bool(false),@fail(never expanded))", False),
    ("@or(@bool(true),@fail(never expanded))", True),
    ("@if(@bool(true),yes,@fail(never expanded))", "yes"),
    ("@equals(a,a)", True),
    ("@equals(@int(1),@bool(true))", False),
    ("@less(@int(1),@int(2))", True),
    ("@less(b,a)", False),
    # Type tests.
    ("@isInt(@bool(true))", False),
    ("@isInt(@int(1))", True),
    ("@isString(a)", True),
    ("@isBool(@bool(false))", True),
    ("@isDouble(@double(1))", True),
    ({"type": "isArray", "value": []}, True),
    ({"type": "isObject", "value": {}}, True),
    # Arithmetic: C++ integer semantics.
    ("@add(@int(2),@int(3))", 5),
    ("@sub(@int(2),@int(3))", -1),
    ("@mul(@int(4),@int(3))", 12),
    ("@div(@int(-7),@int(2))", -3),
    ("@mod(@int(-7),@int(2))", -1),
    ("@bitwiseAnd(@int(6),@int(3))", 2),
    ("@bitwiseOr(@int(6),@int(3))", 7),
    ("@bitwiseXor(@int(6),@int(3))", 5),
    ("@bitwiseNot(@int(0))", -1),
    ("@bitwiseLeftShift(@int(1),@int(4))", 16),
    ("@bitwiseRightShift(@int(16),@int(4))", 1),
    # Collections.
    ("@range(@int(1),@int(3))", [1, 2, 3]),
    ("@split(a-b--c,-)", ["a", "b", "", "c"]),
    ("@select(@split(a-b-c,-),@int(-1))", "c"),
    ({"type": "select", "dictionary": {"a": 1}, "key": "z", "default": 9}, 9),
    ({"type": "keys", "dictionary": {"a": 1, "b": 2}}, ["a", "b"]),
    ({"type": "values", "dictionary": {"a": 1, "b": 2}}, [1, 2]),
    ({"type": "merge", "params": [[1], [2, 3]]}, [1, 2, 3]),
    ({"type": "merge", "params": [{"a": 1, "b": 1}, {"b": 2}]}, {"a": 1, "b": 2}),
    ({"type": "merge", "params": ["ab", "cd"]}, "abcd"),
    ({"type": "contains", "dictionary": [1, "a"], "key": "a"}, True),
    ({"type": "contains", "dictionary": {"a": 1}, "key": "b"}, False),
    ("@contains(haystack,st)", True),
    ({"type": "empty", "dictionary": []}, True),
    ({"type": "size", "dictionary": {"a": 1, "b": 2}}, 2),
    ({"type": "slice", "dictionary": [0, 1, 2, 3], "from": 1, "to": 2}, [1, 2]),
    ({"type": "slice", "dictionary": "abcdef", "from": 2, "to": 10}, "cdef"),
    (
        {"type": "slice", "dictionary": {"a": 1, "b": 2, "c": 3}, "from": "b", "to": "c"},
        {"b": 2, "c": 3},
    ),
    ({"type": "sort", "dictionary": [3, 1, 2]}, [1, 2, 3]),
    ({"type": "set", "dictionary": {"a": 1}, "key": "b", "value": 2}, {"a": 1, "b": 2}),
    ({"type": "set", "dictionary": [0, 0], "key": 1, "value": 5}, [0, 5]),
    ({"type": "define", "result": {"k": "%five%"}}, {"k": 5}),
    ("@defined(five)", True),
    ("@defined(nothing)", False),
    # Loops.
    ({"type": "foreach", "from": [1, 2, 3], "item": "i", "where": "@less(%i%,@int(3))"}, [1, 2]),
    (
        {"type": "foreach", "from": {"a": 1, "b": 2}, "use": {"x%key%": "%item%"}},
        {"xa": 1, "xb": 2},
    ),
    ({"type": "foreach", "from": [1, 2, 3], "top": 2, "use": ["%item%", "%item%"]}, [1, 1, 2, 2]),
    ({"type": "foreach", "from": [1], "where": "@bool(false)", "noMatchResult": "none"}, "none"),
    ({"type": "transform", "dictionary": [1, 2], "itemTransform": "@add(%item%,%key%)"}, [1, 3]),
    ({"type": "transform", "dictionary": {"a": 1}, "keyTransform": "k%key%"}, {"ka": 1}),
    (
        {
            "type": "process",
            "dictionary": [1, 2, 3],
            "initialValue": 0,
            "transform": "@add(%value%,%item%)",
        },
        6,
    ),
    # Keys expand too; macroDef/constDef outside `macros` are left as they are.
    ({"%region%": 1}, {"dc1": 1}),
    ({"type": "constDef", "result": "%x%"}, {"type": "constDef", "result": "%x%"}),
]


@pytest.mark.parametrize(("value", "expected"), EXPANSIONS)
def test_expansion(value: Any, expected: Any) -> None:
    result = expand(value)
    assert result == expected
    assert type(result) is type(expected)


def test_seeded_shuffle_is_a_permutation_and_repeatable() -> None:
    call = {"type": "shuffle", "dictionary": list(range(20)), "seed": 3}
    first = expand(call)
    assert sorted(first) == list(range(20))
    assert expand(call) == first


def test_hash_of_a_string_is_spooky_hash_v2_64_as_a_signed_int() -> None:
    for text in ("", "prn1c05", "a longer host name than sixteen bytes"):
        unsigned = spooky_hash64(text.encode(), 0)
        assert expand(f"@hash({text})") == unsigned - ((unsigned >> 63) << 64)


BAD = [
    ("@nope(1)", "Macro: 'nope' not found @ $.x"),
    ("%missing%", "Param in string: 'missing' not found @ $.x"),
    ("a%b", "Odd number of percent signs in string around 'b' @ $.x"),
    # `@pool()` is a call with one empty argument, as in mcrouter; `@pool` has none.
    ("@pool", "macro 'pool': Too few arguments for macro pool. Expected at least 1 got 0 @ $.x"),
    ("@pool(a,b,c)@", "No closing bracket for call '@pool(a,b,c)@' @ $.x"),
    (
        "@pool(a,b,c)",
        "macro 'pool': Too many arguments for macro pool. Expected at most 2 got 3 @ $.x",
    ),
    (
        {"type": "pool"},
        "macro 'pool': Macro call pool: 'name' parameter not found @ $.x",
    ),
    ("@pool(a,@int(1))", "macro 'pool': Param in string 'port' is not a string @ $.x"),
    (["ok", {"y": "@div(@int(1),@int(0))"}], "macro 'div': div: B == 0 @ $.x[1].y"),
    ("@select(abc,z)", "macro 'select': Select: dictionary is string, expected array/object @ $.x"),
    ("@fail(stop here)", "macro 'fail': stop here @ $.x"),
    ("@if(maybe,a,b)", "macro 'if': If: condition is not bool @ $.x"),
    (
        "@int(12abc)",
        "macro 'int': Can not cast string to int:\nInvalid leading character: \"12abc\" @ $.x",
    ),
    ({"vars": []}, "vars is array, expected object @ $.x"),
    ({"type": "foreach", "from": 3}, "macro 'foreach': Foreach: from is not object/array @ $.x"),
    ("@pool(a", "No closing bracket for call '@pool(a' @ $.x"),
]


@pytest.mark.parametrize(("value", "message"), BAD)
def test_errors_name_the_path_and_the_macros(value: Any, message: str) -> None:
    with pytest.raises(JsonmError) as caught:
        expand(value)
    assert caught.value.render() == message


def test_errors_inside_nested_macros_name_every_macro() -> None:
    macros = {
        "outer": {"type": "macroDef", "params": ["a"], "result": {"r": "@inner(%a%)"}},
        "inner": {"type": "macroDef", "params": ["a"], "result": "@select(%a%,zz)"},
    }
    with pytest.raises(JsonmError) as caught:
        expand({"k": ["@outer(q)"]}, macros)
    assert caught.value.render() == (
        "macro 'outer': macro 'inner': macro 'select':"
        " Select: dictionary is string, expected array/object @ $.x.k[0]"
    )


def test_a_recursive_macro_is_reported_not_a_crash() -> None:
    macros = {"loop": {"type": "macroDef", "params": ["a"], "result": "@loop(%a%)"}}
    with pytest.raises(JsonmError) as caught:
        expand("@loop(1)", macros)
    assert caught.value.message == "Too many nested macros. Check for cycles."


BAD_DEFINITIONS = [
    ({"m": 1}, "'m' macro definition is not an object @ $.macros.m"),
    ({"m": {"result": 1}}, "macro definition: 'type' not found @ $.macros.m"),
    ({"m": {"type": "macroDef"}}, "Macro definition: 'result' not found @ $.macros.m"),
    ({"m": {"type": "nope", "result": 1}}, "Unknown macro definition type: nope @ $.macros.m"),
    (
        {"m": {"type": "macroDef", "params": [{"name": "a", "default": 1}, "b"], "result": 1}},
        "Incorrect defaults/optionals in macro m. All params after optional/default one"
        " should also be optional or have default value @ $.macros.m",
    ),
    ("x", "config macros is not an array/object @ $.macros"),
]


@pytest.mark.parametrize(("macros", "message"), BAD_DEFINITIONS)
def test_bad_macro_definitions(macros: Any, message: str) -> None:
    with pytest.raises(JsonmError) as caught:
        Preprocessor({}).preprocess({"macros": macros})
    assert caught.value.render() == message


def test_macros_may_be_a_list_of_objects() -> None:
    macros = [{"a": {"type": "constDef", "result": 1}}, [{"b": {"type": "constDef", "result": 2}}]]
    assert expand(["%a%", "%b%"], macros) == [1, 2]


def test_import_is_relative_to_the_config_and_tracked(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pools.json").write_text(
        '{"A": {"servers": ["127.0.0.1:%PORT%"]}, // comments are fine\n}'
    )
    (tmp_path / "abs.json").write_text('"absolute"')
    prep = Preprocessor({"PORT": "5000"}, base_dir=tmp_path)
    result = prep.preprocess(
        {
            "pools": "@import(sub/pools.json)",
            "again": "@import(sub/pools.json)",
            "abs": f"@import(file:{tmp_path / 'abs.json'})",
            "missing": "@import(nowhere.json, fallback)",
        }
    )
    assert result == {
        "pools": {"A": {"servers": ["127.0.0.1:5000"]}},
        "again": {"A": {"servers": ["127.0.0.1:5000"]}},
        "abs": "absolute",
        "missing": "fallback",
    }
    assert prep.imported == [str(tmp_path / "sub" / "pools.json"), str(tmp_path / "abs.json")]


def test_a_missing_import_without_default_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JsonmError) as caught:
        Preprocessor({}, base_dir=tmp_path).preprocess({"p": "@import(none.json)"})
    assert caught.value.render().startswith("macro 'import': Import 'none.json':\ncannot read")
    assert caught.value.path == "$.p"


# ---------------------------------------------------------------------------
# weightedHash: mcrouter's RendezvousHash, recomputed here step by step from
# `RendezvousHash.cpp` and folly's `fnv64_buf_BROKEN` / `twang_mix64`.

U64 = 2**64


def ref_fnv64_broken(data: bytes) -> int:
    """folly's loop: hash += hash<<1 + hash<<4 + ... + hash<<40, then xor a *signed* byte."""
    value = 14695981039346656037
    for byte in data:
        shifts = (0, 1, 4, 5, 7, 8, 40)
        value = sum(value << s for s in shifts) % U64
        signed = byte - 256 if byte >= 128 else byte
        value ^= signed % U64
    return value


def ref_twang_mix64(key: int) -> int:
    key = ((U64 - 1 - key) + (key << 21)) % U64
    key ^= key >> 24
    key = (key + (key << 3) + (key << 8)) % U64
    key ^= key >> 14
    key = (key + (key << 2) + (key << 4)) % U64
    key ^= key >> 28
    return (key + (key << 31)) % U64


def ref_weighted_hash(weights: dict[str, float], key: int | str) -> str:
    key_hash = key % U64 if isinstance(key, int) else spooky_hash64(key.encode(), 0)
    clamped = {name: max(float(weight), 0.0) for name, weight in weights.items()}
    total = sum(clamped.values())
    best, best_score = next(iter(weights)), -1.0
    for name, weight in clamped.items():
        share = weight / total
        combined = ref_twang_mix64((ref_fnv64_broken(name.encode()) + key_hash) % U64)
        score = (combined / float(U64 - 1)) ** (1 / share) if share > 2.220446049250313e-16 else 0.0
        if score > best_score:
            best, best_score = name, score
    return best


WEIGHT_SETS = [
    {"a": 1, "b": 1, "c": 1},
    {"east": 0.7, "west": 0.2, "north": 0.1},
    {"x": 0, "y": 3, "z": -0.005},
    {f"cluster{i}": i + 1 for i in range(10)},
    {"ü": 0.5, "ß": 0.5},
]


@pytest.mark.parametrize("weights", WEIGHT_SETS)
def test_weighted_hash_is_mcrouters_rendezvous_hash(weights: dict[str, float]) -> None:
    picks = set()
    keys: list[int | str] = [0, 1, 2015, 12345, -7, 2**62, "hello world", "prn1c05", "ключ"]
    for key in keys:
        call = {"type": "weightedHash", "dictionary": weights, "key": key}
        picked = expand(call)
        assert picked == ref_weighted_hash(weights, key)
        picks.add(picked)
    heavy = [name for name, weight in weights.items() if weight > 0]
    assert picks <= set(heavy)


def test_weighted_hash_spreads_keys_by_weight() -> None:
    weights = {"a": 1, "b": 3}
    picks = [expand(f"@weightedHash(%w%, @int({key}))", w=weights) for key in range(400)]
    assert 60 < picks.count("a") < 140  # a quarter of 400, give or take


def test_weighted_hash_rows_of_mcrouters_own_test_file() -> None:
    """`config_preprocessor_test_file.json`, section weightedHash, and the two @hash rows."""
    assert expand({"type": "weightedHash", "dictionary": {"a": 0.5}, "key": 2015}) == "a"
    assert (
        expand({"type": "weightedHash", "dictionary": {"a": 0, "b": 1}, "key": "hello world"})
        == "b"
    )
    call = {
        "type": "define",
        "vars": {"weights": {"a": 0, "b": 1, "c": 0.5}},
        "result": "@weightedHash(%weights%, @int(12345))",
    }
    assert expand(call) == "b"
    assert expand("@hash(abcd)") == 6660178300034425268
    assert expand("@hash(@int(2313))") == -4996987850411076878


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"dictionary": [], "key": 1}, "WeightedHash: dictionary is array, expected object"),
        ({"dictionary": {}, "key": 15}, "WeightedHash: dictionary is empty"),
        ({"dictionary": {"a": "1"}, "key": 1}, "WeightedHash: a weight is string, expected number"),
        (
            {"dictionary": {"a": True}, "key": 1},
            "WeightedHash: a weight is boolean, expected number",
        ),
        ({"dictionary": {"a": -0.5}, "key": 1}, "WeightedHash: a weight -0.5 is negative"),
        (
            {"dictionary": {"a": 1}, "key": 1.5},
            "WeightedHash: key is double, expected string or int",
        ),
        (
            {"dictionary": {"a": 0, "b": 0}, "key": 1},
            "WeightedHash: failed to compute hash: Sum of weights is 0",
        ),
    ],
)
def test_weighted_hash_errors(call: dict[str, Any], message: str) -> None:
    with pytest.raises(JsonmError) as caught:
        expand({"type": "weightedHash", **call})
    assert caught.value.render() == f"macro 'weightedHash': {message} @ $.x"


# ---------------------------------------------------------------------------
# isLocalIp: the caller passes the host's addresses in.


def expand_on_host(value: Any, addresses: Any) -> Any:
    return Preprocessor({}, local_addresses=addresses).preprocess({"x": value})["x"]


HOST = [ip_address("127.0.0.1"), ip_address("::1"), ip_address("10.1.2.3")]


@pytest.mark.parametrize(
    ("ip", "local"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::0001", True),  # mcrouter's test file: the same address, written longer
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),  # IPv4-mapped equals the IPv4 address, as in folly
        ("192.0.2.1", False),
        ("10.1.2.4", False),
        ("not an ip", False),
        ("", False),
    ],
)
def test_is_local_ip(ip: str, local: bool) -> None:
    assert expand_on_host(f"@isLocalIp({ip})", HOST) is local
    assert expand_on_host({"type": "isLocalIp", "ip": ip}, HOST) is local


def test_is_local_ip_on_this_host() -> None:
    addresses = local_addresses()
    assert expand_on_host("@isLocalIp(127.0.0.1)", addresses) is True
    assert expand_on_host("@isLocalIp(192.0.2.1)", addresses) is False


def test_is_local_ip_errors() -> None:
    with pytest.raises(JsonmError) as caught:
        expand_on_host({"type": "isLocalIp", "ip": 5}, HOST)
    assert (
        caught.value.render() == "macro 'isLocalIp': isLocalIp: ip is int64, string expected @ $.x"
    )
    with pytest.raises(JsonmError) as caught:
        expand_on_host("@isLocalIp(127.0.0.1)", None)
    assert caught.value.render() == "macro 'isLocalIp': Can not enumerate local ips @ $.x"
    assert expand_on_host("@isLocalIp(nonsense)", None) is False
