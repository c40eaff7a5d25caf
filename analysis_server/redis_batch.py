"""Many single-key commands in one round trip, on one Redis or on a Redis Cluster.

The ingest and listing paths send hundreds of small commands at a time. redis-py's pipelines pack
each command about 4x slower than writing the wire format (RESP) directly, so :class:`Batch`
writes it directly; :func:`execute` sends a batch on one pooled connection (one Redis) or on one
connection per cluster node, concurrently, grouping the commands by the slot of their key.
Replies come back in the batch's order; a command that failed (``WRONGTYPE``...) has its
exception in its place. A cluster that moved a slot (``MOVED``/``ASK``) is asked again through
redis-py's cluster client, which follows the redirection and refreshes its slot map.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

def bulk(b: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(b), b)


def _b(v) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, int):
        return b"%d" % v
    if isinstance(v, float):
        return repr(v).encode()
    return bytes(v)


def pack(*args) -> bytes:
    """One command in RESP (arguments: bytes, str, int or float)."""
    parts = [_b(a) for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(bulk(p) for p in parts)


class Batch:
    """Single-key commands to send together; :meth:`add` returns the index of the command's reply.

    ``args`` start with the command name and its key; the key decides the node on a cluster.
    """

    __slots__ = ("keys", "packed", "args")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.packed: list[bytes] = []
        self.args: list[tuple] = []

    def __len__(self) -> int:
        return len(self.packed)

    def add(self, *args) -> int:
        return self.add_keyed(args[1], *args)

    def add_packed(self, key, packed: bytes) -> int:
        """A command already in RESP (the ingest path writes its hottest commands itself)."""
        self.keys.append(_b(key))
        self.args.append(None)
        self.packed.append(packed)
        return len(self.packed) - 1

    def add_keyed(self, key, *args) -> int:
        """A command whose key is not its first argument (``EVAL script 1 key ...``)."""
        self.keys.append(_b(key))
        self.args.append(args)
        self.packed.append(pack(*args))
        return len(self.packed) - 1

    def extend(self, commands: Iterable[tuple]) -> None:
        for c in commands:
            self.add(*c)


def _unpack(packed: bytes) -> list[bytes]:
    """The arguments of a command in RESP (an array of bulk strings)."""
    args, _ = _parse(packed, 0)
    return args


def is_cluster(redis) -> bool:
    return isinstance(redis, RedisCluster)


async def execute(redis, batch: Batch, raise_errors: bool = False, retries: int = 1) -> list:
    """Every command's reply in order (an exception object for a command that failed, or raised
    with ``raise_errors``). A broken connection (Redis restarted, a node failed over, an idle
    connection cut) is replaced and the whole batch sent again ``retries`` times: commands that are
    not idempotent (``XADD``, ``HINCRBY``) may then apply twice, which the store's readers tolerate
    (a change-log entry read twice, a count one off until its period expires)."""
    if not batch.packed:
        return []
    for attempt in range(retries + 1):
        try:
            if is_cluster(redis):
                out = await _execute_cluster(redis, batch)
            else:
                out = await _execute_one(redis, b"".join(batch.packed), len(batch.packed))
            break
        except (RedisConnectionError, RedisTimeoutError, OSError):
            if attempt == retries:
                raise
            if is_cluster(redis):
                redis._initialize = True  # ask the nodes again: one may be gone
            await asyncio.sleep(0.05 * (attempt + 1))
    if raise_errors:
        for r in out:
            if isinstance(r, Exception):
                raise r
    return out


class _Incomplete(Exception):
    """The buffer ends inside a reply: read more."""


def _error(message: str) -> ResponseError:
    for prefix, cls in (("MOVED ", MovedError), ("ASK ", AskError), ("TRYAGAIN", TryAgainError),
                        ("NOSCRIPT", NoScriptError)):
        if message.startswith(prefix):
            return cls(message[len(prefix):].strip() if cls in (MovedError, AskError) else message)
    return ResponseError(message[4:] if message.startswith("ERR ") else message)


def _parse(buf: bytes, pos: int):
    """One RESP2/RESP3 reply from ``buf`` at ``pos``: (value, where the next one starts). Bulk strings
    are bytes, errors are exception objects, nulls None, doubles floats, maps dicts."""
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        raise _Incomplete
    t, line, p = buf[pos], buf[pos + 1:nl], nl + 2
    if t == 58:  # ':' integer
        return int(line), p
    if t == 36 or t == 61:  # '$' bulk string, '=' verbatim string
        n = int(line)
        if n < 0:
            return None, p
        if len(buf) < p + n + 2:
            raise _Incomplete
        return (buf[p:p + n] if t == 36 else buf[p + 4:p + n]), p + n + 2
    if t == 43:  # '+' simple string
        return line, p
    if t == 95:  # '_' null
        return None, p
    if t == 45:  # '-' error
        return _error(line.decode(errors="replace")), p
    if t in (42, 126, 62):  # '*' array, '~' set, '>' push
        n = int(line)
        if n < 0:
            return None, p
        out = []
        for _ in range(n):
            v, p = _parse(buf, p)
            out.append(v)
        return out, p
    if t == 37:  # '%' map
        d = {}
        for _ in range(int(line)):
            k, p = _parse(buf, p)
            v, p = _parse(buf, p)
            d[k] = v
        return d, p
    if t == 44:  # ',' double
        return float(line), p
    if t == 35:  # '#' boolean
        return line == b"t", p
    if t == 40:  # '(' big number
        return int(line), p
    raise ResponseError(f"unexpected reply type {chr(t)!r}")


async def _read_replies(conn, n: int) -> list:
    """``n`` replies read straight from the connection's stream (redis-py's parser awaits every line:
    about 5x slower for the small replies of a batch)."""
    reader = conn._reader
    buf, pos, out = b"", 0, []
    while len(out) < n:
        chunk = await reader.read(1 << 16)
        if not chunk:
            raise RedisConnectionError("Redis closed the connection")
        buf = buf[pos:] + chunk if pos else buf + chunk
        pos = 0
        while len(out) < n:
            try:
                value, pos = _parse(buf, pos)
            except _Incomplete:
                break
            out.append(value)
    if pos != len(buf):
        raise RedisConnectionError("more bytes than the replies asked for: the connection is out of step")
    return out


async def _execute_one(redis: aioredis.Redis, packed: bytes, n: int) -> list:
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(packed)
        return await _read_replies(conn, n)
    except BaseException:
        await conn.disconnect()  # half a reply may be left on it: do not reuse it
        raise
    finally:
        await pool.release(conn)


async def _execute_cluster(redis: RedisCluster, batch: Batch) -> list:
    if redis._initialize:
        await redis.initialize()
    nm = redis.nodes_manager
    groups: dict[str, tuple[object, list[int]]] = {}
    for i, key in enumerate(batch.keys):
        node = nm.get_node_from_slot(key_slot(key))
        groups.setdefault(node.name, (node, []))[1].append(i)
    out: list = [None] * len(batch.packed)

    async def run(node, idx: list[int]) -> None:
        conn = node.acquire_connection()
        try:
            await conn.send_packed_command(b"".join(batch.packed[i] for i in idx))
            for i, value in zip(idx, await _read_replies(conn, len(idx))):
                out[i] = value
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            node.release(conn)

    await asyncio.gather(*(run(node, idx) for node, idx in groups.values()))
    moved = [i for i, r in enumerate(out) if isinstance(r, (MovedError, AskError, TryAgainError))]
    if moved:  # a slot moved (resharding, failover): redis-py follows it and refreshes the map
        await redis.nodes_manager.initialize()
        for i in moved:
            try:
                if batch.args[i] is None:  # written to the wire directly: parse it back for redis-py
                    out[i] = await redis.execute_command(*_unpack(batch.packed[i]))
                    continue
                out[i] = await redis.execute_command(*batch.args[i])
            except ResponseError as e:
                out[i] = e
    return out
