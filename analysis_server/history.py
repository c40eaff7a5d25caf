"""The retrospective search index: approximate nearest neighbours over every stored observation.

"Where was this person this week?" over ten million faces cannot read every record (the exact scan
reads ~130 bytes and decodes a base layer per face). :class:`HistoryIndex` keeps, per stored face,
a 16-byte product-quantization code of its feature in a FAISS inverted-file index (``IndexIVFPQ``,
1,024 lists, codes of the features rather than of their residuals),
its 8-byte face hash, capture time and camera: about 40 bytes a face, one partition per UTC day.
A query probes as many lists of every day its time window touches as ``FACESERVER_HISTORY_SCAN_CODES``
codes allow (all of a short window or a small store; at least ``FACESERVER_HISTORY_NPROBE``), with an
exact filter on time and camera inside FAISS (``IDSelectorBitmap``) where the
window or the cameras do not cover a whole day; the candidates are then read from Redis, their base
layers decoded and ranked by exact distance (:class:`History`), so a face that is gone (erased,
expired) or outside the filter is never answered whatever the index still holds. IVF-PQ won
against IVF-SQ and HNSW on memory at equal recall (``python -m bench.history compare``).

The coarse quantizer and the codebooks are trained once on features drawn from the base-layer
model's own distribution (its mean, PCA basis and scales), not on stored faces: the index needs no
data to start, and what it was trained on is not biometric (cached on disk as ``trained-*.faiss``).

:class:`History` follows the store's change log (``p:log:{k}``: every face stored and erased, by
any replica), persists the index to ``FACESERVER_DATA_DIR/history`` (one file per day and a
manifest with the log position it holds; sealed with ``FACESERVER_STORAGE_KEY`` when set: the
codes are an approximation of each face's feature) and, after a restart, reads only the log since
that position. Files holding an erased or expired face are rewritten within
``FACESERVER_COMPACT_AFTER_ERASE_S`` of the change reaching this replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis_server import features

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
REMOVED_CAMERA = 0xFFFF
KIND = "faiss-ivf-pq"
EXACT = "exact-scan"
FORMAT = 1


@dataclass(frozen=True)
class Candidate:
    """A face the index found near a probe: its hash, capture ms, camera and approximate distance."""

    h: bytes
    capture_ms: int
    camera_id: str
    distance: float


_templates: dict[tuple, bytes] = {}  # trained templates of this process (servers of one process train once)
_templates_lock = threading.Lock()


def train_template(dim: int, nlist: int, pq_bytes: int, seed: int = 0):
    """An empty, trained ``IndexIVFPQ`` (L2) fitted to features drawn from the default base-layer
    model's distribution (32 points per list, at least 10,240 for the codebooks)."""
    import faiss

    key = (dim, nlist, pq_bytes, seed, features.model_name())
    with _templates_lock:
        if key not in _templates:
            _templates[key] = faiss.serialize_index(_train(dim, nlist, pq_bytes, seed)).tobytes()
        return faiss.deserialize_index(np.frombuffer(_templates[key], np.uint8))


def _train(dim: int, nlist: int, pq_bytes: int, seed: int):
    import faiss

    from facecodec import base_layer

    model = base_layer.load_model(features.model_name())
    rng = np.random.default_rng(seed)
    n = max(32 * nlist, 256 * 40)
    sample = model.sample(n, rng)
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, nlist, pq_bytes, 8)
    # Codes of the features themselves, not of their residuals to the list's centre: one distance
    # table per query and day instead of one per list probed (a small day is searched whole for
    # the cost of reading its codes), at the same recall once re-ranked (bench.history compare).
    index.by_residual = False
    # A smooth distribution needs no fine k-means: 32 points per list and 10 rounds (about 10 s for
    # 1,024 lists on one core), cached in the data folder.
    index.cp.seed, index.cp.niter, index.cp.min_points_per_centroid = seed, 10, 16
    index.pq.cp.seed, index.pq.cp.niter = seed, 10
    index.train(np.ascontiguousarray(sample[:, :dim]))
    return index


