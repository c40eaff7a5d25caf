"""Erased means gone from Redis's files too: the append-only file is rewritten and the RDB snapshot
saved again after erasures (batched) and on a timer.

Deleting a key removes it from Redis's memory and appends ``DEL`` to ``appendonly.aof``; the
commands that wrote the face (its base layer, feature, enhancement layer, an identity's name and
notes) stay in that file, and in the last RDB snapshot, until Redis rewrites them. Redis does so
by itself only when the AOF has doubled and passed 64 MB, so a quiet site would keep erased
biometrics for ever. :class:`Compactor` asks for ``BGREWRITEAOF`` (when the AOF is on) and then
``BGSAVE`` ``after_erase_s`` after the first erasure of a batch (every erasure until the rewrite
starts shares it), ``after_erase_s`` after the server starts (a restart forgets which erasures were
still waiting for their rewrite), and every ``interval_s`` whatever happened, which also covers
records that Redis expired by itself. The RDB file is saved even when no snapshots are configured:
one may exist anyway (an operator's ``BGSAVE``, ``SHUTDOWN SAVE``, a replica's full sync) and it
would keep what was erased after it.

Both commands fork a child that writes the new file next to the old one and renames it over it;
the old file's blocks go back to the filesystem (see the README for what that means on disk).
An external Redis may refuse the commands (ACL, renamed commands): the failure is logged once,
reported in ``/readyz`` and the README gives the operator's recipe.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a running rewrite or save is checked
BUSY_TIMEOUT_S = 600.0  # a rewrite or save that has not finished by then is given up (tried again later)


class CompactionFailed(Exception):
    """Redis refused or failed a rewrite or save (the message says which and why)."""


class Compactor:
    """Rewrites Redis's AOF and RDB files after erasures and on a timer (one per server process)."""

    def __init__(self, redis: aioredis.Redis, after_erase_s: float, interval_s: float, enabled: bool = True):
        self.redis = redis
        self.after_erase_s = after_erase_s
        self.interval_s = interval_s
        self.enabled = enabled
        self._dirty = asyncio.Event()
        self._erased_at: float | None = None  # monotonic time of the first erasure not yet compacted
        self.compactions = 0
        self.last_error = ""  # why the last compaction failed ("" after a success)
        self.last_done: float | None = None  # wall-clock time the last compaction finished

    def erased(self) -> None:
        """Something was erased (or expired): rewrite the files within ``after_erase_s``."""
        if self._erased_at is None:
            self._erased_at = time.monotonic()
        self._dirty.set()

    @property
    def pending(self) -> bool:
        """Whether erased data may still be in Redis's files."""
        return self._erased_at is not None

    async def run(self) -> None:
        """Forever: wait for an erasure (or the timer), let a batch gather, compact."""
        if not self.enabled:
            return
        self.erased()  # erasures a restart interrupted before their rewrite
        next_timer = time.monotonic() + self.interval_s
        while True:
            try:
                await asyncio.wait_for(self._dirty.wait(), max(0.0, next_timer - time.monotonic()))
            except TimeoutError:
                pass
            if self._erased_at is not None:
                await asyncio.sleep(max(0.0, self._erased_at + self.after_erase_s - time.monotonic()))
            # Erasures from here on may miss the snapshot the rewrite forks: they start the next batch.
            self._dirty.clear()
            erased_at, self._erased_at = self._erased_at, None
            try:
                await self.compact()
            except (CompactionFailed, RedisError, OSError) as e:
                if str(e) != self.last_error:
                    log.error("erased data may stay in Redis's files: %s (retried in %.0f s; see the README, "
                              "'Erasure')", e, min(self.interval_s, 60.0))
                self.last_error = str(e)
                if erased_at is not None and self._erased_at is None:
                    self._erased_at = erased_at  # still to do
                await asyncio.sleep(min(self.interval_s, 60.0))
                self._dirty.set()
                continue
            self.last_error = ""
            next_timer = time.monotonic() + self.interval_s

    def _nodes(self) -> list:
        """The servers whose files to rewrite: one Redis, or every primary of a cluster (``None``: the one)."""
        from analysis_server.redis_batch import is_cluster

        return self.redis.get_primaries() if is_cluster(self.redis) else [None]

    def _on(self, node) -> dict:
        return {} if node is None else {"target_nodes": node}

    async def compact(self) -> None:
        """Rewrite the AOF (if on) and save the RDB snapshot, one after the other, each waited for, on
        every server (each primary of a cluster in turn); :class:`CompactionFailed` if Redis refuses or
        a child fails."""
        for node in self._nodes():
            on = self._on(node)
            info = await self.redis.info("persistence", **on)
            if int(info.get("aof_enabled", 0)):
                await self._run_child(lambda: self.redis.bgrewriteaof(**on), node, "aof_rewrite_in_progress",
                                      "aof_last_bgrewrite_status", "BGREWRITEAOF")
            await self._run_child(lambda: self.redis.bgsave(**on), node, "rdb_bgsave_in_progress",
                                  "rdb_last_bgsave_status", "BGSAVE")
        self.compactions += 1
        self.last_done = time.time()
        log.info("Redis files rewritten (compaction %d)", self.compactions)

    async def _idle(self, node, deadline: float) -> dict:
        """Wait until Redis runs no rewrite or save (another replica's, or Redis's own); its persistence info."""
        while True:
            info = await self.redis.info("persistence", **self._on(node))
            busy = (int(info.get("aof_rewrite_in_progress", 0)) or int(info.get("aof_rewrite_scheduled", 0))
                    or int(info.get("rdb_bgsave_in_progress", 0)))
            if not busy:
                return info
            if time.monotonic() > deadline:
                raise CompactionFailed("Redis stayed busy with a rewrite or save for "
                                       f"{BUSY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(POLL_S)

    async def _run_child(self, command, node, running: str, status: str, name: str) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            await self._idle(node, deadline)
            try:
                await command()
                break
            except ResponseError as e:
                if "in progress" not in str(e) or time.monotonic() > deadline:  # another one started meanwhile
                    raise CompactionFailed(f"Redis refused {name}: {e}") from None
        await asyncio.sleep(POLL_S)
        info = await self._idle(node, deadline)
        if info.get(status) not in ("ok", b"ok"):
            raise CompactionFailed(f"{name} failed ({status}: {info.get(status)}); see Redis's log")
