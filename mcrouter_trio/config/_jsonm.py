"""JSONM: mcrouter's config preprocessor (macros, constants, `%param%`, built-ins).

Follows `mcrouter/lib/config/ConfigPreprocessor.cpp`: the top-level `macros` are
expanded and registered, then the rest of the document is expanded. A string
`"@name(a,b)"` calls a macro with string arguments (each expanded again, so an
argument may itself be a call); an object whose `type` names a macro calls it with
its fields; `"%x%"` is replaced by a parameter, a `vars` entry or a constant, and a
string that is only `%x%` takes the value's JSON type. `\\` escapes `@ % ( ) ,`.

Values are plain JSON values (dict, list, str, int, float, bool, None). JSON
booleans are not numbers here, as in folly: `isInt(true)` is false and
`equals(1, true)` is false.

Errors are `JsonmError`s carrying the JSON path of the value being expanded and the
macros being expanded around it, innermost last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from mcrouter_trio.config._jsonc import ConfigError, loads_jsonc
from mcrouter_trio.config._jsonm_builtins import BUILTINS, Body
from mcrouter_trio.config._jsonm_values import Args, Fail, Json, is_int, type_name

#: Nesting depth past which a macro is taken for a cycle (mcrouter: 250 by default).
NESTING_LIMIT: Final = 250


class JsonmError(Exception):
    """A preprocessing problem, where it happened and inside which macros."""

    def __init__(self, message: str, path: str = "$", macros: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.macros = macros

    def render(self) -> str:
        inside = "".join(f"macro '{name}': " for name in self.macros)
        return f"{inside}{self.message} @ {self.path}"


# ---------------------------------------------------------------------------
# Scopes


class _Scope:
    """Variables visible while expanding: macro parameters, `vars`, loop items.

    A macro's own scope is a *base*: lookups stop there (a macro body sees its
    parameters, not its caller's variables), as in mcrouter.
    """

    __slots__ = ("base", "lazy", "outer", "raw", "values")

    def __init__(self, outer: _Scope | None = None, *, base: bool = False) -> None:
        self.outer = outer
        self.base = base
        self.values: dict[str, Json] = {}
        self.raw: dict[str, Json] = {}  # not expanded yet (non-auto-expanding built-ins)
        self.lazy: dict[str, Json] = {}  # `vars`, expanded on first use

    def find(self, name: str, prep: Preprocessor) -> tuple[bool, Json]:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.lazy:
                raw = scope.lazy.pop(name)
                try:
                    scope.values[name] = prep.expand(raw, scope)
                except Fail as exc:
                    raise Fail(f"Variable '{name}':\n{exc}") from None
            if name in scope.values:
                return True, scope.values[name]
            if name in scope.raw:
                return False, None
            if scope.base:
                break
            scope = scope.outer
        return False, None

    def contains(self, name: str) -> bool:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.values or name in scope.lazy or name in scope.raw:
                return True
            if scope.base:
                break
            scope = scope.outer
        return False


class _Args:
    """A built-in's arguments: expanded ones, and raw ones it expands when it wants."""

    __slots__ = ("prep", "scope")

    def __init__(self, prep: Preprocessor, scope: _Scope) -> None:
        self.prep = prep
        self.scope = scope

    def __getitem__(self, name: str) -> Json:
        return self.scope.values[name]

    def has(self, name: str) -> bool:
        return name in self.scope.values or name in self.scope.raw

    def expand(self, name: str) -> Json:
        """A raw argument, expanded in the caller's scope."""
        raw = self.scope.raw.pop(name)
        return self.prep.expand(raw, self.scope.outer or _Scope())