class _Partition:
    """One UTC day: a copy of the trained index and, per row (its FAISS id), hash, time and camera."""

    __slots__ = ("index", "h", "toff", "cam", "n", "dirty", "live")

    def __init__(self, index, h=None, toff=None, cam=None, n: int = 0):
        self.index = index
        self.h = h if h is not None else np.zeros(0, np.uint64)
        self.toff = toff if toff is not None else np.zeros(0, np.int32)
        self.cam = cam if cam is not None else np.zeros(0, np.uint16)
        self.n = n
        self.dirty = True
        self.live = int(index.ntotal)

    def grow(self, m: int) -> None:
        if self.n + m > len(self.h):
            cap = max(1024, self.n + m, int(len(self.h) * 1.5))
            for name in ("h", "toff", "cam"):
                old = getattr(self, name)
                new = np.zeros(cap, old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)

    def compact(self) -> None:
        """Drop the removed rows: the live ones are renumbered 0..live-1 in the row arrays and in the
        FAISS lists' ids (codes untouched). A day's partition keeps a row for every face added that day
        until the whole day expires; with a retention shorter than a day most of them are removed rows."""
        import faiss

        keep = np.flatnonzero(self.cam[: self.n] != REMOVED_CAMERA)
        renumber = np.full(self.n, -1, np.int64)
        renumber[keep] = np.arange(len(keep))
        ivf = faiss.extract_index_ivf(self.index)
        lists = ivf.invlists
        for k in range(ivf.nlist):
            size = lists.list_size(k)
            if size:
                ids = renumber[faiss.rev_swig_ptr(lists.get_ids(k), size)]
                if (ids < 0).any():
                    raise RuntimeError("search index: a removed row is still in the FAISS lists")
                codes = faiss.rev_swig_ptr(lists.get_codes(k), size * lists.code_size).copy()
                lists.update_entries(k, 0, size, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
        self.h, self.toff, self.cam = self.h[keep], self.toff[keep], self.cam[keep]  # copies, live rows only
        self.n = len(keep)
        self.dirty = True

    def nbytes(self) -> int:
        """Memory of the codes, ids and row arrays (FAISS's lists counted at their size)."""
        import faiss

        ivf = faiss.extract_index_ivf(self.index)
        return int(ivf.ntotal) * (ivf.code_size + 8) + self.h.nbytes + self.toff.nbytes + self.cam.nbytes


class HistoryIndex:
    """Partitions of an IVF-PQ index by day, with exact time and camera filters; thread-safe."""

    COMPACT_ROWS = 1 << 16  # a partition is compacted once it has this many rows and half are removed

    def __init__(self, template, nprobe: int = 64, scan_codes: int = 2_000_000):
        import faiss

        self.template = template  # None: read-only (loaded from files; see read_files)
        self.dim = template.d if template is not None else features.dim()
        self.nlist = faiss.extract_index_ivf(template).nlist if template is not None else 0
        self.nprobe = nprobe
        self.scan_codes = scan_codes
        self.parts: dict[int, _Partition] = {}
        self.cameras: list[str] = []
        self._camera_no: dict[str, int] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return sum(p.live for p in self.parts.values())

    def _camera(self, camera_id: str) -> int:
        no = self._camera_no.get(camera_id)
        if no is None:
            if len(self.cameras) >= REMOVED_CAMERA:
                raise ValueError("more than 65,534 cameras in the search index")
            no = self._camera_no[camera_id] = len(self.cameras)
            self.cameras.append(camera_id)
        return no

    def _part(self, day: int) -> _Partition:
        import faiss

        p = self.parts.get(day)
        if p is None:
            p = self.parts[day] = _Partition(faiss.clone_index(self.template))
        return p

    # -- changes -----------------------------------------------------------------------------
    def add(self, hashes: list[bytes], times: list[int], cameras: list[str], features: np.ndarray) -> None:
        """Add faces (a face added twice has two rows; :meth:`search` answers it once)."""
        if not hashes:
            return
        x = np.ascontiguousarray(features, np.float32).reshape(len(hashes), self.dim)
        t = np.asarray(times, np.int64)
        days = t // DAY_MS
        with self._lock:
            cams = np.asarray([self._camera(c) for c in cameras], np.uint16)
            hs = np.frombuffer(b"".join(hashes), np.uint64)
            for day in np.unique(days).tolist():
                sel = np.nonzero(days == day)[0]
                p = self._part(day)
                p.grow(len(sel))
                rows = np.arange(p.n, p.n + len(sel), dtype=np.int64)
                p.h[p.n: p.n + len(sel)] = hs[sel]
                p.toff[p.n: p.n + len(sel)] = (t[sel] - day * DAY_MS).astype(np.int32)
                p.cam[p.n: p.n + len(sel)] = cams[sel]
                p.n += len(sel)
                p.index.add_with_ids(x[sel], rows)
                p.live += len(sel)
                p.dirty = True

    def _drop_rows(self, p: _Partition, rows: np.ndarray) -> int:
        import faiss

        if not len(rows):
            return 0
        removed = int(p.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(rows, np.int64))))
        p.h[rows] = 0  # nothing of the face is kept: not even its hash
        p.cam[rows] = REMOVED_CAMERA
        p.live -= removed
        p.dirty = True
        return removed

    def remove(self, items: list[tuple[bytes, int]]) -> int:
        """Remove faces by (hash, capture ms); every row of each. Returns the rows removed."""
        removed = 0
        with self._lock:
            by_day: dict[int, list[int]] = {}
            for h, t in items:
                by_day.setdefault(t // DAY_MS, []).append(int(np.frombuffer(h, np.uint64)[0]))
            for day, hs in by_day.items():
                p = self.parts.get(day)
                if p is None:
                    continue
                rows = np.nonzero(np.isin(p.h[: p.n], np.asarray(hs, np.uint64)) & (p.cam[: p.n] != REMOVED_CAMERA))[0]
                removed += self._drop_rows(p, rows)
        return removed

    def expire(self, cutoff_ms: int) -> int:
        """Remove every face captured before ``cutoff_ms``; returns the rows removed."""
        removed = 0
        with self._lock:
            for day in sorted(self.parts):
                p = self.parts[day]
                if (day + 1) * DAY_MS <= cutoff_ms:
                    removed += p.live
                    del self.parts[day]
                elif day * DAY_MS < cutoff_ms:
                    rows = np.nonzero((p.toff[: p.n] < cutoff_ms - day * DAY_MS) & (p.cam[: p.n] != REMOVED_CAMERA))[0]
                    removed += self._drop_rows(p, rows)
            for p in self.parts.values():
                if p.n >= self.COMPACT_ROWS and p.live < p.n // 2:
                    p.compact()
        return removed

    # -- queries -----------------------------------------------------------------------------
    def search(self, probes: np.ndarray, k: int, since_ms: int | None = None, until_ms: int | None = None,
               camera_ids: list[str] | None = None) -> list[Candidate]:
        """About the ``k`` nearest faces to any probe row within the time window and cameras, nearest
        first (approximate distances: re-rank them exactly)."""
        import faiss

        q = np.ascontiguousarray(np.atleast_2d(probes), np.float32)
        lo = -(2**62) if since_ms is None else since_ms
        hi = 2**62 if until_ms is None else until_ms
        best: dict[int, tuple[float, int, int, int]] = {}  # hash -> (distance^2, day, toff, camera no)
        with self._lock:
            cams = None
            if camera_ids is not None:
                cams = np.asarray([self._camera_no[c] for c in camera_ids if c in self._camera_no], np.uint16)
                if not len(cams):
                    return []
            days = [d for d in sorted(self.parts) if self.parts[d].live and (d + 1) * DAY_MS - 1 >= lo
                    and d * DAY_MS <= hi]
            # As many lists as ``scan_codes`` codes allow over the days of the window (at least
            # ``nprobe``): a short window or a small store is searched whole, a long one in part.
            rows = sum(self.parts[d].live for d in days)
            nprobe = min(self.nlist, max(self.nprobe, math.ceil(self.scan_codes * self.nlist / max(rows, 1))))
            for day in days:
                p = self.parts[day]
                start, end = day * DAY_MS, (day + 1) * DAY_MS - 1
                params = faiss.SearchParametersIVF(nprobe=nprobe)
                bitmap = None
                if start < lo or end > hi or cams is not None:
                    mask = p.cam[: p.n] != REMOVED_CAMERA
                    if start < lo:
                        mask &= p.toff[: p.n] >= lo - start
                    if end > hi:
                        mask &= p.toff[: p.n] <= hi - start
                    if cams is not None:
                        mask &= np.isin(p.cam[: p.n], cams)
                    if not mask.any():
                        continue
                    bitmap = np.packbits(mask, bitorder="little")
                    sel = faiss.IDSelectorBitmap(p.n, faiss.swig_ptr(bitmap))
                    params = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)
                d2, rows = p.index.search(q, min(k, p.live), params=params)
                for dr, rr in zip(d2, rows):
                    for d, r in zip(dr.tolist(), rr.tolist()):
                        if r < 0:
                            continue
                        h = int(p.h[r])
                        cur = best.get(h)
                        if cur is None or d < cur[0]:
                            best[h] = (d, day, int(p.toff[r]), int(p.cam[r]))
                del bitmap
            ranked = sorted(best.items(), key=lambda kv: kv[1][0])[:k]
            return [Candidate(int(h).to_bytes(8, "little"), day * DAY_MS + toff, self.cameras[c],
                              math.sqrt(max(d, 0.0))) for h, (d, day, toff, c) in ranked]

    def nbytes(self) -> int:
        with self._lock:
            return sum(p.nbytes() for p in self.parts.values())

    def rows(self) -> int:
        """Rows of every partition, removed ones included (they keep their place until the day expires)."""
        with self._lock:
            return sum(p.n for p in self.parts.values())

    def codes_of(self, h: bytes) -> list[bytes]:
        """The PQ codes the index holds for a face (what its files hold of it: the privacy checks look
        for them there)."""
        import faiss

        key = np.frombuffer(h, np.uint64)[0]
        out = []
        with self._lock:
            for p in self.parts.values():
                rows = set(np.nonzero(p.h[: p.n] == key)[0].tolist())
                if not rows:
                    continue
                ivf = faiss.extract_index_ivf(p.index)
                inv = ivf.invlists
                for lst in range(ivf.nlist):
                    size = inv.list_size(lst)
                    if not size:
                        continue
                    ids = faiss.rev_swig_ptr(inv.get_ids(lst), size)
                    hit = [i for i, r in enumerate(ids.tolist()) if r in rows]
                    if hit:
                        codes = faiss.rev_swig_ptr(inv.get_codes(lst), size * ivf.code_size)
                        out += [bytes(codes[i * ivf.code_size:(i + 1) * ivf.code_size]) for i in hit]
        return out

    # -- files -------------------------------------------------------------------------------
    def dump_partition(self, day: int) -> bytes:
        """One day as bytes: its FAISS index and row arrays (what :meth:`load_partition` reads)."""
        import faiss

        with self._lock:
            p = self.parts[day]
            blob = faiss.serialize_index(p.index).tobytes()
            buf = io.BytesIO()
            np.savez(buf, h=p.h[: p.n], toff=p.toff[: p.n], cam=p.cam[: p.n])
            p.dirty = False
        arrays = buf.getvalue()
        return len(blob).to_bytes(8, "little") + blob + arrays

    def load_partition(self, day: int, data: bytes) -> None:
        import faiss

        n = int.from_bytes(data[:8], "little")
        index = faiss.deserialize_index(np.frombuffer(data[8: 8 + n], np.uint8))
        arrays = np.load(io.BytesIO(data[8 + n:]))
        p = _Partition(index, arrays["h"].copy(), arrays["toff"].copy(), arrays["cam"].copy(), len(arrays["h"]))
        p.dirty = False
        with self._lock:
            self.parts[day] = p


