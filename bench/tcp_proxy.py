"""A TCP proxy on loopback that can cut or stall the network between an edge and the server.

It runs its own asyncio loop in a thread, so a test or a bench drives it with plain calls:

- :meth:`TcpProxy.cut`: every open connection is reset (RST) and new ones are reset as soon as
  they are accepted, until :meth:`TcpProxy.restore` (a cable pulled, a firewall that rejects).
- :meth:`TcpProxy.stall`: connections are accepted but no byte goes through in either direction
  until :meth:`TcpProxy.restore`; open connections freeze too (a black hole: a dead link or a
  NAT that forgot the flow). Bytes held by TCP are delivered after the restore, as after a
  real partition heals.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, port: int = 0):
        self.target = (target_host, target_port)
        self.requested_port = port
        self.port = 0
        self.counters: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._down = False
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- control from any thread ---------------------------------------------------------------
    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def cut(self) -> None:
        """Reset every connection and every new one until :meth:`restore`."""
        self._call(self._cut)

    def stall(self) -> None:
        """Accept, but forward nothing (open connections freeze too) until :meth:`restore`."""
        self._call(lambda: self._flowing.clear())
        self.counters["stalls"] += 1

    def restore(self) -> None:
        def up() -> None:
            self._down = False
            self._flowing.set()

        self._call(up)

    def _call(self, fn) -> None:
        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # -- the loop's side ------------------------------------------------------------------------
    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.requested_port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()

    def _cut(self) -> None:
        self._down = True
        self.counters["cuts"] += 1
        for w in list(self._writers):
            w.transport.abort()
            self.counters["connections_reset"] += 1
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters["accepted"] += 1
        if self._down:
            self.counters["connections_reset"] += 1
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            await self._flowing.wait()  # a stalled link: the client connected, nothing reaches the server
            if self._down:
                raise ConnectionResetError
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            self.counters["upstream_failures"] += 1
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(self._pump(reader, up_writer, "bytes_up"), self._pump(up_reader, writer, "bytes_down"))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: str) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
                self.counters[counter] += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
