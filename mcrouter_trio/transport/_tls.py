"""TLS over a non-blocking socket with memory BIOs, decrypting everything per read.

`trio.SSLStream` moves at most one TLS record per `receive_some` and takes locks
and checkpoints around every call, which makes a pipelined connection pay a Trio
wake-up per record. `TLSSocket` does what `_socket.FastSocketIO` does for plain
TCP: one non-blocking read takes everything the kernel has, every complete
record in it is decrypted at once, and a write encrypts a whole batch into one
send. It is a `trio.abc.Stream` (the destinations use it as one), and its
synchronous `decrypt`/`encrypt` let the client reactor serve TLS clients the same
way it serves plain ones.

Raw bytes leave through one buffer, in order: a write that blocks keeps the rest
there, and bytes produced meanwhile (by a read that had to answer the peer, say)
queue behind it rather than overtaking it.
"""

from __future__ import annotations

import os
import ssl
from typing import Final

import trio

RAW_RECEIVE_SIZE: Final = 262144
_PLAIN_CHUNK: Final = 65536


class TLSSocket(trio.abc.Stream):
    """One TLS connection over a connected `trio.SocketStream`."""

    def __init__(
        self,
        tcp: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.tcp = tcp
        self.socket = tcp.socket
        self.fd = tcp.socket.fileno()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
        self._raw_out = bytearray()
        self._read_first = False
        #: The peer sent close_notify or closed the TCP connection.
        self.eof = False

    # -- what trio.SSLStream would also answer --------------------------------------------

    @property
    def session(self) -> ssl.SSLSession | None:
        return self.ssl_object.session

    @property
    def session_reused(self) -> bool:
        return self.ssl_object.session_reused

    def version(self) -> str | None:
        return self.ssl_object.version()

    # -- handshake -------------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Complete the handshake; ssl.SSLError if TLS refuses, OSError if the peer left."""
        while True:
            try:
                self.ssl_object.do_handshake()
            except ssl.SSLWantReadError:
                await self._send_pending()
                if not await self._receive_raw():
                    raise ssl.SSLEOFError("EOF during the TLS handshake") from None
                continue
            except ssl.SSLError:
                # Send our alert (if any) so the peer learns why, then give up.
                self._queue_outgoing()
                self.write_some()
                raise
            await self._send_pending()
            return

    # -- synchronous core, shared with the reactor ---------------------------------------

    def decrypt(self, raw: bytes) -> bytes:
        """Feed bytes read from the socket; return all the plaintext now complete.

        Sets `eof` on close_notify. Raises ssl.SSLError on a corrupt stream. Any bytes
        TLS must send in answer (key updates) are queued for the next write.
        """
        incoming = self._incoming
        if raw:
            incoming.write(raw)
        chunks: list[bytes] = []
        ssl_object = self.ssl_object
        while True:
            try:
                chunk = ssl_object.read(_PLAIN_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            chunks.append(chunk)
            if not incoming.pending and not ssl_object.pending():
                # Everything received is decrypted: one more read could only raise
                # SSLWantReadError, which costs 1-3 µs to raise and catch.
                break
        if self._outgoing.pending:
            self._queue_outgoing()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def encrypt(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt `data` onto the raw output buffer (see `write_some`)."""
        view = memoryview(data)
        write = self.ssl_object.write
        while view:
            view = view[write(view) :]
        self._queue_outgoing()

    @property
    def buffered(self) -> bool:
        """Whether received bytes wait to be decrypted (read along with the handshake)."""
        return bool(self._incoming.pending or self.ssl_object.pending())

    @property
    def raw_pending(self) -> int:
        return len(self._raw_out)

    def _queue_outgoing(self) -> None:
        self._raw_out += self._outgoing.read()

    def write_some(self) -> bool:
        """Write what the socket takes now; True when nothing is left. OSError if broken."""
        out = self._raw_out
        if not out:
            return True
        try:
            sent = os.write(self.fd, out)
        except BlockingIOError:
            return False
        if sent == len(out):
            out.clear()
            return True
        del out[:sent]
        return False

    async def _send_pending(self) -> None:
        self._queue_outgoing()
        while not self.write_some():
            await trio.lowlevel.wait_writable(self.socket)

    async def _receive_raw(self) -> bool:
        """Read raw bytes into the incoming BIO; False on EOF."""
        while True:
            try:
                raw = os.read(self.fd, RAW_RECEIVE_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.socket)
                continue
            if not raw:
                return False
            self._incoming.write(raw)
            return True

    # -- trio.abc.Stream, for the destinations -------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            if self.buffered:
                data = self.decrypt(b"")
                if data or self.eof:
                    return data
            while True:
                if self._read_first:
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.lowlevel.wait_readable(self.socket)
                try:
                    raw = os.read(self.fd, RAW_RECEIVE_SIZE)
                except BlockingIOError:
                    self._read_first = False
                    continue
                if not raw:
                    return b""
                self._read_first = len(raw) == RAW_RECEIVE_SIZE
                data = self.decrypt(raw)
                if self._raw_out:
                    # Only the writer waits for writability; what the socket does
                    # not take now leaves with the next batch.
                    self.write_some()
                if data or self.eof:
                    return data
        except (ssl.SSLError, OSError) as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.encrypt(bytes(data) if isinstance(data, memoryview) else data)
            await self._send_pending()
        except (ssl.SSLError, OSError) as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self.socket)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.tcp)
