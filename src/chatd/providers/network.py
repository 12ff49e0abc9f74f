"""httpcore's network interface on asyncio's own streams, for the provider clients' pools.

httpcore reaches asyncio through anyio: every read of a streamed answer entered an anyio cancel
scope for its timeout (which looks up the running library and the current task each time) and
paused and resumed the socket's reading. At 100 streaming chats that was ~10% of the daemon's CPU
for one read per token. Here a read is `StreamReader.read` under `asyncio.timeout` (and none when
there is no timeout). Same contract as httpcore's `AnyIOBackend` (timeouts and errors mapped to
the same httpcore exceptions, end of stream as b"", the same extra info, a close that does not
wait on the peer); tests/providers/test_network.py runs both against the same servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Coroutine, Iterable
from typing import Any

import httpcore2
from httpcore2._backends.base import AsyncNetworkBackend, AsyncNetworkStream
from httpcore2._types import SOCKET_OPTION
from httpcore2._utils import is_socket_readable

# As anyio's `connect_tcp`: the next address is tried this long after the previous one.
HAPPY_EYEBALLS_DELAY = 0.25


class AsyncioStream(AsyncNetworkStream):
    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            if timeout is None:
                return await self._reader.read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore2.ReadTimeout(exc) from exc
        except OSError as exc:
            raise httpcore2.ReadError(exc) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            if self._writer.is_closing():
                raise ConnectionResetError("the connection is closed")
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore2.WriteTimeout(exc) from exc
        except OSError as exc:
            raise httpcore2.WriteError(exc) from exc

    async def aclose(self) -> None:
        # As anyio closes a socket stream (and a TLS one that is not `standard_compatible`, as
        # httpcore opens them): no wait for the peer's close_notify or FIN.
        transport = self._writer.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            with contextlib.suppress(OSError):
                transport.write_eof()
        transport.close()
        await asyncio.sleep(0)
        transport.abort()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore2.ConnectTimeout(exc) from exc
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore2.ConnectError(exc) from exc
        except BaseException:
            await self.aclose()
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        writer = self._writer
        if info == "ssl_object":
            return writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return writer.get_extra_info("sockname")
        if info == "server_addr":
            return writer.get_extra_info("peername")
        if info == "socket":
            return writer.get_extra_info("socket")
        if info == "is_readable":
            # asyncio reads ahead into the reader: data or the end already read count as readable.
            reader = self._reader
            buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
            if buffered or reader.at_eof() or writer.transport.is_closing():
                return True
            return is_socket_readable(writer.get_extra_info("socket"))
        return None


async def _opened(
    opening: Coroutine[Any, Any, tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    timeout: float | None,
    socket_options: Iterable[SOCKET_OPTION] | None,
) -> AsyncNetworkStream:
    """A connection being opened, bounded by `timeout`, its errors as httpcore names them."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await opening
    except TimeoutError as exc:
        raise httpcore2.ConnectTimeout(exc) from exc
    except OSError as exc:
        raise httpcore2.ConnectError(exc) from exc
    sock = writer.get_extra_info("socket")
    for option in socket_options or ():
        sock.setsockopt(*option)
    return AsyncioStream(reader, writer)


class AsyncioBackend(AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        opening = asyncio.open_connection(
            host, port, local_addr=(local_address, 0) if local_address else None, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
        )  # fmt: skip
        return await _opened(opening, timeout, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SOCKET_OPTION] | None = None
    ) -> AsyncNetworkStream:
        return await _opened(asyncio.open_unix_connection(path), timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
