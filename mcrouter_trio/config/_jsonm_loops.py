"""JSONM's object-form built-ins that walk a collection: foreach, transform, process.

Each follows its namesake in mcrouter's `ConfigPreprocessor::BuiltIns`: the item
and key (and, for `process`, the running value) are variables of a scope around
the caller's, under the names the call chooses.
"""

from __future__ import annotations

from mcrouter_trio.config._jsonm_scope import Expander, Scope
from mcrouter_trio.config._jsonm_values import Fail, Json, is_int, type_name


def _field(call: dict[str, Json], name: str, where: str) -> Json:
    if name not in call:
        raise Fail(f"{where}: '{name}' not found")
    return call[name]


def _name(call: dict[str, Json], field: str, default: str, where: str) -> str:
    value = call.get(field, default)
    if not isinstance(value, str):
        raise Fail(f"{where}: {field} is {type_name(value)}, string expected")
    return value


def transform(prep: Expander, call: dict[str, Json], scope: Scope) -> Json:
    dictionary = prep.expand(_field(call, "dictionary", "Transform"), scope)
    if not isinstance(dictionary, dict | list):
        raise Fail("Transform: dictionary is not array/object")
    if not dictionary:
        return dictionary
    item_transform = call.get("itemTransform")
    item_name = _name(call, "itemName", "item", "Transform")
    key_name = _name(call, "keyName", "key", "Transform")
    local = Scope(scope)
    if isinstance(dictionary, list):
        if item_transform is None:
            raise Fail("Transform: itemTransform is required for array")
        result = []
        for index, item in enumerate(dictionary):
            local.values[key_name] = index
            local.values[item_name] = item
            result.append(prep.expand(item_transform, local))
        return result
    key_transform = call.get("keyTransform")
    mapped: dict[str, Json] = {}
    for key, item in dictionary.items():
        local.values[key_name] = key
        local.values[item_name] = item
        new_key = key if key_transform is None else prep.expand(key_transform, local)
        if not isinstance(new_key, str | list):
            raise Fail("Transformed key is not array/string")
        if new_key == []:
            continue
        new_item = item if item_transform is None else prep.expand(item_transform, local)
        for one in [new_key] if isinstance(new_key, str) else new_key:
            if not isinstance(one, str):
                raise Fail("Transformed key list item is not a string")
            mapped[one] = new_item
    return mapped


def process(prep: Expander, call: dict[str, Json], scope: Scope) -> Json:
    dictionary = prep.expand(_field(call, "dictionary", "Process"), scope)
    value = prep.expand(_field(call, "initialValue", "Process"), scope)
    transform = _field(call, "transform", "Process")
    if not isinstance(dictionary, dict | list):
        raise Fail("Process: dictionary is not array/object")
    local = Scope(scope)
    names = (
        _name(call, "keyName", "key", "Process"),
        _name(call, "itemName", "item", "Process"),
        _name(call, "valueName", "value", "Process"),
    )
    pairs = dictionary.items() if isinstance(dictionary, dict) else enumerate(dictionary)
    for key, item in pairs:
        local.values.update(zip(names, (key, item, value), strict=True))
        value = prep.expand(transform, local)
    return value


def foreach(prep: Expander, call: dict[str, Json], scope: Scope) -> Json:
    source = prep.expand(_field(call, "from", "Foreach"), scope)
    if not isinstance(source, dict | list):
        raise Fail("Foreach: from is not object/array")
    item_name = _name(call, "item", "item", "Foreach")
    key_name = _name(call, "key", "key", "Foreach")
    top = len(source)
    if "top" in call:
        wanted = prep.expand(call["top"], scope)
        if not is_int(wanted) or wanted < 0:
            raise Fail("Foreach: top should be a non-negative integer")
        top = wanted
    local = Scope(scope)
    result: Json = None
    pairs = source.items() if isinstance(source, dict) else enumerate(source)
    for key, item in pairs:
        if top <= 0:
            break
        local.values[key_name] = key
        local.values[item_name] = item
        if "where" in call:
            where = prep.expand(call["where"], local)
            if not isinstance(where, bool):
                raise Fail("Foreach: expanded 'where' is not boolean")
            if not where:
                continue
        if "use" not in call:
            if isinstance(source, list):
                result = [*(result or []), item]
            else:
                result = {**(result or {}), key: item}
        else:
            result = _append_use(result, prep.expand(call["use"], local))
        top -= 1
    if result is None:
        if "noMatchResult" in call:
            return prep.expand(call["noMatchResult"], scope)
        return {} if isinstance(source, dict) else []
    return result


def _append_use(result: Json, use: Json) -> Json:
    if result is None:
        if not isinstance(use, dict | list):
            raise Fail("Foreach: expanded item is not object/array")
        return use
    if isinstance(result, dict):
        if not isinstance(use, dict):
            raise Fail("Foreach: expanded item is not an object")
        return {**result, **use}
    if not isinstance(use, list):
        raise Fail("Foreach: expanded item is not an array")
    return [*result, *use]
