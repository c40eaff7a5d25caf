"""The REST server's connections send each response at once (``TCP_NODELAY``).

Without it a response written in two parts (headers, then body) on a kept-alive connection waited
for the client's delayed ACK: 40 ms a request after the first, for every REST client and the
dashboard (asyncio sets the option only on sockets whose protocol says TCP, and the listening
socket was made with protocol 0).
"""

from __future__ import annotations

import socket


def test_kept_alive_rest_connections_have_nagle_off(server, api):
    for _ in range(3):  # one connection, kept alive
        assert api.get("/healthz").status_code == 200
    connections = server.call(_peer_options(server))
    assert connections and all(nodelay for nodelay in connections)


async def _peer_options(server) -> list[int]:
    """TCP_NODELAY of every connection the HTTP server holds (read on its own loop)."""
    state = server.server._http.server_state
    return [proto.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            for proto in state.connections]
