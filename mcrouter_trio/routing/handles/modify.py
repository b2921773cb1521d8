"""Routes that rewrite a request before passing it on: its key, or its exptime."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import attrs

from mcrouter_trio.messages import (
    EXPTIME_ARG,
    GET_LIKE,
    META,
    Op,
    Pending,
    Reply,
    Request,
    Result,
    error_reply,
)
from mcrouter_trio.protocol import values
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing._checks import Invalid, check_str
from mcrouter_trio.routing._combinators import sequence
from mcrouter_trio.routing._registry import config_field, route_type
from mcrouter_trio.routing.handles.destination import split_routing_prefix

#: memcached's (and mcrouter's MC_KEY_MAX_LEN) longest key.
MAX_KEY_LENGTH: Final = 250
_SPACE_OR_CONTROL: Final = re.compile(rb"[\x00-\x20\x7f]")
_ROUTING_PREFIX: Final = re.compile(r"/[^/]+/[^/]+/")


def key_problem(key: bytes) -> str | None:
    """mcrouter's `isKeyValid` with the space and control check, as its message."""
    if not key:
        return "invalid key: missing"
    if len(key) > MAX_KEY_LENGTH:
        return "invalid key: too long"
    if _SPACE_OR_CONTROL.search(key):
        return "invalid key: space or control character"
    return None


def _check_key_part(value: object) -> str:
    text = check_str(value)
    problem = key_problem(text.encode())
    if text and problem is not None:
        raise Invalid(f"invalid key prefix '{text}', {problem}")
    return text


def _check_optional_key_part(value: object) -> str | None:
    return None if value is None else _check_key_part(value)


def _check_routing_prefix(value: object) -> str | None:
    if value is None:
        return None
    text = check_str(value)
    if text and not _ROUTING_PREFIX.fullmatch(text):
        raise Invalid(f"set_routing_prefix: '{text}' is not a routing prefix ('/region/cluster/')")
    return text


@route_type("ModifyKeyRoute")
@attrs.frozen
class ModifyKeyRoute:
    """Rewrites the key (routing prefix and key) and sends the request on to `target`.

    - `set_routing_prefix`: the routing prefix the key gets (`""` drops it);
    - `ensure_key_prefix`: a key not starting with it gets it in front (with
      `modify_inplace`, over its first characters instead);
    - `replace_key_prefix`: a key starting with this has it replaced by
      `ensure_key_prefix`;
    - `set_key_suffix`: appended to every key.

    As in mcrouter (`ModifyKeyRoute::getModifiedKey`). A key that ends up invalid
    (empty, over 250 bytes) is answered `SERVER_ERROR ModifyKeyRoute: invalid key:
    ...`. The client sees its own key in VALUE lines and meta `k` echoes.
    """

    target: Route
    set_routing_prefix: str | None = config_field(default=None, check=_check_routing_prefix)
    ensure_key_prefix: str = config_field(default="", check=_check_key_part)
    replace_key_prefix: str | None = config_field(default=None, check=_check_optional_key_part)
    set_key_suffix: str = config_field(default="", check=_check_key_part)
    modify_inplace: bool = False

    def __attrs_post_init__(self) -> None:
        if self.modify_inplace and self.replace_key_prefix is not None:
            raise Invalid("replace_key_prefix and modify_inplace cannot be used together")

    def modified_key(self, key: bytes) -> bytes | None:
        """The key to send instead of `key`, or None to send it unchanged."""
        own_prefix, rest = split_routing_prefix(key)
        new_prefix = own_prefix
        if self.set_routing_prefix is not None:
            new_prefix = self.set_routing_prefix.encode()
        ensure = self.ensure_key_prefix.encode()
        suffix = self.set_key_suffix.encode()
        replace = self.replace_key_prefix
        if replace is not None and rest.startswith(replace.encode()):
            return new_prefix + ensure + rest[len(replace) :] + suffix
        if not rest.startswith(ensure):
            if self.modify_inplace and len(rest) >= len(ensure):
                rest = rest[len(ensure) :]
            return new_prefix + ensure + rest + suffix
        if self.set_routing_prefix is not None and new_prefix != own_prefix:
            return new_prefix + rest + suffix
        if suffix:
            return key + suffix
        return None

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if request.op in META and any(flag == b"b" for flag in request.args):
            return self.target.route(request, ctx)  # base64 keys are passed on as they are
        key = request.key
        new_key = self.modified_key(key)
        if new_key is None:
            return self.target.route(request, ctx)
        problem = key_problem(new_key)
        if problem is not None:
            return Pending(
                error_reply(Result.LOCAL_ERROR, f"ModifyKeyRoute: invalid key: {problem}")
            )
        return route_under_key(self.target, request, new_key, ctx, "ModifyKeyRoute")

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # keys are rewritten one by one

    def targets(self) -> Sequence[Route]:
        return (self.target,)