def read_files(folder: Path, prefix: str, sealer=None) -> HistoryIndex:
    """The index a replica saved in ``folder`` (``FACESERVER_DATA_DIR/history/<prefix>``), read-only:
    what its files hold (``python -m bench.reliability privacy`` looks for erased faces' codes there)."""
    from analysis_server.at_rest import Sealer

    sealer = sealer or Sealer(None)
    manifest = json.loads((folder / "manifest.json").read_text())
    index = HistoryIndex(None)
    for day, name in manifest["days"].items():
        data = sealer.open((folder / name).read_bytes(), f"history:{prefix}:{name}".encode())
        index.load_partition(int(day), data)
    index.cameras = list(manifest["cameras"])
    return index


class History:
    """The search index of one server replica, kept in step with the store's change log and on disk.

    Faces this replica stores are added from the features it decoded at ingest; faces another
    replica stores are read from Redis (base layer decoded). Until the index has caught up with
    the log after a start, :attr:`ready` is unset and searches use the exact scan.
    """

    POLL_S = 0.2
    READ = 256  # log entries (batches) read per shard and round trip

    def __init__(self, store, folder: Path | None, nlist: int = 1024, pq_bytes: int = 16, nprobe: int = 64,
                 scan_codes: int = 2_000_000, rerank: int = 512, snapshot_s: float = 300.0,
                 after_erase_s: float = 60.0, sealer=None):
        self.store = store
        self.folder = folder
        self.nlist, self.pq_bytes, self.nprobe = nlist, pq_bytes, nprobe
        self.scan_codes, self.rerank = scan_codes, rerank
        self.snapshot_s, self.after_erase_s = snapshot_s, after_erase_s
        self.sealer = sealer
        self.index: HistoryIndex | None = None
        self.positions: dict[int, str] = {}
        self.ready = asyncio.Event()
        # faces this replica stored, until the log reader reaches their entries: hash -> (note number,
        # capture ms, camera, feature); see note_stored and _forget_read
        self._pending: dict[bytes, tuple[int, int, str, np.ndarray]] = {}
        self._noted = 0
        self._erased_at: float | None = None  # monotonic time of the first removal not yet on disk
        self._lock_file = None
        self.files: Path | None = None  # the folder this replica writes (see _claim_folder)
        self.last_snapshot: float | None = None
        self.restart_s: float | None = None  # how long the last start took to serve (load + catch up)
        self.rows_read = 0  # faces read from Redis by this replica (other replicas' faces, a rebuild)
        self._catching_up = asyncio.Lock()

    @property
    def waiting(self) -> int:
        """Faces this replica stored whose change-log entry the index has not read yet."""
        return len(self._pending)

    # -- feeding -----------------------------------------------------------------------------
    def note_stored(self, items: list[tuple[bytes, int, str, np.ndarray]]) -> None:
        """Faces this replica stored: when the log reader reaches their entries it need not read them back.

        Their entries are already written (a batch is noted after Redis answered), so the reader may
        have read them first: :meth:`catch_up` forgets such notes once a pass has read the log to its
        end. Each feature is copied: a row of a batch's array would keep the whole array alive."""
        for h, t, camera, feature in items:
            self._noted += 1
            self._pending[h] = (self._noted, t, camera, np.array(feature, np.float32))
        if len(self._pending) > 200_000:  # the log reader is far behind: it will read them from Redis
            for h in list(self._pending)[: len(self._pending) - 100_000]:
                del self._pending[h]

    def _forget_read(self, mark: int) -> None:
        """Drop the notes numbered up to ``mark``, taken before a pass that read the log to its end:
        every such face's entry has been read, so nothing would ever take them (notes are in order)."""
        stale = []
        for h, (number, *_) in self._pending.items():
            if number > mark:
                break
            stale.append(h)
        for h in stale:
            del self._pending[h]

    async def _apply(self, entries: list[tuple[str, bytes]]) -> None:
        """Apply log entries in order: runs of additions, then of removals (a face's removal is logged
        after its addition, in the same shard)."""
        run: list[tuple[str, bytes]] = []
        for kind, value in entries:
            if run and run[-1][0] != kind:
                await self._apply_run(run)
                run = []
            run.append((kind, value))
        if run:
            await self._apply_run(run)

    async def _apply_run(self, entries: list[tuple[str, bytes]]) -> None:
        blob = b"".join(v for _, v in entries)
        if entries[0][0] == "e":
            erases = [(blob[i:i + 8], int.from_bytes(blob[i + 8:i + 16], "little")) for i in range(0, len(blob), 16)]
            await asyncio.to_thread(self.index.remove, erases)
            self._removed()
            return
        adds = [blob[i:i + 8] for i in range(0, len(blob), 8)]
        hs, ts, cams, feats, todo, todo_meta = [], [], [], [], [], []
        if not self.store.cluster:
            # One Redis: a face's record and its log entry were written by one script, and its erasure
            # is logged after it: this replica's own faces need no reading back.
            rest = []
            for h in adds:
                mine = self._pending.pop(h, None)
                if mine is None:
                    rest.append(h)
                else:
                    hs.append(h), ts.append(mine[1]), cams.append(mine[2]), feats.append(mine[3])
            adds = rest
        if adds:
            # On a cluster a face's entry may be written after its erasure (two round trips): every
            # face is read, and one erased meanwhile is not indexed.
            known = {h: self._pending.pop(h) for h in adds if h in self._pending}
            values = await self.store.values(adds)
            from analysis_server import records as rec
            from analysis_server.store import seal_context

            for h, v in zip(adds, values):
                if v is None or v[0] != rec.RECORD:
                    continue  # erased or expired before it was read: never indexed
                r = rec.unpack_record(v)
                if h in known:
                    hs.append(h), ts.append(r.capture_ms), cams.append(r.camera_id), feats.append(known[h][3])
                else:
                    todo.append(self.store.sealer.open(r.base, seal_context(r.face_id, "base")))
                    todo_meta.append((h, r.capture_ms, r.camera_id))
        if todo:
            from facecodec import base_layer

            self.rows_read += len(todo)
            for (h, t, c), d in zip(todo_meta, await asyncio.to_thread(base_layer.decode_many, todo)):
                if not isinstance(d, Exception):
                    hs.append(h), ts.append(t), cams.append(c), feats.append(d.feature)
        if hs:
            await asyncio.to_thread(self.index.add, hs, ts, cams, np.stack(feats))

    def _removed(self) -> None:
        if self._erased_at is None:
            self._erased_at = time.monotonic()

    async def catch_up(self) -> int:
        """Apply every change-log entry after :attr:`positions`; returns how many were applied. A search
        calls it first, so it sees every face stored before it, by any replica (one read when idle)."""
        async with self._catching_up:
            mark = self._noted
            n = await self._catch_up()
            self._forget_read(mark)
            return n

    async def _catch_up(self) -> int:
        n = 0
        while True:
            got = await self.store.read_log(self.positions, self.READ)
            if not got:
                return n
            entries = [e for _, _, items in got for e in items]
            await self._apply(entries)
            for shard, last, _ in got:
                self.positions[shard] = last
            n += len(entries)

    # -- running -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load (or train) the index, read the log since its position; :attr:`ready` once caught up."""
        import faiss

        faiss.omp_set_num_threads(1)  # per-query work is small: threads only contend (FACESERVER_BLAS_THREADS)
        t0 = time.monotonic()
        if self.folder is not None:
            self.files = await asyncio.to_thread(self._claim_folder)
        template = await asyncio.to_thread(self._template)
        self.index = HistoryIndex(template, self.nprobe, self.scan_codes)
        loaded = await asyncio.to_thread(self._load) if self.files is not None else False
        if not loaded:
            self.positions = {}
            log.info("search index: reading every stored face from the change log (no usable snapshot)")
        n = await self.catch_up()
        await asyncio.to_thread(self.index.expire, self._cutoff())
        self.restart_s = time.monotonic() - t0
        self.ready.set()
        log.info("search index ready: %d faces (%d log entries read) in %.1f s", len(self.index), n, self.restart_s)

    async def expire(self) -> int:
        """Remove the faces past retention (by this replica's clock); their files are rewritten soon after."""
        removed = await asyncio.to_thread(self.index.expire, self._cutoff())
        if removed:
            self._removed()
        return removed

    def _cutoff(self) -> int:
        from analysis_server.store import now_ms

        return now_ms() - self.store.retention_ms

    async def run(self, expire_every_s: float = 60.0) -> None:
        """Forever: follow the log, expire old faces, write the files when due."""
        if not self.ready.is_set():
            await self.start()
        next_expire = next_save = time.monotonic()
        next_save += self.snapshot_s
        while True:
            try:
                n = await self.catch_up()
                now = time.monotonic()
                if now >= next_expire:
                    await self.expire()
                    next_expire = now + expire_every_s
                due = self._erased_at is not None and now >= self._erased_at + self.after_erase_s
                if self.files is not None and (due or now >= next_save):
                    await self.save()
                    next_save = time.monotonic() + self.snapshot_s
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away, a bad entry: tried again
                log.warning("search index: %r", e)
                n = 0
                await asyncio.sleep(1.0)
            if not n:
                await asyncio.sleep(self.POLL_S)

    async def save(self) -> None:
        """Write the changed days and the manifest (with the log position they hold)."""
        if self.files is None or self.index is None:
            return
        erased_at = self._erased_at
        self._erased_at = None
        try:
            await asyncio.to_thread(self._save, dict(self.positions))
        except Exception:
            self._erased_at = erased_at
            raise
        self.last_snapshot = time.time()

    # -- files -------------------------------------------------------------------------------
    def _claim_folder(self) -> Path:
        """This replica's folder: the first of ``history/<prefix>``, ``history/<prefix>.1``... that no
        other process holds (replicas may share a data folder)."""
        import fcntl

        base = self.folder
        base.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for i in range(64):
            folder = base if i == 0 else base.with_name(f"{base.name}.{i}")
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
            f = os.fdopen(os.open(folder / "lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            self._lock_file = f
            return folder
        raise RuntimeError(f"no free search-index folder beside {base}")

    def _params(self) -> dict:
        return {"format": FORMAT, "dim": features.dim(), "nlist": self.nlist, "pq_bytes": self.pq_bytes,
                "by_residual": False, "trained_on": features.model_name()}

    def _template(self):
        import faiss

        params = self._params()
        name = "trained-{nlist}-pq{pq_bytes}-raw-{trained_on}.faiss".format(**params)
        path = (self.files or self.folder or Path(".")).parent / name if self.files else None
        if path is not None and path.exists():
            with contextlib.suppress(Exception):
                return faiss.read_index(str(path))
        t0 = time.monotonic()
        template = train_template(params["dim"], self.nlist, self.pq_bytes)
        log.info("search index trained (%d lists, %d-byte codes) in %.1f s", self.nlist, self.pq_bytes,
                 time.monotonic() - t0)
        if path is not None:
            tmp = path.with_suffix(".tmp")
            faiss.write_index(template, str(tmp))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        return template

    def _seal(self, data: bytes, name: str) -> bytes:
        if self.sealer is None or not self.sealer.enabled:
            return data
        return self.sealer.seal(data, f"history:{self.store.keys.prefix}:{name}".encode())

    def _open(self, data: bytes, name: str) -> bytes:
        if self.sealer is None:
            from analysis_server.at_rest import Sealer

            return Sealer(None).open(data, f"history:{self.store.keys.prefix}:{name}".encode())
        return self.sealer.open(data, f"history:{self.store.keys.prefix}:{name}".encode())

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _save(self, positions: dict[int, str]) -> None:
        folder = self.files
        manifest_path = folder / "manifest.json"
        old = {}
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(manifest_path.read_text())
        generation = int(old.get("generation", 0)) + 1
        days = {}
        written = []
        with self.index._lock:
            dirty = {d: p.dirty for d, p in self.index.parts.items()}
            cameras = list(self.index.cameras)
        old_days = old.get("days", {}) if old.get("params") == self._params() else {}
        for day, is_dirty in sorted(dirty.items()):
            name = old_days.get(str(day))
            if is_dirty or name is None or not (folder / name).exists():
                name = f"day-{day}-{generation}.bin"
                self._write(folder / name, self._seal(self.index.dump_partition(day), name))
                written.append(name)
            days[str(day)] = name
        manifest = {"params": self._params(), "generation": generation, "positions": {str(k): v for k, v in
                                                                                       positions.items()},
                    "days": days, "cameras": cameras, "prefix": self.store.keys.prefix}
        self._write(manifest_path, json.dumps(manifest).encode())
        keep = set(days.values()) | {"manifest.json", "lock"}
        for f in folder.iterdir():  # days rewritten or dropped: their old files go
            if f.is_file() and f.name not in keep:
                f.unlink()

    def _load(self) -> bool:
        folder = self.files
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            return False
        if manifest.get("params") != self._params() or manifest.get("prefix") != self.store.keys.prefix:
            log.info("search index files in %s are of other parameters: rebuilt from the change log", folder)
            return False
        try:
            for day, name in manifest["days"].items():
                self.index.load_partition(int(day), self._open((folder / name).read_bytes(), name))
        except Exception as e:
            log.warning("search index files in %s cannot be read (%r): rebuilt from the change log", folder, e)
            self.index.parts.clear()
            return False
        self.index.cameras = list(manifest["cameras"])
        self.index._camera_no = {c: i for i, c in enumerate(self.index.cameras)}
        self.positions = {int(k): v for k, v in manifest["positions"].items()}
        return True

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
