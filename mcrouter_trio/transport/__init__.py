"""Socket plumbing under the I/O layers: non-blocking reads and writes, TLS over BIOs.

`FastSocketIO` and `TLSSocket` move bytes for a task that owns a socket; `Parker`
and `WriteBatch` let synchronous code (routing, reply callbacks) wake a task or
defer a write to the end of a pass without a task switch per request.
"""

from mcrouter_trio.transport._socket import FastSocketIO, Parker, WriteBatch
from mcrouter_trio.transport._tls import TLSSocket

__all__ = ["FastSocketIO", "Parker", "TLSSocket", "WriteBatch"]
