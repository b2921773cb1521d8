"""JSONM scopes and macros: what a name means while a value is expanded.

A scope holds the variables visible at one point: a macro's parameters, `vars`,
loop items. A macro's own scope is a *base*: lookups stop there, so a macro body
sees its parameters (and the constants), never its caller's variables, as in
mcrouter's `ConfigPreprocessor::Context`.
"""

from __future__ import annotations

from typing import Protocol

from mcrouter_trio.config._jsonm_values import Body, Fail, Json, type_name


class Expander(Protocol):
    """What scopes and macros need of the preprocessor."""

    def expand(self, value: Json, scope: Scope) -> Json: ...

    def expand_string(self, text: str, scope: Scope) -> Json: ...


class Scope:
    """Variables visible while expanding: macro parameters, `vars`, loop items."""

    __slots__ = ("base", "lazy", "outer", "raw", "values")

    def __init__(self, outer: Scope | None = None, *, base: bool = False) -> None:
        self.outer = outer
        self.base = base
        self.values: dict[str, Json] = {}
        self.raw: dict[str, Json] = {}  # not expanded yet (non-auto-expanding built-ins)
        self.lazy: dict[str, Json] = {}  # `vars`, expanded on first use

    def find(self, name: str, prep: Expander) -> tuple[bool, Json]:
        scope: Scope | None = self
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
        scope: Scope | None = self
        while scope is not None:
            if name in scope.values or name in scope.lazy or name in scope.raw:
                return True
            if scope.base:
                break
            scope = scope.outer
        return False


class CallArgs:
    """A built-in's arguments: expanded ones, and raw ones it expands when it wants."""

    __slots__ = ("prep", "scope")

    def __init__(self, prep: Expander, scope: Scope) -> None:
        self.prep = prep
        self.scope = scope

    def __getitem__(self, name: str) -> Json:
        return self.scope.values[name]

    def has(self, name: str) -> bool:
        return name in self.scope.values or name in self.scope.raw

    def expand(self, name: str) -> Json:
        """A raw argument, expanded in the caller's scope."""
        raw = self.scope.raw.pop(name)
        return self.prep.expand(raw, self.scope.outer or Scope())


class Macro:
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

    def call_with_strings(self, prep: Expander, args: list[str], scope: Scope) -> Json:
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
        own = Scope(scope, base=True)
        for (name, _, _), arg in zip(self.params, args, strict=False):
            if self.auto_expand:
                own.values[name] = prep.expand_string(arg, scope)
            else:
                own.raw[name] = arg
        for name, default, _ in self.params[len(args) :]:
            if default is not None:
                own.values[name] = default
        return self.body(CallArgs(prep, own))

    def call_with_object(self, prep: Expander, call: dict[str, Json], scope: Scope) -> Json:
        own = Scope(scope, base=True)
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
        return self.body(CallArgs(prep, own))