def route_under_key(
    target: Route, request: Request, new_key: bytes, ctx: RouteContext, name: str
) -> Pending:
    """Send `request` (one key) to `target` as `new_key`; the client sees its own key.

    The key comes back in the VALUE lines of a retrieval and in meta `k` echoes.
    """
    key = request.key
    if request.keys is not None:
        rewritten = request.with_keys([new_key])
    else:
        rewritten = request.with_key(new_key)
    pending = target.route(rewritten, ctx)
    if request.op in GET_LIKE:
        return sequence(pending, lambda reply: own_value_key(reply, key), name=name)
    if request.op in META and b"k" in request.args:
        return sequence(pending, lambda reply: own_meta_key(reply, new_key, key), name=name)
    return pending


def own_value_key(reply: Reply, key: bytes) -> Reply:
    """A one-key get reply with the client's key in its VALUE line."""
    if reply.result is not Result.FOUND:
        return reply
    blocks = [
        b"VALUE " + key + b" " + header.split(b" ", 2)[2] + block[len(header) :]
        for _key, header, block in values(reply.raw)
    ]
    return Reply(reply.result, b"".join(blocks) + b"END\r\n")


def own_meta_key(reply: Reply, sent: bytes, key: bytes) -> Reply:
    """A meta reply whose `k` flag echoes the client's key, not the one sent."""
    line, sep, rest = reply.raw.partition(b"\r\n")
    tokens = [b"k" + key if token == b"k" + sent else token for token in line.split(b" ")]
    return Reply(reply.result, b" ".join(tokens) + sep + rest)


_ACTIONS: Final = ("set", "min")


def _check_action(value: object) -> str:
    action = check_str(value)
    if action not in _ACTIONS:
        raise Invalid("action should be 'set' or 'min'")
    return action


def _meta_ttl_index(request: Request) -> tuple[int, int]:
    """Where the `T` flag of a meta request is in its args (-1: none), and its value."""
    first = 1 if request.op is Op.MS else 0  # ms: args[0] is the data length
    for index in range(first, len(request.args)):
        flag = request.args[index]
        if flag[:1] == b"T":
            try:
                return index, int(flag[1:])
            except ValueError:
                return index, 0
    return -1, 0


@route_type("ModifyExptimeRoute")
@attrs.frozen
class ModifyExptimeRoute:
    """Sends requests with an exptime to `target` with `exptime` instead.

    `action: "set"` (default) always replaces it; `"min"` replaces it when the
    request's is 0 (never expires) or larger. Deletes and commands without an
    exptime pass unchanged. Classic storage commands, touch, gat and gats carry an
    exptime; meta `ms` always does (its `T` flag, absent meaning 0), `mg` when it
    has a `T` flag (a touch).
    """

    target: Route
    exptime: int
    action: str = config_field(default="set", check=_check_action)

    def new_exptime(self, current: int) -> int | None:
        """The exptime to send instead of `current`, or None to keep it."""
        if self.action == "min" and current != 0 and current <= self.exptime:
            return None
        if self.action == "min" and self.exptime == 0:
            return None  # mcrouter builds no ModifyExptimeRoute for `min` with 0
        return self.exptime

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return self.target.route(self.rewrite(request), ctx)

    def rewrite(self, request: Request) -> Request:
        """`request` with the exptime this route gives it."""
        op = request.op
        index = EXPTIME_ARG.get(op)
        if index is not None and len(request.args) > index:
            try:
                current = int(request.args[index])
            except ValueError:
                return request  # memcached rejects it; let it say so
            new = self.new_exptime(current)
            return request if new is None else request.with_exptime(b"%d" % new)
        if op is Op.MS or op is Op.MG:
            at, current = _meta_ttl_index(request)
            if at < 0 and op is Op.MG:
                return request  # a plain read
            new = self.new_exptime(current)
            if new is None:
                return request
            args = list(request.args)
            if at < 0:
                args.append(b"T%d" % new)
            else:
                args[at] = b"T%d" % new
            return request.replace(args=tuple(args))
        return request

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return self.target.route_whole(self.rewrite(request), ctx, split)

    def targets(self) -> Sequence[Route]:
        return (self.target,)
