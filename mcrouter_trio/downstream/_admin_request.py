"""The request an admin command routes: `route(op,KEY)` or `route(op,{JSON})`.

mcrouter's `ServiceInfo` takes an argument that starts with `{` and ends with `}`
as a request in JSON, by the field names of its request structs (`key`,
`exptime`, `flags`, `value`, `casToken`, `delta`), and any other argument as the
key. As mcrouter's `convertFromFollyDynamic` does, a field of the wrong type or
that the request does not have is ignored, and a missing one keeps its default
(an empty key, zeros, an empty value). The request is never sent: it only decides
where the routes would send it (a value's size, say, or an exptime).
"""

from __future__ import annotations

import json
from typing import Final

from mcrouter_trio.messages import GET_LIKE, STORAGE, Op, Request

#: The request names `route(op,key)` takes (mcrouter's names for these commands).
ROUTABLE_OPS: Final = {
    op.name.lower(): op
    for op in (*sorted(GET_LIKE), *sorted(STORAGE), Op.DELETE, Op.INCR, Op.DECR, Op.TOUCH)
}


class AdminError(Exception):
    """A command that fails: its value is `ERROR: <message>`."""


def admin_request(op: Op, argument: bytes) -> Request:
    """The request `route(op,argument)` routes: `argument` is a key or a request in JSON."""
    if argument[:1] == b"{" and argument[-1:] == b"}":
        return request_from_json(op, argument)
    return probe(op, argument)


def probe(op: Op, key: bytes) -> Request:
    """A request of `op` for `key`, as a client could have sent it (empty value)."""
    args: tuple[bytes, ...]
    if op in GET_LIKE:
        args = (b"0",) if op is Op.GAT or op is Op.GATS else ()
        return Request(op, key, (key,), args)
    if op in STORAGE:
        args = (b"0", b"0", b"0", b"0") if op is Op.CAS else (b"0", b"0", b"0")
        return Request(op, key, None, args, b"")
    if op is Op.INCR or op is Op.DECR:
        return Request(op, key, None, (b"1",))
    if op is Op.TOUCH:
        return Request(op, key, None, (b"0",))
    return Request(op, key)


def request_from_json(op: Op, text: bytes) -> Request:
    """A request of `op` from mcrouter's JSON form, e.g. `{"key":"k","value":"v"}`."""
    try:
        fields = json.loads(text)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise AdminError(f"json parse error: {exc}") from None
    if not isinstance(fields, dict):
        fields = {}
    key = _text(fields, "key") or b""
    exptime = b"%d" % _number(fields, "exptime")
    if op in GET_LIKE:
        args = (exptime,) if op is Op.GAT or op is Op.GATS else ()
        return Request(op, key, (key,), args)
    if op in STORAGE:
        value = _text(fields, "value") or b""
        storage_args: tuple[bytes, ...] = (
            b"%d" % _number(fields, "flags"),
            exptime,
            b"%d" % len(value),
        )
        if op is Op.CAS:
            storage_args += (b"%d" % _number(fields, "casToken"),)
        return Request(op, key, None, storage_args, value)
    if op is Op.INCR or op is Op.DECR:
        return Request(op, key, None, (b"%d" % _number(fields, "delta"),))
    if op is Op.TOUCH:
        return Request(op, key, None, (exptime,))
    return Request(op, key)


def _text(fields: dict[str, object], name: str) -> bytes | None:
    value = fields.get(name)
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else None


def _number(fields: dict[str, object], name: str) -> int:
    value = fields.get(name)
    return value if type(value) is int else 0  # a bool is not a number to folly
