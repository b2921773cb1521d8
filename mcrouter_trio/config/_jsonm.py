"""JSONM: mcrouter's config preprocessor (macros, constants, `%param%`, built-ins).

Follows `mcrouter/lib/config/ConfigPreprocessor.cpp`: the top-level `macros` are
expanded and registered, then the rest of the document is expanded. A string
`"@name(a,b)"` calls a macro with string arguments (each expanded again, so an
argument may itself be a call); an object whose `type` names a macro calls it with
its fields; `"%x%"` is replaced by a parameter, a `vars` entry or a constant, and a
string that is only `%x%` takes the value's JSON type. `\\` escapes `@ % ( ) ,`.

Values are plain JSON values (dict, list, str, int, float, bool, None), compared
as folly compares them (`_jsonm_values`). Scopes and macros are in `_jsonm_scope`,
the text of string calls in `_jsonm_syntax`, the built-ins in `_jsonm_builtins`
and `_jsonm_loops`.

Errors are `JsonmError`s carrying the JSON path of the value being expanded and the
macros being expanded around it, innermost last.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Final

from mcrouter_trio.config._jsonc import ConfigError, loads_jsonc
from mcrouter_trio.config._jsonm_builtins import BUILTINS, is_local_ip
from mcrouter_trio.config._jsonm_loops import foreach, process, transform
from mcrouter_trio.config._jsonm_scope import CallArgs, Macro, Scope
from mcrouter_trio.config._jsonm_syntax import call_arguments, find_unescaped, unescape_until
from mcrouter_trio.config._jsonm_values import Args, Body, Fail, Json, type_name

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
# The preprocessor


class Preprocessor:
    """One expansion of one config: its macros, constants and imports.

    `globals_` are the global parameters (`%hostid%`, ...); `local_addresses` are
    this host's interface addresses, for `isLocalIp` (None: they could not be
    listed, and `isLocalIp` of an address fails as in mcrouter).
    """

    def __init__(
        self,
        globals_: Mapping[str, Json],
        *,
        base_dir: Path | None = None,
        nesting_limit: int = NESTING_LIMIT,
        local_addresses: Collection[IPv4Address | IPv6Address] | None = (),
    ) -> None:
        self._consts: dict[str, list[Any]] = {}  # name -> [value, expanded?]
        for name, value in globals_.items():
            self._consts[name] = [value, True]
        self._macros: dict[str, Macro] = {}
        self._calls: dict[str, Callable[[dict[str, Json], Scope], Json]] = {
            "macroDef": lambda call, _scope: call,
            "constDef": lambda call, _scope: call,
            "transform": partial(transform, self),
            "process": partial(process, self),
            "foreach": partial(foreach, self),
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
        self.add_builtin("isLocalIp", ["ip"], is_local_ip(local_addresses))

    # -- entry point ----------------------------------------------------------

    def preprocess(self, document: dict[str, Json]) -> dict[str, Json]:
        """The document without `macros`, every macro expanded."""
        try:
            if "macros" in document:
                self.path = ["macros"]
                macros = self._guarded_expand(document["macros"], Scope())
                try:
                    self._define_all(macros)
                except Fail as exc:
                    raise self._error(str(exc)) from None
                document = {k: v for k, v in document.items() if k != "macros"}
            self.path = []
            result = self._guarded_expand(document, Scope())
        except JsonmError:
            raise
        except RecursionError:
            raise self._error("Too many nested macros. Check for cycles.") from None
        assert isinstance(result, dict)
        return result

    def _guarded_expand(self, value: Json, scope: Scope) -> Json:
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
                assert isinstance(args, CallArgs)
                return self.expand(result, args.scope)

            try:
                self._macros[name] = Macro(name, params, body)
            except Fail as exc:
                raise self._error(str(exc)) from None
        elif kind == "constDef":
            self._consts[name] = [result, False]
        else:
            raise self._error(f"Unknown macro definition type: {kind}")

    def add_builtin(
        self, name: str, params: list[Json], body: Body, *, auto_expand: bool = True
    ) -> None:
        self._macros[name] = Macro(name, params, body, auto_expand=auto_expand)

    def _defined(self, args: Args) -> Json:
        """`defined(name)`: a variable of the caller or a constant (global params included)."""
        name = args["name"]
        if not isinstance(name, str):
            raise Fail(f"Defined: name is {type_name(name)}, string expected")
        assert isinstance(args, CallArgs)
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

    def expand(self, value: Json, scope: Scope) -> Json:
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

    def _expand_list(self, value: list[Json], scope: Scope) -> list[Json]:
        result = []
        for index, item in enumerate(value):
            self.path.append(index)
            result.append(self.expand(item, scope))
            self.path.pop()
        return result

    def _expand_object(self, value: dict[str, Json], scope: Scope) -> Json:
        if "vars" in value:
            variables = value["vars"]
            if not isinstance(variables, dict):
                raise Fail(f"vars is {type_name(variables)}, expected object")
            local = Scope(scope)
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

    def expand_string(self, text: str, scope: Scope) -> Json:
        if not text:
            return ""
        if text[0] != "@":
            return self._replace_params(text, scope)
        opened = find_unescaped(text, "(")
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

    def _replace_params(self, text: str, scope: Scope) -> Json:
        if "%" not in text and "\\" not in text:
            return text
        out: list[str] = []
        index = 0
        while index < len(text):
            before, percent = unescape_until(text, index, "%")
            out.append(before)
            if percent < 0:
                break
            name, closing = unescape_until(text, percent + 1, "%")
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

    def _param(self, name: str, scope: Scope) -> Json:
        found, value = scope.find(name, self)
        if found:
            return value
        entry = self._consts.get(name)
        if entry is None:
            raise Fail(f"Param in string: '{name}' not found")
        if not entry[1]:
            try:
                entry[0] = self.expand(entry[0], Scope())
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
            result = self.expand(document, Scope())
        finally:
            self.path = saved
        self._import_cache[path] = result
        return result

    # -- object-form built-ins ------------------------------------------------
