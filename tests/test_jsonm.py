"""JSONM, mcrouter's config preprocessor: each built-in and rule, and its errors.

Results follow `mcrouter/lib/config/ConfigPreprocessor.cpp`; one row per rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mcrouter_trio.config._jsonm import JsonmError, Preprocessor
from mcrouter_trio.hashing._spooky import spooky_hash64

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