class _Macro:
    def __init__(
        self, name: str, params: list[Json], body: Body, *, auto_expand: bool = True
    ) -> None:
        self.name = name
        self.body = body
        self.auto_expand = auto_expand
        #: (name, default or None, required)
        self.params: list[tuple[str, Json, bool]] = []
        optional_seen = False
        for param in params:
            optional = False
            if isinstance(param, str):
                self.params.append((param, None, True))
            elif isinstance(param, dict):
                pname = param.get("name")
                if not isinstance(pname, str):
                    raise Fail("Macro param object: 'name' not found or not a string")
                flag = param.get("optional")
                if flag is not None and not isinstance(flag, bool):
                    raise Fail(
                        f"Incorrect definition for parameter '{pname}' in macro '{name}'."
                        f" Expected optional parameter 'optional' to be boolean,"
                        f" but got {type_name(flag)}!"
                    )
                if "default" in param:
                    if flag is False:
                        raise Fail(
                            f"Conflicting options provided for parameter '{pname}' in macro"
                            f" '{name}'. Default was set, but the parameter is also"
                            " explicitly marked as not optional."
                        )
                    optional = True
                    self.params.append((pname, param["default"], False))
                elif flag:
                    optional = True
                    self.params.append((pname, None, False))
                else:
                    self.params.append((pname, None, True))
            else:
                raise Fail(f"Macro param is {type_name(param)}, expected string/object")
            if optional_seen and not optional:
                raise Fail(
                    f"Incorrect defaults/optionals in macro {name}. All params after"
                    " optional/default one should also be optional or have default value"
                )
            optional_seen = optional_seen or optional
        self.min_args = sum(1 for _, _, required in self.params if required)

    def call_with_strings(self, prep: Preprocessor, args: list[str], scope: _Scope) -> Json:
        if len(args) < self.min_args:
            raise Fail(
                f"Too few arguments for macro {self.name}."
                f" Expected at least {self.min_args} got {len(args)}"
            )
        if len(args) > len(self.params):
            raise Fail(
                f"Too many arguments for macro {self.name}."
                f" Expected at most {len(self.params)} got {len(args)}"
            )
        own = _Scope(scope, base=True)
        for (name, _, _), arg in zip(self.params, args, strict=False):
            if self.auto_expand:
                own.values[name] = prep.expand_string(arg, scope)
            else:
                own.raw[name] = arg
        for name, default, _ in self.params[len(args) :]:
            if default is not None:
                own.values[name] = default
        return self.body(_Args(prep, own))

    def call_with_object(self, prep: Preprocessor, call: dict[str, Json], scope: _Scope) -> Json:
        own = _Scope(scope, base=True)
        for name, default, required in self.params:
            if name not in call:
                if required:
                    raise Fail(f"Macro call {self.name}: '{name}' parameter not found")
                if default is not None:
                    own.values[name] = default
            elif self.auto_expand:
                own.values[name] = prep.expand(call[name], scope)
            else:
                own.raw[name] = call[name]
        return self.body(_Args(prep, own))


# ---------------------------------------------------------------------------
# String calls


def _find_unescaped(text: str, char: str, start: int = 0) -> int:
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
        comma = _find_unescaped(text, ",")
        if comma < 0:
            result.append(_trim(text))
            return result
        opened = _find_unescaped(text[:comma], "(")
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


def _unescape_until(text: str, start: int, char: str) -> tuple[str, int]:
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


# ---------------------------------------------------------------------------
# The preprocessor


class Preprocessor:
    """One expansion of one config: its macros, constants and imports."""

    def __init__(
        self,
        globals_: Mapping[str, Json],
        *,
        base_dir: Path | None = None,
        nesting_limit: int = NESTING_LIMIT,
    ) -> None:
        self._consts: dict[str, list[Any]] = {}  # name -> [value, expanded?]
        for name, value in globals_.items():
            self._consts[name] = [value, True]
        self._macros: dict[str, _Macro] = {}
        self._calls: dict[str, Callable[[dict[str, Json], _Scope], Json]] = {
            "macroDef": lambda call, _scope: call,
            "constDef": lambda call, _scope: call,
            "transform": self._transform,
            "process": self._process,
            "foreach": self._foreach,
        }
        self._base_dir = base_dir or Path.cwd()
        self._depth = nesting_limit
        self._import_cache: dict[str, Json] = {}
        #: Every file read by `@import`, in order (for reloading when one changes).
        self.imported: list[str] = []
        self.path: list[str | int] = []
        self.in_macros: list[str] = []
        for name, params, body, auto_expand in BUILTINS:
            self.add_builtin(name, params, body, auto_expand=auto_expand)
        self.add_builtin("import", ["path", {"name": "default", "optional": True}],
                         self._import, auto_expand=False)  # fmt: skip
        self.add_builtin("defined", ["name"], self._defined)

    # -- entry point ----------------------------------------------------------

    def preprocess(self, document: dict[str, Json]) -> dict[str, Json]:
        """The document without `macros`, every macro expanded."""
        try:
            if "macros" in document:
                self.path = ["macros"]
                macros = self._guarded_expand(document["macros"], _Scope())
                try:
                    self._define_all(macros)
                except Fail as exc:
                    raise self._error(str(exc)) from None
                document = {k: v for k, v in document.items() if k != "macros"}
            self.path = []
            result = self._guarded_expand(document, _Scope())
        except JsonmError:
            raise
        except RecursionError:
            raise self._error("Too many nested macros. Check for cycles.") from None
        assert isinstance(result, dict)
        return result

    def _guarded_expand(self, value: Json, scope: _Scope) -> Json:
        try:
            return self.expand(value, scope)
        except Fail as exc:
            raise self._error(str(exc)) from None

    def _error(self, message: str) -> JsonmError:
        path = "$"
        for part in self.path:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        return JsonmError(message, path, tuple(self.in_macros))

    # -- definitions ----------------------------------------------------------

    def _define_all(self, macros: Json) -> None:
        if isinstance(macros, list):
            for item in macros:
                self._define_all(item)
            return
        if not isinstance(macros, dict):
            raise Fail("config macros is not an array/object")
        for name, definition in macros.items():
            self.path = ["macros", name]
            self._define(name, definition)

    def _define(self, name: str, definition: Json) -> None:
        if not isinstance(definition, dict):
            raise self._error(f"'{name}' macro definition is not an object")
        kind = definition.get("type")
        if kind is None:
            raise self._error("macro definition: 'type' not found")
        if not isinstance(kind, str):
            raise self._error(f"macro definition type is {type_name(kind)}, string expected")
        if "result" not in definition:
            where = "Macro definition" if kind == "macroDef" else "constDef"
            raise self._error(f"{where}: 'result' not found")
        result = definition["result"]
        if kind == "macroDef":
            params = definition.get("params", [])
            if not isinstance(params, list):
                raise self._error(f"'{name}' macroDef params is not an array")

            def body(args: Args, result: Json = result) -> Json:
                assert isinstance(args, _Args)
                return self.expand(result, args.scope)

            try:
                self._macros[name] = _Macro(name, params, body)
            except Fail as exc:
                raise self._error(str(exc)) from None
        elif kind == "constDef":
            self._consts[name] = [result, False]
        else:
            raise self._error(f"Unknown macro definition type: {kind}")

    def add_builtin(
        self, name: str, params: list[Json], body: Body, *, auto_expand: bool = True
    ) -> None:
        self._macros[name] = _Macro(name, params, body, auto_expand=auto_expand)

    def _defined(self, args: Args) -> Json:
        """`defined(name)`: a variable of the caller or a constant (global params included)."""
        name = args["name"]
        if not isinstance(name, str):
            raise Fail(f"Defined: name is {type_name(name)}, string expected")
        assert isinstance(args, _Args)
        caller = args.scope.outer
        return (caller is not None and caller.contains(name)) or name in self._consts

    def _import(self, args: Args) -> Json:
        """`import(path[, default])`: a file's JSONM, expanded on its own, read once."""
        path = args.expand("path")
        if not isinstance(path, str):
            raise Fail(f"import path is {type_name(path)}, string expected")
        depth, macros = len(self.path), len(self.in_macros)
        try:
            return self.import_file(path)
        except Fail as exc:
            if args.has("default"):
                del self.path[depth:], self.in_macros[macros:]
                return args.expand("default")
            raise Fail(f"Import '{path}':\n{exc}") from None

    # -- expansion ------------------------------------------------------------

    def expand(self, value: Json, scope: _Scope) -> Json:
        self._depth -= 1
        try:
            if self._depth <= 0:
                raise Fail("Too many nested macros. Check for cycles.")
            if isinstance(value, str):
                return self.expand_string(value, scope)
            if isinstance(value, dict):
                return self._expand_object(value, scope)
            if isinstance(value, list):
                return self._expand_list(value, scope)
            return value
        finally:
            self._depth += 1

    def _expand_list(self, value: list[Json], scope: _Scope) -> list[Json]:
        result = []
        for index, item in enumerate(value):
            self.path.append(index)
            result.append(self.expand(item, scope))
            self.path.pop()
        return result

    def _expand_object(self, value: dict[str, Json], scope: _Scope) -> Json:
        if "vars" in value:
            variables = value["vars"]
            if not isinstance(variables, dict):
                raise Fail(f"vars is {type_name(variables)}, expected object")
            local = _Scope(scope)
            local.lazy.update(variables)
            for name in variables:
                local.find(name, self)
            scope = local
            value = {k: v for k, v in value.items() if k != "vars"}
        if "type" in value:
            kind = self.expand(value["type"], scope)
            if isinstance(kind, str):
                call = self._calls.get(kind)
                if call is not None:
                    return self._inside(kind, lambda: call(value, scope))
                macro = self._macros.get(kind)
                if macro is not None:
                    return self._inside(kind, lambda: macro.call_with_object(self, value, scope))
        result: dict[str, Json] = {}
        for key, item in value.items():
            self.path.append(key)
            new_key = self.expand(key, scope)
            if not isinstance(new_key, str):
                raise Fail("Expanded key is not a string")
            result[new_key] = self.expand(item, scope)
            self.path.pop()
        return result

    def _inside(self, name: str, run: Callable[[], Json]) -> Json:
        """Run a macro; a failure reports the config path of this call and the macro."""
        depth = len(self.path)
        self.in_macros.append(name)
        try:
            result = run()
        except Fail:
            del self.path[depth:]  # paths inside the macro's body mean nothing to the user
            raise
        self.in_macros.pop()
        return result

    def expand_string(self, text: str, scope: _Scope) -> Json:
        if not text:
            return ""
        if text[0] != "@":
            return self._replace_params(text, scope)
        opened = _find_unescaped(text, "(")
        args: list[str] = []
        if opened >= 0:
            if text[-1] != ")":
                raise Fail(f"No closing bracket for call '{text}'")
            name_text = text[1:opened]
            args = call_arguments(text[opened + 1 : -1])
        else:
            name_text = text[1:]
        name = self._replace_params(name_text, scope)
        if not isinstance(name, str):
            raise Fail(f"Macro name is {type_name(name)}, string expected")
        macro = self._macros.get(name)
        if macro is None:
            raise Fail(f"Macro: '{name}' not found")
        return self._inside(name, lambda: macro.call_with_strings(self, args, scope))

    def _replace_params(self, text: str, scope: _Scope) -> Json:
        if "%" not in text and "\\" not in text:
            return text
        out: list[str] = []
        index = 0
        while index < len(text):
            before, percent = _unescape_until(text, index, "%")
            out.append(before)
            if percent < 0:
                break
            name, closing = _unescape_until(text, percent + 1, "%")
            if closing < 0:
                raise Fail(f"Odd number of percent signs in string around '{text[percent + 1 :]}'")
            substitution = self._param(name, scope)
            if not "".join(out) and closing == len(text) - 1:
                return substitution
            if not isinstance(substitution, str):
                raise Fail(f"Param in string '{name}' is not a string")
            out.append(substitution)
            index = closing + 1
        return "".join(out)

    def _param(self, name: str, scope: _Scope) -> Json:
        found, value = scope.find(name, self)
        if found:
            return value
        entry = self._consts.get(name)
        if entry is None:
            raise Fail(f"Param in string: '{name}' not found")
        if not entry[1]:
            try:
                entry[0] = self.expand(entry[0], _Scope())
            except Fail as exc:
                raise Fail(f"Const '{name}':\n{exc}") from None
            entry[1] = True
        return entry[0]

    # -- imports --------------------------------------------------------------

    def import_file(self, path: str) -> Json:
        if path in self._import_cache:
            return self._import_cache[path]
        target = Path(path[len("file:") :]) if path.startswith("file:") else self._base_dir / path
        try:
            text = target.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Fail(f"cannot read '{target}': {getattr(exc, 'strerror', None) or exc}") from None
        try:
            document = loads_jsonc(text, source=str(target))
        except ConfigError as exc:
            raise Fail("; ".join(exc.errors)) from None
        self.imported.append(str(target))
        saved, self.path = self.path, []
        try:
            result = self.expand(document, _Scope())
        finally:
            self.path = saved
        self._import_cache[path] = result
        return result

    # -- object-form built-ins ------------------------------------------------

    def _field(self, call: dict[str, Json], name: str, where: str) -> Json:
        if name not in call:
            raise Fail(f"{where}: '{name}' not found")
        return call[name]

    def _name(self, call: dict[str, Json], field: str, default: str, where: str) -> str:
        value = call.get(field, default)
        if not isinstance(value, str):
            raise Fail(f"{where}: {field} is {type_name(value)}, string expected")
        return value

    def _transform(self, call: dict[str, Json], scope: _Scope) -> Json:
        dictionary = self.expand(self._field(call, "dictionary", "Transform"), scope)
        if not isinstance(dictionary, dict | list):
            raise Fail("Transform: dictionary is not array/object")
        if not dictionary:
            return dictionary
        item_transform = call.get("itemTransform")
        item_name = self._name(call, "itemName", "item", "Transform")
        key_name = self._name(call, "keyName", "key", "Transform")
        local = _Scope(scope)
        if isinstance(dictionary, list):
            if item_transform is None:
                raise Fail("Transform: itemTransform is required for array")
            result = []
            for index, item in enumerate(dictionary):
                local.values[key_name] = index
                local.values[item_name] = item
                result.append(self.expand(item_transform, local))
            return result
        key_transform = call.get("keyTransform")
        mapped: dict[str, Json] = {}
        for key, item in dictionary.items():
            local.values[key_name] = key
            local.values[item_name] = item
            new_key = key if key_transform is None else self.expand(key_transform, local)
            if not isinstance(new_key, str | list):
                raise Fail("Transformed key is not array/string")
            if new_key == []:
                continue
            new_item = item if item_transform is None else self.expand(item_transform, local)
            for one in [new_key] if isinstance(new_key, str) else new_key:
                if not isinstance(one, str):
                    raise Fail("Transformed key list item is not a string")
                mapped[one] = new_item
        return mapped

    def _process(self, call: dict[str, Json], scope: _Scope) -> Json:
        dictionary = self.expand(self._field(call, "dictionary", "Process"), scope)
        value = self.expand(self._field(call, "initialValue", "Process"), scope)
        transform = self._field(call, "transform", "Process")
        if not isinstance(dictionary, dict | list):
            raise Fail("Process: dictionary is not array/object")
        local = _Scope(scope)
        names = (
            self._name(call, "keyName", "key", "Process"),
            self._name(call, "itemName", "item", "Process"),
            self._name(call, "valueName", "value", "Process"),
        )
        pairs = dictionary.items() if isinstance(dictionary, dict) else enumerate(dictionary)
        for key, item in pairs:
            local.values.update(zip(names, (key, item, value), strict=True))
            value = self.expand(transform, local)
        return value

    def _foreach(self, call: dict[str, Json], scope: _Scope) -> Json:
        source = self.expand(self._field(call, "from", "Foreach"), scope)
        if not isinstance(source, dict | list):
            raise Fail("Foreach: from is not object/array")
        item_name = self._name(call, "item", "item", "Foreach")
        key_name = self._name(call, "key", "key", "Foreach")
        top = len(source)
        if "top" in call:
            wanted = self.expand(call["top"], scope)
            if not is_int(wanted) or wanted < 0:
                raise Fail("Foreach: top should be a non-negative integer")
            top = wanted
        local = _Scope(scope)
        result: Json = None
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in pairs:
            if top <= 0:
                break
            local.values[key_name] = key
            local.values[item_name] = item
            if "where" in call:
                where = self.expand(call["where"], local)
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
                result = _append_use(result, self.expand(call["use"], local))
            top -= 1
        if result is None:
            if "noMatchResult" in call:
                return self.expand(call["noMatchResult"], scope)
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
